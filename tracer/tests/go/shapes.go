// shapes calls one function of each prologue shape the Go compiler emits (small, large and huge
// frames, a leaf without a stack check, a method, a closure, a generic function, and a deep
// recursion that grows its goroutine's stack), and prints one JSON line per call with the
// arguments and result, like args.go. It prints "ready <pid>", waits for a line on stdin before
// calling and for another before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

//go:noinline
func helper(a int) int { return a + 1 }

//go:noinline
func sum(buf []byte) int {
	t := 0
	for _, b := range buf {
		t += int(b)
	}
	return t
}

// Frame under 128 bytes: CMP RSP, 16(R14); JBE.
//
//go:noinline
func small(a, b int) int { return helper(a) + b }

// Frame of about 1 KiB: LEA R12, -n(SP); CMP R12, 16(R14); JBE.
//
//go:noinline
func large(a, b int) int {
	var buf [1024]byte
	buf[a%1024] = byte(b)
	return sum(buf[:]) + a
}

// Frame over 4 KiB: MOV R12, SP; SUB; JB; CMP; JBE.
//
//go:noinline
func huge(a, b int) int {
	var buf [8192]byte
	buf[a%8192] = byte(b)
	return sum(buf[:]) + a
}

// No call and a tiny frame: no stack check at all.
//
//go:noinline
func leaf(a, b int) int { return a*3 + b }

type calc struct{ k int }

//go:noinline
func (c *calc) method(a, b int) int { return helper(a) + b + c.k }

//go:noinline
func makeClosure(k int) func(int, int) int {
	return func(a, b int) int { return helper(a) + b + k }
}

//go:noinline
func gen[T ~int](a, b T) T { return T(helper(int(a))) + b }

// Recursion through 200-byte frames: a fresh goroutine's stack must grow several times.
//
//go:noinline
func deep(n, b int) int {
	var pad [200]byte
	pad[n%200] = byte(n)
	if n == 0 {
		return b
	}
	return deep(n-1, b) + int(pad[n%200])
}

func report(function string, a, b, r int) {
	line, _ := json.Marshal(map[string]any{
		"function": function,
		"args":     map[string]any{"a": a, "b": b},
		"results":  map[string]any{"~r0": r},
	})
	fmt.Println(string(line))
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	c := &calc{k: 100}
	closure := makeClosure(1000)
	for i := 1; i <= 3; i++ {
		a, b := 10*i, -i
		report("main.small", a, b, small(a, b))
		report("main.large", a, b, large(a, b))
		report("main.huge", a, b, huge(a, b))
		report("main.leaf", a, b, leaf(a, b))
		report("main.(*calc).method", a, b, c.method(a, b))
		report("main.makeClosure.func1", a, b, closure(a, b))
		report("main.gen[go.shape.int]", a, b, gen(a, b))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		report("main.deep", 100, 7, deep(100, 7))
	}()
	wg.Wait()
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
