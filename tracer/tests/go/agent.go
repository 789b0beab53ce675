// A target for the agent tests: prints "ready <pid>", waits for a line on stdin, then calls
// main.work N times (argument 1), each call allocating one node on the heap, starts a few
// goroutines, runs two GC cycles, and prints what it did as the runtime counted it.
//
// With a second argument G, G goroutines alive at once make the N calls between them, print
// "holding G", and end only after another line on stdin.
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
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		panic(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if len(os.Args) > 2 {
		g, err := strconv.Atoi(os.Args[2])
		if err != nil {
			panic(err)
		}
		callers(n, g, in)
	} else {
		for i := 0; i < n; i++ {
			sink = work(i)
			// Keep the list short: only the allocations matter.
			if i%64 == 0 {
				sink = nil
			}
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

// callers makes n calls of work from g goroutines alive at once, which end once a line on
// stdin lets them: the kernel sees g goroutines that made traced calls.
func callers(n, g int, in *bufio.Reader) {
	var called, done sync.WaitGroup
	release := make(chan struct{})
	for w := 0; w < g; w++ {
		called.Add(1)
		done.Add(1)
		go func(w int) {
			defer done.Done()
			for i := w; i < n; i += g {
				work(i)
			}
			called.Done()
			<-release
		}(w)
	}
	called.Wait()
	fmt.Printf("holding %d\n", g)
	if _, err := in.ReadString('\n'); err != nil {
		panic(err)
	}
	close(release)
	done.Wait()
}
