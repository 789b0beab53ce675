// Command hot calls a small non-leaf function in a loop and prints, for each batch of calls, the
// average time per call: `ns_per_call <float>`. `cargo xtask bench` traces main.hot while this
// runs and compares the numbers.
package main

import (
	"fmt"
	"os"
	"time"
)

const batch = 200_000

// hot is what the benchmark traces. It calls mix, so it is not a leaf: its prologue has the
// stack-bound check (CMPQ SP, 16(R14); JLS) where escapade puts its entry probe.
//
//go:noinline
func hot(a, b int) int {
	return mix(a, b) + 1
}

//go:noinline
func mix(a, b int) int {
	return a*31 ^ b
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	sum := 0
	for {
		start := time.Now()
		for i := 0; i < batch; i++ {
			sum = hot(i, sum)
		}
		elapsed := time.Since(start)
		fmt.Printf("ns_per_call %.2f\n", float64(elapsed.Nanoseconds())/batch)
		if sum == 42 {
			fmt.Println() // keep sum alive
		}
	}
}
