// stress runs 64 goroutines that recurse deeply through frames big enough to make the runtime
// grow (copy) their stacks, while another goroutine forces garbage collections, which shrink
// stacks again. It counts every call of main.recurse and prints the total at the end, so a test
// can check that escapade saw each entry and each return.
//
// Usage: stress <seconds>. It prints "ready <pid>", waits for a line on stdin, runs, prints
// "calls <n>", then waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var calls atomic.Int64

//go:noinline
func recurse(depth int, pad [256]byte) int {
	calls.Add(1)
	if depth == 0 {
		return int(pad[0])
	}
	pad[depth%256]++
	// Tested before it is used, so the kernel's next emulated instruction after the call
	// (the JLT) still holds the result: the returns are seen at the return site.
	r := recurse(depth-1, pad)
	if r < 0 {
		panic("negative depth")
	}
	return r + 1
}

func main() {
	seconds, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				// 40..79 frames of ~300 bytes: past the 8 KiB a goroutine starts with.
				if got := recurse(40+(g+i)%40, [256]byte{}); got < 40 {
					panic("wrong depth")
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(g)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
				runtime.GC()
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	wg.Wait()
	close(done)
	fmt.Printf("calls %d\n", calls.Load())
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
