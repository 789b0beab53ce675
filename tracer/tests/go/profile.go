// profile allocates objects that stay live (main.keepNodes) and objects that die
// (main.makeGarbage), collects garbage, and prints what the runtime's own heap profile
// (runtime.MemProfile) says for those two sites, so a test can compare escapade's sampled mode
// with it. It imports nothing that samples on its own; the test sets MemProfileRate to 1
// through escapade.
//
// main.boxStrings boxes strings into interfaces (runtime.convTstring). The runtime's own
// profile cannot say which allocations were the boxing: it drops the convTstring frame (it
// skips a fixed number of frames, and profilealloc is inlined into mallocgc).
//
// Run as `profile off`, it sets MemProfileRate to 0 first.
//
// It prints "ready <pid>" and waits for a line; then "site <function> alloc <n> free <n>" for
// each site, "boxed main.boxStrings <n>" and "done", and waits for a line; then "rate <MemProfileRate>" and waits for a
// line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

type node struct {
	next  *node
	value [6]int64
}

var kept []*node

//go:noinline
func keepNodes(n int) {
	for i := 0; i < n; i++ {
		kept = append(kept, &node{value: [6]int64{int64(i)}})
	}
}

var sink []byte

//go:noinline
func makeGarbage(n int) {
	for i := 0; i < n; i++ {
		sink = make([]byte, 64)
	}
}

var boxed []any

//go:noinline
func boxStrings(n int) {
	for i := 0; i < n; i++ {
		boxed = append(boxed, strconv.Itoa(1000+i))
	}
}

func main() {
	// With "off", the program turns heap profiling off as a program may, before escapade
	// attaches.
	if len(os.Args) > 1 && os.Args[1] == "off" {
		runtime.MemProfileRate = 0
	}
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	kept = make([]*node, 0, 1000)
	keepNodes(700)
	makeGarbage(900)
	boxed = make([]any, 0, 1000)
	boxStrings(400)
	sink = nil
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	records := make([]runtime.MemProfileRecord, 4096)
	n, ok := runtime.MemProfile(records, true)
	if !ok {
		panic("more profile records than expected")
	}
	for _, r := range records[:n] {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasPrefix(f.Function, "main.") {
				if f.Function == "main.keepNodes" || f.Function == "main.makeGarbage" {
					fmt.Printf("site %s alloc %d free %d\n", f.Function, r.AllocObjects, r.FreeObjects)
				}
				break
			}
			if !more {
				break
			}
		}
	}
	fmt.Println("boxed main.boxStrings 400")
	fmt.Println("done")
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	fmt.Printf("rate %d\n", runtime.MemProfileRate)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	runtime.KeepAlive(kept)
	runtime.KeepAlive(boxed)
}
