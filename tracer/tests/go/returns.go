// returns calls functions in the ways that decide where escapade sees their returns: directly
// (a return site in the caller), through a func value and through an interface (only the
// callee's RETs see those), with a result the caller discards, with a result the caller keeps
// across another call, and through a panic that unwinds past a direct call. It prints "ready
// <pid>", waits for a line on stdin, makes its calls, prints one JSON line per checked call
// and then one line with how many calls it made each way, and waits for another line before
// exiting; one call (main.parked) runs until then. Arguments, both optional: how many rounds of
// calls (50) and how long to pause after each, in ms (0).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"
)

// double is called directly and through a func value.
//
//go:noinline
func double(x int) int { return 2*x + 1 }

type adder struct{ k int }

// Add is called directly and through an interface.
//
//go:noinline
func (a *adder) Add(x int) int { return x + a.k }

type Adder interface{ Add(int) int }

// Package variables, so that the compiler cannot see through them.
var (
	viaValue         = double
	viaIface Adder   = &adder{k: 5}
	direct   *adder  = &adder{k: 7}
	sink     []int
)

// pair's first result is discarded by one caller and kept by another.
//
//go:noinline
func pair(x int) (int, int) { return x * 3, x + 4 }

// spilled returns a value its caller keeps across another call, so the compiler stores it in
// the caller's frame before the next instruction the kernel emulates.
//
//go:noinline
func spilled(x int) int { return x*x + 9 }

// mayPanic panics for negative arguments; its direct caller never sees those returns.
//
//go:noinline
func mayPanic(x int) int {
	if x < 0 {
		panic("negative")
	}
	return x + 1
}

//go:noinline
func recovering(x int) (r int) {
	defer func() {
		if recover() != nil {
			r = -1
		}
	}()
	return mayPanic(x)
}

// parked is still running when the program prints its counts: it waits until the end.
//
//go:noinline
func parked(ch chan int) int { return <-ch + 1 }

func report(function string, results map[string]any) {
	line, _ := json.Marshal(map[string]any{"function": function, "results": results})
	fmt.Println(string(line))
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	release := make(chan int)
	done := make(chan int)
	go func() { done <- parked(release) }()
	// Optional arguments: rounds (50) and a pause after each, in ms (none).
	rounds, pause := 50, 0
	if len(os.Args) > 2 {
		rounds, _ = strconv.Atoi(os.Args[1])
		pause, _ = strconv.Atoi(os.Args[2])
	}
	counts := map[string]int{}
	total := 0
	for i := 0; i < rounds; i++ {
		total += double(i)
		counts["double_direct"]++
		total += viaValue(i)
		counts["double_func_value"]++
		total += direct.Add(i)
		counts["add_direct"]++
		total += viaIface.Add(i)
		counts["add_interface"]++
		if i%10 == 0 {
			_, b := pair(i)
			counts["pair_discarding"]++
			a, b2 := pair(i + 1)
			counts["pair_keeping"]++
			report("main.pair", map[string]any{"a": i*3, "b": b, "kept_a": a, "kept_b": b2})
			s := spilled(i)
			sink = append(sink, i)
			report("main.spilled", map[string]any{"~r0": s})
			counts["spilled"]++
		}
		if recovering(i-rounds/2) < 0 {
			counts["panicked"]++
		}
		counts["mayPanic"]++
		time.Sleep(time.Duration(pause) * time.Millisecond)
	}
	line, _ := json.Marshal(counts)
	fmt.Printf("counts %s\n", line)
	if total == 42 {
		fmt.Println(sink)
	}
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	release <- 1
	<-done
}
