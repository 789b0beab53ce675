// Command alloc allocates a small object on the heap in a loop and prints, for each batch, the
// average time per allocating call: `ns_per_call <float>`. `cargo xtask bench` counts its
// allocations (runtime.mallocgc) while this runs and compares the numbers.
package main

import (
	"fmt"
	"os"
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
