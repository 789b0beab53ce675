// A target for the agent tests: prints "ready <pid>", waits for a line on stdin, then calls
// main.work N times (argument 1), each call allocating one node on the heap, starts a few
// goroutines, runs two GC cycles, and prints what it did as the runtime counted it.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

type node struct {
	v    int
	next *node
}

var sink *node

//go:noinline
func work(i int) *node {
	return &node{v: i, next: sink}
}

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Printf("ready %d\n", os.Getpid())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		panic(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		sink = work(i)
		// Keep the list short: only the allocations matter.
		if i%64 == 0 {
			sink = nil
		}
	}
	runtime.ReadMemStats(&after)
	var wg sync.WaitGroup
	const workers = 3
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
		}()
	}
	wg.Wait()
	runtime.GC()
	runtime.GC()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	fmt.Printf("calls %d\n", n)
	fmt.Printf("mallocs %d\n", after.Mallocs-before.Mallocs)
	fmt.Printf("goroutines %d\n", workers)
	fmt.Printf("gcs %d\n", end.NumGC)
}
