#!/usr/bin/env bash
# `bash bench/bigservice.sh DIR [PACKAGES] [FUNCS_PER_PACKAGE]` (go on PATH, no module proxy
# needed): generates a Go program the size of a real service and builds it twice, DIR/big
# (stripped, -ldflags='-s -w') and DIR/big-full (with symbols and DWARF). The defaults (40
# packages of 1,000 functions, each with a type and a method) make the stripped binary 47 MB
# and the other 61 MB with Go 1.26. A table of func values keeps every generated function;
# main.hot (as in bench/hot.go) is called 50,000 times a second, so tracing its entries and
# returns gives about 100,000 events/s, and each 10 ms tick calls a few table functions, which
# allocate, as a service would.
set -eu
dir=$1
packages=${2:-40}
funcs=${3:-1000}
src="$dir/src"
rm -rf "$src"
mkdir -p "$src"
printf 'module bigservice\n\ngo 1.21\n' > "$src/go.mod"
for ((p = 0; p < packages; p++)); do
  mkdir -p "$src/p$p"
  awk -v p="$p" -v n="$funcs" 'BEGIN {
    printf "package p%d\n\nimport \"strconv\"\n\n", p
    for (i = 0; i < n; i++) {
      k = p * n + i
      printf "type T%d struct {\n\tA, B int\n\tS    string\n\tM    map[string]int\n}\n\n", i
      printf "func (t *T%d) Step(x int) int {\n\tif t.M == nil {\n\t\tt.M = map[string]int{}\n\t}\n", i
      printf "\tt.M[t.S+strconv.Itoa(x%%%d)] += x\n\treturn t.A*%d + t.B + len(t.M)\n}\n\n", (k % 7) + 2, k
      printf "func F%d(x int, s string) int {\n\tt := &T%d{A: x, B: len(s), S: \"k%d:\" + s}\n", i, i, k
      printf "\ta := t.Step(x) * %d\n\tswitch a %% 5 {\n", k % 1000 + 3
      printf "\tcase 0:\n\t\ta += %d\n\tcase 1:\n\t\ta ^= len(s) << 3\n", k % 97
      printf "\tcase 2:\n\t\ta = a*7 - %d\n\tcase 3:\n\t\ts = strconv.Itoa(a) + s\n", k % 13
      printf "\tdefault:\n\t\ta--\n\t}\n\tfor i := 0; i < len(s) && i < %d; i++ {\n", k % 5 + 1
      printf "\t\ta = a*31 + int(s[i])\n\t}\n\treturn a + len(t.M)\n}\n\n"
    }
    printf "// Table keeps every function in the binary.\nvar Table = []func(int, string) int{\n"
    for (i = 0; i < n; i++) printf "\tF%d,\n", i
    printf "}\n"
  }' > "$src/p$p/funcs.go"
done
{
  printf 'package main\n\nimport (\n\t"fmt"\n\t"os"\n\t"time"\n\n'
  for ((p = 0; p < packages; p++)); do printf '\t"bigservice/p%d"\n' "$p"; done
  printf ')\n\nvar tables = [][]func(int, string) int{\n'
  for ((p = 0; p < packages; p++)); do printf '\tp%d.Table,\n' "$p"; done
  cat <<'GO'
}

// hot is what the benchmark traces, as in bench/hot.go.
//
//go:noinline
func hot(a, b int) int {
	return mix(a, b) + 1
}

//go:noinline
func mix(a, b int) int {
	return a*31 ^ b
}

func main() {
	fmt.Printf("ready %d\n", os.Getpid())
	sum, n := 0, 0
	tick := time.NewTicker(10 * time.Millisecond)
	for range tick.C {
		for i := 0; i < 500; i++ {
			sum = hot(i, sum)
		}
		for i := 0; i < 4; i++ {
			n++
			t := tables[n%len(tables)]
			sum += t[(n*7919)%len(t)](sum, fmt.Sprint(n))
		}
		if sum == 42 {
			fmt.Println() // keep sum alive
		}
	}
}
GO
} > "$src/main.go"
(cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -ldflags='-s -w' -o ../big . \
  && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o ../big-full .)
ls -l "$dir/big" "$dir/big-full"
