// symbols has one function of each kind whose name the Go function table spells differently:
// a plain function, methods with pointer and value receivers, a closure, a generic
// instantiation, and a function the compiler inlines at its only call site.
package main

import (
	"fmt"
	"os"
)

type T struct{ n int }

//go:noinline
func (t *T) M(d int) int { t.n += d; return t.n }

//go:noinline
func (t T) V() int { return t.n * 2 }

//go:noinline
func Plain(a, b int) int { return a*b + 1 }

//go:noinline
func Max[E int | float64](a, b E) E {
	if a > b {
		return a
	}
	return b
}

// Small and leaf, so the compiler inlines it; its name survives only in the inline tree.
func alwaysInlined(x int) int { return x + 7 }

func main() {
	t := &T{n: len(os.Args)}
	add := func(x int) int { return x + t.n }
	// Calling the closure through a variable the compiler cannot see through keeps it a real function.
	calls := []func(int) int{add}
	fmt.Println(Plain(2, 3), t.M(1), t.V(), calls[0](4), Max(3, len(os.Args)), alwaysInlined(len(os.Args)))
}
