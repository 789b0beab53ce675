#!/usr/bin/env bash
# `bash bench/builds.sh OLD NEW [ROUNDS]` (root, from the workspace, go on PATH): what two
# escapade binaries add per call of `bench/hot.go`'s main.hot under `trace --quiet` (entry at the
# stack-check JBE, return at the return site, counted in the kernel), in alternating rounds
# against one running program, with an untraced window before each: the ratio NEW/OLD of the
# added ns per call and of the BPF time per probe hit, per round and as the median. Side by side in one run, so that a loaded or
# different machine moves both alike. Each window is 2 s, from 0.5 s after escapade attached.
set -eu
old=$(realpath "$1")
new=$(realpath "$2")
rounds=${3:-5}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"; sysctl -q kernel.bpf_stats_enabled="${stats:-0}"' EXIT
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

# The BPF time per probe hit of process $1's programs so far, as the kernel counts it
# (kernel.bpf_stats_enabled): the sum of run_time_ns over the sum of run_cnt in their fdinfo.
bpf_ns_per_hit() {
  cat /proc/"$1"/fdinfo/* 2>/dev/null |
    awk '/^run_time_ns/ { t += $2 } /^run_cnt/ { n += $2 } END { printf "%.0f", n ? t / n : 0 }'
}

# Added ns per call under escapade binary $1, measured once it has attached, then its BPF ns
# per hit. (--duration counts from the attach; a background job of this script could not be
# stopped with SIGINT.)
traced() {
  "$1" trace --quiet --pid "$pid" --duration 5s main.hot >/dev/null 2>"$dir/err" &
  local tracer=$!
  until grep -qs attached "$dir/err"; do sleep 0.05; done
  sleep 0.5
  echo "$(window) $(bpf_ns_per_hit "$tracer")"
  wait "$tracer"
}

stats=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -q kernel.bpf_stats_enabled=1

ratios=()
bpf_ratios=()
for round in $(seq "$rounds"); do
  # The last tracer's probes may outlast its exit for a moment.
  sleep 2
  base=$(window)
  # Each goes first in every other round, so that the order does not favour one.
  if [ $((round % 2)) = 1 ]; then
    read -r o o_bpf < <(traced "$old")
    read -r n n_bpf < <(traced "$new")
  else
    read -r n n_bpf < <(traced "$new")
    read -r o o_bpf < <(traced "$old")
  fi
  ratio=$(awk -v b="$base" -v o="$o" -v n="$n" 'BEGIN { printf "%.3f", (n - b) / (o - b) }')
  bpf_ratio=$(awk -v o="$o_bpf" -v n="$n_bpf" 'BEGIN { printf "%.3f", n / o }')
  added() { awk -v t="$1" -v b="$base" 'BEGIN { printf "%.0f", t - b }'; }
  echo "round $round: untraced $base ns/call; added: old $(added "$o") ns, new $(added "$n") ns," \
    "new/old $ratio; BPF per hit: old $o_bpf ns, new $n_bpf ns, new/old $bpf_ratio"
  ratios+=("$ratio")
  bpf_ratios+=("$bpf_ratio")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }'; }
echo "median new/old: added per call $(median "${ratios[@]}"), BPF per hit $(median "${bpf_ratios[@]}")"
