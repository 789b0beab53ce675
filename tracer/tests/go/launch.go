// A program for launch mode: it calls main.work from an init function, before main runs, and
// then from main, prints how many calls it made in all, and exits with the status given as its
// first argument.
package main

import (
	"fmt"
	"os"
	"strconv"
)

var calls int

//go:noinline
func work(i int) int {
	calls++
	return i * 2
}

func init() {
	for i := 0; i < 3; i++ {
		work(i)
	}
}

func main() {
	status, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	for i := 0; i < 1000; i++ {
		work(i)
	}
	fmt.Printf("calls %d\n", calls)
	os.Exit(status)
}
