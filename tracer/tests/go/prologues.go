// Functions of every prologue shape the Go amd64 compiler emits, for tests/placement.rs.
// Frame sizes below count the saved frame pointer, as cmd/internal/obj/x86 does: the stack
// check is `CMP RSP` up to abi.StackSmall (128 bytes), `LEA R12` up to abi.StackBig (4096),
// and `MOV R12, RSP; SUB; JB` beyond.
package main

import (
	"fmt"
	"os"
)

//go:noinline
func sink(x int) int { return x ^ len(os.Args) }

//go:noinline
func fill(b []byte) int {
	for i := range b {
		b[i] = byte(i)
	}
	return int(b[len(b)-1])
}

// smallFrame calls out, so it is not a leaf, and keeps its frame well under 128 bytes.
//
//go:noinline
func smallFrame(a, b int) int { return sink(a+b) * 3 }

// largeFrame's 1 KiB array stays on the stack (fill does not let it escape).
//
//go:noinline
func largeFrame(n int) int {
	var buf [1024]byte
	return fill(buf[:n%len(buf)+1])
}

// hugeFrame's array exceeds abi.StackBig, so SP-framesize could wrap around.
//
//go:noinline
func hugeFrame(n int) int {
	var buf [8192]byte
	return fill(buf[:n%len(buf)+1])
}

// leafAdd calls nothing and has a tiny frame: the compiler marks it nosplit.
//
//go:noinline
func leafAdd(a, b int) int { return a*b + a }

type counter struct{ n int }

//go:noinline
func (c *counter) Add(d int) int {
	c.n += sink(d)
	return c.n
}

//go:noinline
func makeAdder(base int) func(int) int {
	return func(x int) int { return sink(base + x) }
}

type inner struct{ hits int }

//go:noinline
func (i *inner) Bump() { i.hits = sink(i.hits) }

// outer's promoted method wrapper (*outer).Bump may tail-call (*inner).Bump with a JMP.
type outer struct {
	pad int
	inner
}

type bumper interface{ Bump() }

//go:noinline
func bumpAll(bs ...bumper) {
	for _, b := range bs {
		b.Bump()
	}
}

type number interface{ ~int | ~float64 }

//go:noinline
func maxOf[T number](xs []T) T {
	m := xs[0]
	for _, x := range xs[1:] {
		if x > m {
			m = x
		}
	}
	sink(len(xs))
	return m
}

//go:noinline
func recurse(depth int) int {
	if depth == 0 {
		return sink(0)
	}
	return recurse(depth-1) + 1
}

// classify returns from four places; each exit block gets its own epilogue and RET.
//
//go:noinline
func classify(x int) string {
	if x < 0 {
		return "negative"
	}
	if x == 0 {
		sink(x)
		return "zero"
	}
	if x%2 == 0 {
		sink(x * 2)
		return "even"
	}
	sink(x * 3)
	return "odd"
}

func main() {
	c := &counter{}
	add := makeAdder(len(os.Args))
	total := smallFrame(1, 2) + largeFrame(3) + hugeFrame(4) + leafAdd(5, 6) + c.Add(7) +
		add(8) + maxOf([]int{9, 10}) + int(maxOf([]float64{1.5, 2.5})) + recurse(1000) +
		leafAdd(sink(11), 12)
	bumpAll(&outer{}, &inner{})
	fmt.Println(total, classify(len(os.Args)))
}
