// allocs allocates a known mix of heap objects in main.phase and prints how many objects the
// runtime itself counted for that phase (runtime.MemStats.Mallocs), so a test can compare
// escapade's exact count with it.
//
// It prints "ready <pid>", waits for a line on stdin, runs the phase, prints "mallocs <n>",
// starts 37 goroutines running main.worker from main.spawn and prints "goroutines 37" and
// "starting-stack <bytes>" (runtime/metrics' /gc/stack/starting-size:bytes), starts 5
// goroutines of main.deep whose recursion grows their stacks past 64 KiB and prints "deep 5";
// forces 3 collections, printing after each "gc <NumGC> pause <PauseNs> live <bytes>" (live
// from runtime/metrics' /gc/heap/live:bytes), and prints "gcs <n>", the GC cycles completed
// since it began, then waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
)

type node struct {
	next  *node
	value int
}

var sink []any

//go:noinline
func newNodes(n int) {
	var head *node
	for i := 0; i < n; i++ {
		head = &node{next: head, value: i} // 16 bytes with a pointer: a small scan object
	}
	sink = append(sink, head)
}

//go:noinline
func tinyBuffers(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, make([]byte, 8)) // tiny noscan objects
	}
}

//go:noinline
func bigBuffers(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, make([]byte, 64<<10)) // large objects
	}
}

//go:noinline
func strs(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, strconv.Itoa(i)+"-suffix") // string concatenation
	}
}

// buffer is small enough to be inlined into its caller: its allocation has no frame of its own.
func buffer(n int) []byte { return make([]byte, n) }

//go:noinline
func inlinedBuffers(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, buffer(48+i%8))
	}
}

//go:noinline
func phase() {
	inlinedBuffers(30)
	newNodes(1000)
	tinyBuffers(2000)
	bigBuffers(50)
	strs(500)
}

var workers sync.WaitGroup

// Without arguments, so that the go statement runs it directly rather than through a
// compiler-made wrapper (main.spawn.gowrap1).
//
//go:noinline
func worker() { workers.Done() }

//go:noinline
func spawn(n int) {
	for i := 0; i < n; i++ {
		workers.Add(1)
		go worker()
	}
	workers.Wait()
}

// Each frame holds 1 KiB, so 64 levels need more than 64 KiB of stack.
//
//go:noinline
func deep(n int) byte {
	var frame [1024]byte
	frame[n%1024] = byte(n)
	if n == 0 {
		return frame[0]
	}
	return deep(n-1) + frame[n%1024]
}

//go:noinline
func spawnDeep(n int) {
	for i := 0; i < n; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			deep(64)
		}()
	}
	workers.Wait()
}

func metric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	var start runtime.MemStats
	runtime.ReadMemStats(&start)
	sink = make([]any, 0, 10000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	phase()
	runtime.ReadMemStats(&after)
	fmt.Printf("mallocs %d\n", after.Mallocs-before.Mallocs)
	spawn(37)
	fmt.Println("goroutines 37")
	fmt.Printf("starting-stack %d\n", metric("/gc/stack/starting-size:bytes"))
	spawnDeep(5)
	fmt.Println("deep 5")
	for i := 0; i < 3; i++ {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Printf("gc %d pause %d live %d\n", m.NumGC, m.PauseNs[(m.NumGC+255)%256], metric("/gc/heap/live:bytes"))
	}
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	fmt.Printf("gcs %d\n", end.NumGC-start.NumGC)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	runtime.KeepAlive(sink)
}
