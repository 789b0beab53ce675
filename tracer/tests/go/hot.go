// hot burns CPU on known call paths, for `escapade hot`'s CPU shares and parameter lifetime
// overlaps.
//
// Usage: hot split <seconds> <profile> <hz>: pathA and pathB spin on the monotonic clock in a
// 70/30 split (7 and 3 calls of 1 ms each per round, in a random order: a fixed order
// repeating every 10 ms would alias with a sampler ticking every 2 ms) while the program writes its own
// runtime/pprof CPU profile, sampled at <hz>, to <profile>. A descheduled thread's spin ends
// on time with less CPU spent, so on a busy machine the split of CPU time drifts from 70/30:
// the program measures it with its thread's CPU clock and prints "cpu <pathA ns> <pathB ns>"
// after "done".
// hot nested <seconds>: outer (30 ms) spins 10 ms, calls inner (10 ms), spins 10 ms; then
// siblings (20 ms) calls sibA (10 ms) and sibB (10 ms) one after the other.
//
// It prints "ready <pid>", waits for a line on stdin, runs, prints "done <loops>", then waits
// for another line before exiting.
package main

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

const ms = time.Millisecond

var sink int

//go:noinline
func spinFor(d time.Duration) int {
	start, n := time.Now(), 0
	for time.Since(start) < d {
		n++
	}
	return n
}

// threadCPU is the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3
	_, _, errno := syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime,
		uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		panic(errno)
	}
	return time.Duration(ts.Nano())
}

//go:noinline
func pathA(d time.Duration) int { return spinFor(d) }

//go:noinline
func pathB(d time.Duration) int { return spinFor(d) }

//go:noinline
func inner(d time.Duration) int { return spinFor(d) }

//go:noinline
func outer(d time.Duration) int { return spinFor(d) + inner(d) + spinFor(d) }

//go:noinline
func sibA(d time.Duration) int { return spinFor(d) }

//go:noinline
func sibB(d time.Duration) int { return spinFor(d) }

//go:noinline
func siblings(d time.Duration) int { return sibA(d) + sibB(d) }

func main() {
	seconds, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	fmt.Printf("ready %d\n", os.Getpid())
	stdin := bufio.NewReader(os.Stdin)
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	loops := 0
	var cpuA, cpuB time.Duration
	switch os.Args[1] {
	case "split":
		f, err := os.Create(os.Args[3])
		if err != nil {
			panic(err)
		}
		hz, err := strconv.Atoi(os.Args[4])
		if err != nil {
			panic(err)
		}
		// Set first, the rate sticks: StartCPUProfile's own 100 Hz is then refused (with a
		// warning on stderr). More samples than 100 Hz make the shares steadier.
		runtime.SetCPUProfileRate(hz)
		if err := pprof.StartCPUProfile(f); err != nil {
			panic(err)
		}
		// The thread's CPU clock measures this goroutine only while it stays on the thread.
		runtime.LockOSThread()
		for ; time.Now().Before(stop); loops++ {
			for _, i := range rand.Perm(10) {
				start := threadCPU()
				if i < 7 {
					sink += pathA(ms)
					cpuA += threadCPU() - start
				} else {
					sink += pathB(ms)
					cpuB += threadCPU() - start
				}
			}
		}
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			panic(err)
		}
	case "nested":
		for ; time.Now().Before(stop); loops++ {
			sink += outer(10 * ms)
			sink += siblings(10 * ms)
		}
	default:
		panic("unknown mode " + os.Args[1])
	}
	fmt.Printf("done %d\n", loops)
	if os.Args[1] == "split" {
		fmt.Printf("cpu %d %d\n", cpuA.Nanoseconds(), cpuB.Nanoseconds())
	}
	if _, err := stdin.ReadString('\n'); err != nil {
		panic(err)
	}
}
