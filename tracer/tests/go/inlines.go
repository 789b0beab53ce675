// Inlined calls, for checking that the pclntab's inline trees are expanded as the runtime does:
// main.outer (never inlined) calls mid, which calls leaf, both inlined into outer; leaf calls
// sink, which is never inlined and records the stack. The program prints what
// runtime.CallersFrames makes of the return address into outer's body, one `frame <function>
// <line> <file>` line per frame, innermost first, then that return address as `pc 0x...`.
package main

import (
	"fmt"
	"runtime"
)

var (
	pcs [32]uintptr
	n   int
)

//go:noinline
func sink() {
	// Skip runtime.Callers itself: pcs[0] is in sink, pcs[1] the return address of the call
	// to sink, in outer's body, then one made-up pc for each inlined caller, which is how
	// CallersFrames learns of them.
	n = runtime.Callers(1, pcs[:])
}

func leaf() {
	sink()
}

func mid() {
	leaf()
}

//go:noinline
func outer() {
	mid()
}

func main() {
	outer()
	frames := runtime.CallersFrames(pcs[1:n])
	for {
		f, more := frames.Next()
		fmt.Printf("frame %s %d %s\n", f.Function, f.Line, f.File)
		if !more || f.Function == "main.outer" {
			break
		}
	}
	fmt.Printf("pc %#x\n", pcs[1])
}
