#!/usr/bin/env bash
# `bash bench/agent-scale.sh [PROCESSES] [BINARIES] [SECONDS]` (root, from the workspace, after
# `cargo build --release -p escapade`; go, curl and python3 on PATH): the agent at node scale.
# One agent with one `exe` target per binary (BINARIES copies of the bundled demo, each
# counting main.parseOrder and main.price, allocations as ALLOCS says: `sampled` by default,
# `off` for targets that count calls only, whose probes sit once in each file for all its
# processes), PROCESSES demo processes
# spread over them (about 200 orders a second each). Prints, once every process is attached:
# the BPF maps and programs the agent holds and their locked kernel memory
# (bench/map-memory.sh), its RssAnon, its CPU over SECONDS, and the events it took and
# lost. ESCAPADE names the escapade binary to run.
set -eu
procs=${1:-50}
bins=${2:-5}
seconds=${3:-30}
escapade=${ESCAPADE:-target/release/escapade}
allocs=${ALLOCS:-sampled}
port=9478
dir=$(mktemp -d)
(cd demo && go build -o "$dir/demo" .)
config=$dir/agent.toml
echo "listen = \"127.0.0.1:$port\"" >"$config"
for ((b = 1; b <= bins; b++)); do
  cp "$dir/demo" "$dir/demo$b"
  cat >>"$config" <<EOF
[[target]]
name = "demo$b"
exe = "$dir/demo$b"
functions = ["main.parseOrder", "main.price"]
allocs = "$allocs"
EOF
done
"$escapade" agent --config "$config" 2>"$dir/agent.log" &
agent=$!
pids=()
cleanup() {
  kill -TERM $agent 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT
until curl -sf "127.0.0.1:$port/healthz" >/dev/null; do
  kill -0 $agent || { cat "$dir/agent.log" >&2; exit 1; }
  sleep 0.1
done
started=$(date +%s.%N)
for ((p = 0; p < procs; p++)); do
  "$dir/demo$((p % bins + 1))" >/dev/null &
  pids+=($!)
done
attached() {
  curl -s "127.0.0.1:$port/targets" |
    python3 -c '
import json, sys
try:
    print(sum(len(t["processes"]) for t in json.load(sys.stdin).values()))
except ValueError:
    print(0)  # not answering yet
'
}
until [ "$(attached)" -ge "$procs" ]; do
  sleep 0.1
  if [ "$(echo "$(date +%s.%N) - $started > 300" | bc)" = 1 ]; then
    echo "not all attached after 300 s: $(attached) of $procs" >&2
    exit 1
  fi
done
echo "processes=$procs binaries=$bins all attached after $(echo "$(date +%s.%N) - $started" | bc | cut -c1-5) s"
memory=$(bash bench/map-memory.sh $agent)
kib=${memory##*map_memlock_kib=}
echo "agent $memory per_process_kib=$((kib / procs))"
ticks() { awk '{print $14 + $15}' /proc/$agent/stat; }
before=$(ticks)
sleep "$seconds"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "agent cpu_percent_of_a_core=$(echo "scale=2; 100 * ($after - $before) / $hz / $seconds" | bc)"
echo "agent rss_anon_kb=$(awk '/RssAnon/ {print $2}' /proc/$agent/status)"
metrics=$(curl -s "127.0.0.1:$port/metrics")
calls=$(awk '/^escapade_calls_total/ {s += $2} END {print s}' <<<"$metrics")
echo "calls_total=$calls events=$(awk '/^escapade_events_total/ {print $2}' <<<"$metrics") dropped=$(awk '/^escapade_events_dropped_total/ {print $2}' <<<"$metrics")"
