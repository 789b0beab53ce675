// spin calls main.spin 200 times; each call spins on the monotonic clock for 50 us and returns
// the time it measured itself, from its first statement to its last. It prints "ready <pid>",
// waits for a line on stdin, makes its calls, prints `spun [ns...]` (a JSON array, in call
// order) and waits for another line before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

//go:noinline
func spin(d time.Duration) time.Duration {
	start := time.Now()
	for {
		if elapsed := time.Since(start); elapsed >= d {
			return elapsed
		}
	}
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	spun := make([]int64, 0, 200)
	for i := 0; i < 200; i++ {
		spun = append(spun, int64(spin(50*time.Microsecond)))
	}
	line, _ := json.Marshal(spun)
	fmt.Printf("spun %s\n", line)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
