// record does a known amount of work for the recording tests and prints how much: it calls
// main.add 300 times on the main goroutine, starts 25 goroutines running main.worker, allocates
// 400 buffers of 4 KiB in main.fill through main.buffer (which the compiler inlines into fill),
// and forces 2 collections.
//
// It prints "ready <pid>", waits for a line on stdin, works, prints "sum <n>" and "gcs <n>" (the
// GC cycles completed since it began), then waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

var (
	keep  [][]byte
	total atomic.Int64
)

//go:noinline
func add(a, b int) int { return a + b }

// Small enough to be inlined: its allocation's stack has an address in fill whose frames are
// buffer, then fill.
func buffer(n int) []byte { return make([]byte, n) }

//go:noinline
func fill(n int) {
	for i := 0; i < n; i++ {
		keep = append(keep, buffer(4096))
	}
}

//go:noinline
func worker(i int, wg *sync.WaitGroup) {
	defer wg.Done()
	total.Add(int64(i))
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	var start, end runtime.MemStats
	runtime.ReadMemStats(&start)
	keep = make([][]byte, 0, 400)
	s := 0
	for i := 0; i < 300; i++ {
		s = add(s, i)
	}
	var wg sync.WaitGroup
	for i := 0; i < 25; i++ {
		wg.Add(1)
		go worker(i, &wg)
	}
	wg.Wait()
	fill(400)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&end)
	fmt.Printf("sum %d\n", s)
	fmt.Printf("gcs %d\n", end.NumGC-start.NumGC)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	runtime.KeepAlive(keep)
}
