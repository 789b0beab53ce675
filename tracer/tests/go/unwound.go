// unwound panics out of main.fragile in many goroutines, one after another, each recovering
// at its top: every call leaves an entry that never returns. Then a fresh goroutine calls
// main.build, which allocates. It prints "ready <pid>", waits for a line on stdin, runs, prints
// "built N" and waits for another line before exiting. Argument: how many goroutines panic.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func fragile(i int) {
	if i >= 0 {
		panic(i)
	}
}

// build's object escapes through its result: one runtime.newobject a call.
//
//go:noinline
func build(n int) *[4]int {
	p := new([4]int)
	p[0] = n
	return p
}

var sink *[4]int

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	n, _ := strconv.Atoi(os.Args[1])
	for i := 0; i < n; i++ {
		done := make(chan struct{})
		go func() {
			defer func() {
				recover()
				close(done)
			}()
			fragile(i)
		}()
		<-done
	}
	// Let the tracer drain the entries' events before the calls that count.
	time.Sleep(time.Second)
	const builds = 100
	built := make(chan struct{})
	go func() {
		for i := 0; i < builds; i++ {
			sink = build(i)
		}
		close(built)
	}()
	<-built
	fmt.Printf("built %d\n", builds)
	in.ReadString('\n')
}
