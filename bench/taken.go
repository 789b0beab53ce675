// Command taken is hot.go with the hot function's address also taken: escapade then keeps
// probes on its RETs for the calls that reach it through the func value, and every call, the
// direct ones too, passes them. `cargo xtask bench` measures what `--returns sampled` and
// `--returns direct` save there.
package main

import (
	"fmt"
	"os"
	"time"
)

const batch = 200_000

//go:noinline
func hot(a, b int) int {
	return mix(a, b) + 1
}

//go:noinline
func mix(a, b int) int {
	return a*31 ^ b
}

// viaValue calls hot through a func value, as a handler table or an interface would.
var viaValue = hot

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
		// One call a batch through the value, so the RET probes are not there for nothing.
		sum = viaValue(sum, 1)
		if sum == 42 {
			fmt.Println() // keep sum alive
		}
	}
}
