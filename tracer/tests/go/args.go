// args calls functions of every parameter kind escapade decodes, and prints, as one JSON line
// per call, the arguments and results exactly as Go sees them. The trace tests attach escapade
// to this process and compare what it decoded with these lines.
//
// It prints "ready <pid>" and waits for a line on stdin before calling, so the probes are in
// place first, and for another before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

type Point struct {
	X, Y int64
}

type Pair struct {
	A int32
	B uint8
	C [2]uint16
}

type Big struct {
	Words [12]int64
}

type Counter struct {
	n int64
}

type Named struct{ Name string }

func (n Named) String() string { return n.Name }

var globalCounter Counter  // in .bss: no initial value
var globalPoint = &Point{1, 2} // the pointer in .data... the Point itself on the heap or data
var globalTable = [4]int64{1, 2, 3, 4}

func addr[T any](p *T) string { return fmt.Sprintf("%#x", uintptr(unsafe.Pointer(p))) }

func strAddr(s string) string { return fmt.Sprintf("%#x", uintptr(unsafe.Pointer(unsafe.StringData(s)))) }

func sliceAddr[T any](s []T) string {
	return fmt.Sprintf("%#x", uintptr(unsafe.Pointer(unsafe.SliceData(s))))
}

func ifaceWords(e any) (string, string) {
	w := (*[2]uintptr)(unsafe.Pointer(&e))
	if w[0] == 0 {
		return "", "0x0"
	}
	return fmt.Sprintf("%T", e), fmt.Sprintf("%#x", w[1])
}

func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}

func report(function string, args, results map[string]any) {
	line, err := json.Marshal(map[string]any{"function": function, "goid": goid(), "args": args, "results": results})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

//go:noinline
func TracedScalars(a int, b int8, c uint16, d uint64, e bool, f int32) (int64, bool) {
	return int64(a) + int64(b), !e
}

//go:noinline
func TracedFloats(i int, x float64, y float32, j int) float64 {
	return float64(i+j) + x + float64(y)
}

//go:noinline
func TracedPointers(heap *Point, stack *int64, bss *Counter, data *int64, none *Point) *Point {
	*stack += 1
	return heap
}

//go:noinline
func TracedString(s string, n int) (string, int) {
	return s[:n], len(s)
}

//go:noinline
func TracedSlice(s []byte, t []int64) int {
	return len(s) + cap(t)
}

//go:noinline
func TracedStructs(p Point, q Pair, arr [1]int64) Point {
	return Point{p.X + int64(q.A), p.Y + arr[0]}
}

//go:noinline
func TracedInterfaces(e any, s fmt.Stringer, err error) any {
	return e
}

// Eleven integer words: RAX..R11 take nine, the last two go to the stack.
//
//go:noinline
func TracedMany(a, b, c, d, e, f, g, h, i, j, k int) (int, int) {
	return a + k, j
}

// Too big for registers: passed whole on the stack.
//
//go:noinline
func TracedBig(tag int, big Big) int64 {
	return int64(tag) + big.Words[11]
}

//go:noinline
func (p Point) TracedDist(scale int64) int64 {
	return (p.X + p.Y) * scale
}

//go:noinline
func (c *Counter) TracedAdd(n int64) int64 {
	c.n += n
	return c.n
}

// A defer makes the compiler describe the result twice in DWARF.
//
//go:noinline
func TracedDefer(mu *sync.Mutex, n int) int {
	mu.Lock()
	defer mu.Unlock()
	return n * 2
}

// Small enough that the compiler inlines it everywhere: no code of its own to probe.
func inlinedHelper(x int) int {
	if x < 0 {
		panic("negative pid")
	}
	return x + 1
}

func main() {
	fmt.Printf("ready %d\n", inlinedHelper(os.Getpid()-1))
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}

	r1, r2 := TracedScalars(-7, -100, 65000, 1<<40+3, true, -123456)
	report("main.TracedScalars",
		map[string]any{"a": -7, "b": -100, "c": 65000, "d": uint64(1<<40 + 3), "e": true, "f": -123456},
		map[string]any{"~r0": r1, "~r1": r2})

	fr := TracedFloats(3, 2.5, 1.25, 4)
	report("main.TracedFloats", map[string]any{"i": 3, "j": 4}, map[string]any{"~r0": fr})

	heap := &Point{3, 4}
	var onStack int64 = 41
	stackPtr := &onStack
	rp := TracedPointers(heap, stackPtr, &globalCounter, &globalTable[1], nil)
	runtime.KeepAlive(stackPtr)
	report("main.TracedPointers", map[string]any{
		"heap": addr(heap), "stack": addr(stackPtr), "bss": addr(&globalCounter),
		"data": addr(&globalTable[1]), "none": "0x0",
	}, map[string]any{"~r0": addr(rp)})

	text := strings.Repeat("escapade-", 8) // 72 bytes, on the heap
	rs, rn := TracedString(text, 5)
	report("main.TracedString",
		map[string]any{"s": map[string]any{"addr": strAddr(text), "len": len(text), "text": text}, "n": 5},
		map[string]any{"~r0": map[string]any{"addr": strAddr(rs), "len": len(rs)}, "~r1": rn})

	bs := make([]byte, 5, 9)
	ts := make([]int64, 2, 3)
	sn := TracedSlice(bs, ts)
	report("main.TracedSlice", map[string]any{
		"s": map[string]any{"addr": sliceAddr(bs), "len": len(bs), "cap": cap(bs)},
		"t": map[string]any{"addr": sliceAddr(ts), "len": len(ts), "cap": cap(ts)},
	}, map[string]any{"~r0": sn})

	p := Point{-5, 6}
	q := Pair{A: -9, B: 250, C: [2]uint16{7, 8}}
	sp := TracedStructs(p, q, [1]int64{11})
	report("main.TracedStructs", map[string]any{
		"p":   map[string]any{"X": p.X, "Y": p.Y},
		"q":   map[string]any{"A": q.A, "B": q.B, "C": []uint16{7, 8}},
		"arr": []int64{11},
	}, map[string]any{"~r0": map[string]any{"X": sp.X, "Y": sp.Y}})

	var e any = heap
	var s fmt.Stringer = Named{"n"}
	ri := TracedInterfaces(e, s, nil)
	et, ed := ifaceWords(e)
	st, sd := ifaceWords(s)
	rt, rd := ifaceWords(ri)
	report("main.TracedInterfaces", map[string]any{
		"e":   map[string]any{"type": et, "data": ed},
		"s":   map[string]any{"type": st, "data": sd},
		"err": map[string]any{"type": "", "data": "0x0"},
	}, map[string]any{"~r0": map[string]any{"type": rt, "data": rd}})

	m1, m2 := TracedMany(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	report("main.TracedMany", map[string]any{
		"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9, "j": 10, "k": 11,
	}, map[string]any{"~r0": m1, "~r1": m2})

	var big Big
	for i := range big.Words {
		big.Words[i] = int64(100 + i)
	}
	rb := TracedBig(7, big)
	report("main.TracedBig", map[string]any{"tag": 7, "big": map[string]any{"Words": big.Words}},
		map[string]any{"~r0": rb})

	dp := Point{2, 3}
	rd2 := dp.TracedDist(10)
	report("main.Point.TracedDist", map[string]any{"p": map[string]any{"X": dp.X, "Y": dp.Y}, "scale": 10},
		map[string]any{"~r0": rd2})

	c := &Counter{n: 5}
	rc := c.TracedAdd(37)
	report("main.(*Counter).TracedAdd", map[string]any{"c": addr(c), "n": 37}, map[string]any{"~r0": rc})

	var mu sync.Mutex
	rdf := TracedDefer(&mu, 21)
	report("main.TracedDefer", map[string]any{"mu": addr(&mu), "n": 21}, map[string]any{"~r0": rdf})

	// Stay alive until the test has seen escapade decode these calls.
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
