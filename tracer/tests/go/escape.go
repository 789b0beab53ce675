// escape is the corpus that checks `escapade params` against the Go compiler's escape analysis.
// Every function marked //go:noinline except run is a corpus function; run calls each of them
// from exactly one place, and every argument it passes is built on a line of its own (a local
// variable, an allocation, a literal, a global, nil), so that what the compiler says about that
// line (`moved to heap: x`, `&T{...} escapes to heap`, `make(...) does not escape`...) decides
// where the argument points. tests/params/ reads those lines, the corpus's syntax and its DWARF
// to derive the expected verdicts; nothing here needs to agree with them by hand.
//
// Rules the corpus keeps so that the compiler's word is the whole truth about each argument:
// values boxed into interfaces are at least 256 and not constants (smaller ones come from the
// runtime's static table, constants from read-only data), strings and byte slices built on
// the stack are at most 32 bytes (the size of the runtime's stack buffer), no object is
// zero-sized (those all share runtime.zerobase), and nothing runs on another goroutine.
//
// It prints "ready <pid>", waits for a line on stdin, runs the corpus three times, prints
// "done", and waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
)

type T struct{ a, b int }

type Node struct {
	next *Node
	val  int
}

// Its first pointer word, in layout order, is p.
type Wrapper struct {
	n int
	p *T
}

type Small struct{ x, y int32 }

// Nine words: exactly the integer argument registers.
type Nine struct{ a, b, c, d, e, f, g, h, i int }

// Too many words for the registers: passed on the stack.
type Big struct{ w [10]int }

// Passed on the stack too, with a pointer word first.
type BigP struct {
	p *T
	w [10]int
}

type Box[E any] struct{ v E }

type ordered interface{ ~int | ~string }

var (
	sinkT    *T
	sinkNode *Node
	sinkAny  any
	sinkInts []int
	sinkB    []byte
	sinkStr  string
	sinkF    func() int
	sinkPP   **T
	sinkIP   *int
	sinkSP   *string
	sinkTP   *T
	sinkMap  map[string]int
	globalT  T
	globalN  = Node{val: 7}
	globalA  [4]int
	input    = 1000 // read at run time so that the values derived from it are not constants
	word     = "ab"
)

// Scalars kept in registers.

//go:noinline
func addInts(a, b int) int { return a + b }

//go:noinline
func mixScalars(a int8, b bool, c uint16, d float64) float64 {
	if b {
		return d + float64(a) + float64(c)
	}
	return d
}

//go:noinline
func smallStruct(s Small) int32 { return s.x + s.y }

//go:noinline
func arrayOfOne(a [1]int) int { return a[0] }

// Parameters passed on the stack.

// pre takes every integer register, so n goes to the stack.
//
//go:noinline
func afterNine(pre Nine, n int) int { return pre.a + pre.i + n }

// A pointer that arrives on the stack still has a pointee.
//
//go:noinline
func pointerAfterNine(pre Nine, p *T) int { return pre.b + p.a }

// Arrays of more than one element never go in registers.
//
//go:noinline
func arrayParam(a [4]int) int { return a[0] + a[3] }

//go:noinline
func bigStruct(b Big) int { return b.w[0] + b.w[9] }

// A string and an interface after pre go to the stack; their data words still have pointees.
//
//go:noinline
func stringAfterNine(pre Nine, s string) int { return pre.c + len(s) }

//go:noinline
func ifaceAfterNine(pre Nine, v any) bool { return pre.d == 0 && v != nil }

//go:noinline
func bigWithPointer(b BigP) int { return b.p.a + b.w[9] }

//go:noinline
func pointerArray(a [2]*T) int { return a[0].a + a[1].b }

// Pointers to objects that stay on the caller's stack: the callee keeps nothing.

//go:noinline
func readT(p *T) int { return p.a + p.b }

//go:noinline
func readNode(n *Node) int { return n.val }

//go:noinline
func sumInts(s []int) int {
	t := 0
	for _, v := range s {
		t += v
	}
	return t
}

// Its argument's size is known only at run time.
//
//go:noinline
func sumVariable(s []int) int { return len(s) + s[0] }

//go:noinline
func sliceOfArray(s []int) int { return s[0] + len(s) }

//go:noinline
func sliceOfGlobal(s []int) int { return s[1] + cap(s) }

//go:noinline
func mapLen(m map[int]int) int { return len(m) }

//go:noinline
func strLen(s string) int { return len(s) }

//go:noinline
func callFunc(f func() int) int { return f() }

//go:noinline
func callClosure(f func() int) int { return f() + 1 }

//go:noinline
func isNil(p *T) bool { return p == nil }

//go:noinline
func readGlobal(p *Node) int { return p.val }

// An unnamed parameter has no DWARF location, so it has a pointer: its pointee is still known.
//
//go:noinline
func unnamed(*T) {}

func constOne() int { return 1 }

// Parameters that leak.

//go:noinline
func leakToGlobal(p *T) { sinkT = p }

//go:noinline
func leakSlice(s []int) { sinkInts = s }

// The string leaks, but its bytes can still be a literal's.
//
//go:noinline
func leakString(s string) { sinkStr = s }

// Returned: whether the pointee escapes depends on what the caller does with the result.
//
//go:noinline
func identity(p *T) *T { return p }

//go:noinline
func passThrough(n *Node) *Node { return n }

// Only what s points to leaks, not the backing array itself.
//
//go:noinline
func firstOf(s []*T) *T { return s[0] }

//go:noinline
func keepMap(m map[string]int) { sinkMap = m }

//go:noinline
func keepFunc(f func() int) { sinkF = f }

//go:noinline
func sendPtr(c chan *T, p *T) { c <- p }

// Captured by value by a closure that outlives the call.
//
//go:noinline
func captureByValue(p *T) func() int { return func() int { return p.a } }

//go:noinline
func boxPtr(p *T) { sinkAny = p }

// The boxed copy goes to the heap; the parameter itself has no pointer.
//
//go:noinline
func boxValue(t T) { sinkAny = t }

//go:noinline
func boxString(s string) { sinkAny = s }

//go:noinline
func takesIface(v any) bool { return v != nil }

//go:noinline
func keepIface(v any) { sinkAny = v }

// Parameters the callee moves to the heap itself.

//go:noinline
func movedInt(n int) *int { return &n }

//go:noinline
func movedPtr(p *T) **T { return &p }

//go:noinline
func movedString(s string) { sinkSP = &s }

//go:noinline
func movedStruct(t T) { sinkTP = &t }

// Captured by reference (the closure changes it): the variable itself lives on the heap.
//
//go:noinline
func captureByRef(n int) func() int {
	return func() int {
		n++
		return n
	}
}

// Methods.

//go:noinline
func (t *T) Sum() int { return t.a + t.b }

//go:noinline
func (t T) Diff() int { return t.a - t.b }

//go:noinline
func (w Wrapper) Get() int { return w.n + w.p.a }

//go:noinline
func (t *T) Keep() { sinkT = t }

//go:noinline
func (t T) AddrOf() *T { return &t }

// Slices that grow.

//go:noinline
func grow(s []int, n int) []int {
	for i := 0; i < n; i++ {
		s = append(s, i)
	}
	return s
}

//go:noinline
func appendLocal(s []int) int {
	s = append(s, 1, 2, 3)
	return len(s)
}

// Strings converted to []byte.

//go:noinline
func mutateBytes(b []byte) byte {
	b[0] = 'x'
	return b[0]
}

//go:noinline
func keepBytes(b []byte) { sinkB = b }

//go:noinline
func readBytes(b []byte) int { return len(b) + int(b[0]) }

//go:noinline
func bytesOf(s string) int {
	b := []byte(s)
	b[0]++
	return int(b[0])
}

// Generic functions: one shape function per instantiation's shape.

//go:noinline
func Max[E ordered](a, b E) E {
	if a > b {
		return a
	}
	return b
}

//go:noinline
func Keep[E any](p *E) { sinkAny = p }

//go:noinline
func (b *Box[E]) Set(v E) { b.v = v }

// run calls every corpus function once; main calls it three times.
//
//go:noinline
func run(i int) {
	n := input + i

	addInts(n, 2)
	mixScalars(int8(i), true, uint16(n), 1.5)
	smallStruct(Small{int32(n), 3})
	arrayOfOne([1]int{n})
	afterNine(Nine{n, 1, 2, 3, 4, 5, 6, 7, 8}, n)
	pt := T{n, 1}
	pointerAfterNine(Nine{n, 1, 2, 3, 4, 5, 6, 7, 8}, &pt)
	arrayParam([4]int{n, 1, 2, 3})
	bigStruct(Big{[10]int{n}})
	stringAfterNine(Nine{n, 1, 2, 3, 4, 5, 6, 7, 8}, "on the stack")
	stackBoxed := any(n)
	ifaceAfterNine(Nine{n, 1, 2, 3, 4, 5, 6, 7, 8}, stackBoxed)
	var bigTarget T
	bigArg := BigP{p: &bigTarget}
	bigWithPointer(bigArg)
	first, second := T{n, 1}, T{n, 2}
	pointerArray([2]*T{&first, &second})

	var onStack T
	readT(&onStack)
	node := &Node{val: n}
	readNode(node)
	ints := make([]int, 4)
	sumInts(ints)
	variable := make([]int, i+1)
	sumVariable(variable)
	var arr [4]int
	sliceOfArray(arr[:])
	sliceOfGlobal(globalA[:])
	m := make(map[int]int)
	mapLen(m)
	built := word + "x"
	strLen(built)
	callFunc(constOne)
	closure := func() int { return n }
	callClosure(closure)
	isNil(nil)
	readGlobal(&globalN)
	var unnamedArg T
	unnamed(&unnamedArg)

	leaked := T{n, 2}
	leakToGlobal(&leaked)
	leakedInts := make([]int, 3)
	leakSlice(leakedInts)
	leakString("a literal")
	var returned T
	identity(&returned)
	sinkNode = passThrough(&Node{val: n})
	pointee := T{n, 3}
	ptrs := []*T{&pointee}
	firstOf(ptrs)
	literalMap := map[string]int{"k": n}
	keepMap(literalMap)
	escapingClosure := func() int { return n + 1 }
	keepFunc(escapingClosure)
	ch := make(chan *T, 1)
	sent := T{n, 4}
	sendPtr(ch, &sent)
	<-ch
	captured := new(T)
	sinkF = captureByValue(captured)
	boxed := &T{n, 5}
	boxPtr(boxed)
	boxValue(T{n, 6})
	boxString(word + "cd")
	stackIface := any(n)
	takesIface(stackIface)
	heapIface := any(n)
	keepIface(heapIface)

	sinkIP = movedInt(n)
	var target T
	sinkPP = movedPtr(&target)
	movedString("moved")
	movedStruct(T{n, 7})
	sinkF = captureByRef(n)

	var recv T
	recv.Sum()
	T{n, 8}.Diff()
	var wrapped T
	w := Wrapper{n, &wrapped}
	w.Get()
	kept := &T{n, 9}
	kept.Keep()
	T{n, 10}.AddrOf()

	backing := make([]int, 0, 2)
	sinkInts = grow(backing, 8)
	local := []int{n}
	appendLocal(local)

	short := word + "y"
	mutable := []byte(short)
	mutateBytes(mutable)
	escaping := []byte(short)
	keepBytes(escaping)
	readOnly := []byte("read only")
	readBytes(readOnly)
	bytesOf("converted")

	Max[int](n, 3)
	Max[string]("left", "right")
	kInt := n
	Keep[int](&kInt)
	kStr := word + "z"
	Keep[string](&kStr)
	var bx Box[int]
	bx.Set(n)
}

func main() {
	in := bufio.NewReader(os.Stdin)
	fmt.Printf("ready %d\n", os.Getpid())
	in.ReadString('\n')
	for i := 0; i < 3; i++ {
		run(i)
	}
	fmt.Println("done")
	in.ReadString('\n')
}
