// tail calls main.work 100 times: every 7th call sleeps 10 ms (slow), every 5th returns an
// error, the rest return at once. It prints "ready <pid>", waits for a line on stdin, makes its
// calls, prints `slow [i...]` and `failed [i...]` (JSON arrays of the arguments of those calls)
// and waits for another line before exiting.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

//go:noinline
func work(i int) (int, error) {
	if i%7 == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if i%5 == 0 {
		return 0, errors.New("every fifth")
	}
	return i * 2, nil
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	slow, failed := []int{}, []int{}
	total := 0
	for i := 0; i < 100; i++ {
		start := time.Now()
		n, err := work(i)
		if time.Since(start) >= 5*time.Millisecond {
			slow = append(slow, i)
		}
		if err != nil {
			failed = append(failed, i)
		}
		total += n
	}
	s, _ := json.Marshal(slow)
	f, _ := json.Marshal(failed)
	fmt.Printf("slow %s\nfailed %s\n", s, f)
	if total == 42 {
		fmt.Println()
	}
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
