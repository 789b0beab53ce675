#!/usr/bin/env bash
# `bash bench/builds.sh OLD NEW [ROUNDS]` (root, from the workspace, go on PATH): what two
# escapade binaries add per call of `bench/hot.go`'s main.hot under `trace --quiet` (entry at the
# stack-check JBE, return at the return site, counted in the kernel), in alternating rounds
# against one running program, with an untraced window before each: the ratio NEW/OLD of the
# added ns per call, per round and as the median. Side by side in one run, so that a loaded or
# different machine moves both alike. Each window is 2 s, from 0.5 s after escapade attached.
set -eu
old=$(realpath "$1")
new=$(realpath "$2")
rounds=${3:-5}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/hot" bench/hot.go
"$dir/hot" >"$dir/out" &
pid=$!
until grep -qs ready "$dir/out"; do sleep 0.1; done

# The mean ns per call the program printed over the next 2 s.
window() {
  local from
  from=$(wc -l <"$dir/out")
  sleep 2
  tail -n +"$((from + 1))" "$dir/out" | awk '/^ns_per_call/ { s += $2; n++ } END { printf "%.2f", s / n }'
}

# Added ns per call under escapade binary $1, measured once it has attached. (--duration counts
# from the attach; a background job of this script could not be stopped with SIGINT.)
traced() {
  "$1" trace --quiet --pid "$pid" --duration 3s main.hot >/dev/null 2>"$dir/err" &
  local tracer=$!
  until grep -qs attached "$dir/err"; do sleep 0.05; done
  sleep 0.5
  window
  wait "$tracer"
}

ratios=()
for round in $(seq "$rounds"); do
  sleep 0.5
  base=$(window)
  o=$(traced "$old")
  n=$(traced "$new")
  ratio=$(awk -v b="$base" -v o="$o" -v n="$n" 'BEGIN { printf "%.3f", (n - b) / (o - b) }')
  echo "round $round: untraced $base ns/call; added: old $(awk -v o="$o" -v b="$base" 'BEGIN { printf "%.0f", o - b }') ns, new $(awk -v n="$n" -v b="$base" 'BEGIN { printf "%.0f", n - b }') ns; new/old $ratio"
  ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { printf "median new/old: %s\n", r[int((NR + 1) / 2)] }'
