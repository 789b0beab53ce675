// Command alloc allocates a small object on the heap in a loop and prints, for each batch, the
// average time per allocating call: `ns_per_call <float>`. `cargo xtask bench` counts its
// allocations (runtime.mallocgc) while this runs and compares the numbers.
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

const batch = 200_000

type item struct {
	a, b int
	next *item
}

var sink *item

// alloc returns a new heap object each call (it escapes through sink).
//
//go:noinline
func alloc(i int) *item {
	return &item{a: i, b: i * 2}
}

func main() {
	// Like any program that serves pprof, this one links the heap profiler, so its
	// allocations are sampled (every MemProfileRate bytes) and escapade's sampled mode works.
	runtime.MemProfile(nil, false)
	fmt.Printf("ready %d\n", os.Getpid())
	for {
		start := time.Now()
		for i := 0; i < batch; i++ {
			sink = alloc(i)
		}
		elapsed := time.Since(start)
		fmt.Printf("ns_per_call %.2f\n", float64(elapsed.Nanoseconds())/batch)
	}
}
