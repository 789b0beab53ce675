// references reaches functions in each way Go code can: a direct call, a func value, an
// interface method call through a static itab and through one the runtime builds, a method
// value, a goroutine launched with arguments, a closure, and a method promoted from an
// embedded struct; and has methods only ever called directly.
package main

import (
	"fmt"
	"os"
)

type I interface{ Method(int) int }

// T is converted to I, so its method table is kept.
type T struct{ n int }

//go:noinline
func (t *T) Method(d int) int { t.n += d; return t.n }

//go:noinline
func (t *T) OnlyDirect(d int) int { t.n -= d; return t.n }

//go:noinline
func (t *T) unexported(d int) int { t.n *= d; return t.n }

// Lonely's signature is no other function's, so nothing keeps its type in the binary.
//
//go:noinline
func (t *T) Lonely(s string, b bool) (float32, bool) { return float32(len(s) + t.n), !b }

// U is never converted to an interface.
type U struct{ n int }

//go:noinline
func (u *U) Plain(d int) int { u.n ^= d; return u.n }

// W is stored in an `any` and asserted to Dyn, so its itab is built at run time from its
// method table.
type Dyn interface{ Dynamic(int) int }

type W struct{ n int }

//go:noinline
func (w *W) Dynamic(d int) int { w.n |= d; return w.n }

var anything any = &W{n: 1}

//go:noinline
func callDynamic(d int) int { return anything.(Dyn).Dynamic(d) }

// Outer's M is Inner's, promoted: (*Outer).M is a wrapper the compiler writes.
type Inner struct{ n int }

//go:noinline
func (in *Inner) M(d int) int { in.n += d * 2; return in.n }

type Outer struct {
	Inner
	tag string
}

type Mer interface{ M(int) int }

//go:noinline
func callM(m Mer, d int) int { return m.M(d) }

//go:noinline
func direct(a int) int { return a*3 + 1 }

//go:noinline
func viaFuncValue(a int) int { return a*5 + 2 }

var fn = viaFuncValue

type V struct{ n int }

//go:noinline
func (v *V) Bound(d int) int { v.n += d; return v.n }

//go:noinline
func launched(x int, done chan int) { done <- x * 2 }

//go:noinline
func callThrough(i I, d int) int { return i.Method(d) }

//go:noinline
func callValue(f func(int) int, d int) int { return f(d) }

var sink I

func main() {
	t := &T{n: len(os.Args)}
	sink = t
	n := direct(len(os.Args))
	n += fn(n)
	n += callThrough(sink, n)
	n += t.OnlyDirect(n)
	n += t.unexported(n)
	if f, ok := t.Lonely(os.Args[0], n > 0); ok {
		n += int(f)
	}
	u := &U{n: n}
	n += u.Plain(n)
	n += callDynamic(n)
	n += callM(&Outer{tag: os.Args[0]}, n)
	v := &V{n: n}
	n += callValue(v.Bound, n)
	done := make(chan int)
	go launched(n, done)
	n += <-done
	add := func(x int) int { return x + n + len(os.Args) }
	calls := []func(int) int{add}
	n += calls[len(os.Args)-1](1)
	fmt.Println(n)
}
