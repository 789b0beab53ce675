// traceback calls a function many times and panics inside it on its last call, so that the
// runtime prints that call's arguments in its traceback: in a binary without DWARF, the words
// FUNCDATA_ArgInfo describes. The symbols tests compare them with the words escapade printed
// for the same call.
//
// os.Args[1] names the function: "parse" (an int, a string, a struct, a slice, then more
// words than the traceback prints, so it ends with `...`, one struct passed on the stack) or
// "narrow" (words narrower than 8 bytes, a bool, and an array, which is always passed on the
// stack). It prints "ready <pid>" and waits for a line on stdin before calling.
package main

import (
	"bufio"
	"fmt"
	"os"
)

const calls = 200

type pair struct{ a, b int }

type small struct {
	x int8
	y int16
	z int32
}

var sink int

// check panics on the last call. Calling it keeps every argument of its caller live across
// the call, so the caller has stored them where the traceback reads them.
//
//go:noinline
func check(n int) {
	if n == calls-1 {
		panic(fmt.Sprintf("last call (%d)", n))
	}
}

//go:noinline
func parse(n int, s string, p pair, b []byte, sm small, f float64, tail int) int {
	check(n)
	sink += len(s) + p.a + len(b) + int(sm.x) + int(f) + tail
	return n + len(s) + p.b + cap(b) + int(sm.z) + int(sm.y)
}

//go:noinline
func narrow(a int8, ok bool, c uint16, d int32, arr [3]int64, n int) int {
	check(n)
	if ok {
		sink += int(a) + int(c) + int(d) + int(arr[0]+arr[1]+arr[2])
	}
	return n
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	b := make([]byte, 3, 7)
	for i := 0; i < calls; i++ {
		switch os.Args[1] {
		case "parse":
			parse(i, "hello", pair{i * 2, -i}, b[:i%4], small{int8(-1 - i), int16(2 * i), int32(3 * i)}, 1.5, 42)
		case "narrow":
			narrow(int8(-i), i%2 == 1, uint16(0xbe00+i), int32(-2-i), [3]int64{7, int64(i), 9}, i)
		}
	}
	fmt.Println(sink)
}
