// busy calls one small function in a tight loop on the main goroutine, so the runtime keeps
// preempting it with signals (SIGURG), some of which land while the kernel single-steps a
// probed instruction. It counts the calls and prints the total.
//
// Usage: busy <seconds>. It prints "ready <pid>", waits for a line on stdin, runs, prints
// "calls <n>", then waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func mix(a, b int) int { return a*31 ^ b }

//go:noinline
func hot(a, b int) int { return mix(a, b) + 1 }

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
	calls, acc := 0, 0
	for time.Now().Before(stop) {
		for i := 0; i < 1000; i++ {
			acc += hot(i, acc)
			calls++
		}
	}
	fmt.Printf("calls %d\n", calls)
	if acc == 42 {
		fmt.Println("unlikely")
	}
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
