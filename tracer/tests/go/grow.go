// grow allocates 64 MiB after escapade attached, which the runtime maps as new heap memory,
// passes its last 8 bytes to main.touch (their address is beyond anything mapped at attach,
// wherever the randomized heap starts), and prints that address, so a test can check that
// escapade still knows the pointer is into the heap.
//
// It prints "ready <pid>", waits for a line on stdin, allocates and calls, prints
// "addr <address>", then waits for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

//go:noinline
func touch(b []byte) int { return len(b) }

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	big := make([]byte, 64<<20)
	tail := big[len(big)-8:]
	touch(tail)
	fmt.Printf("addr %d\n", uintptr(unsafe.Pointer(unsafe.SliceData(tail))))
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	runtime.KeepAlive(big)
}
