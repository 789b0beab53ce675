#!/usr/bin/env bash
# `bash bench/detach.sh [RUNS]` (root, from the workspace, go on PATH): how long escapade takes
# to detach: from SIGINT to its exit, `escapade params` on the methods of encoding/json's
# encoder and decoder (bench/json.go: 22 functions, 83 probes), with uprobe_multi links (the
# default) and with one perf event per uprobe (ESCAPADE_PERF_EVENT_UPROBES, as on kernels
# before 6.6). ESCAPADE names the escapade binary to run.
set -eu
runs=${1:-5}
escapade=${ESCAPADE:-target/release/escapade}
dir=$(mktemp -d)
go build -o "$dir/json" bench/json.go
"$dir/json" &
target=$!
trap 'kill $target' EXIT
sleep 0.5
functions=('encoding/json.(*encodeState).*' 'encoding/json.(*decodeState).*')
for mode in uprobe_multi perf_events; do
  for ((i = 0; i < runs; i++)); do
    if [ $mode = perf_events ]; then export ESCAPADE_PERF_EVENT_UPROBES=1; fi
    "$escapade" params --pid $target "${functions[@]}" >/dev/null 2>"$dir/err" &
    escapade_pid=$!
    unset ESCAPADE_PERF_EVENT_UPROBES
    until grep -q 'attached to' "$dir/err"; do sleep 0.05; done
    sleep 1
    start=$(date +%s%N)
    kill -INT $escapade_pid
    wait $escapade_pid
    echo "$(( ($(date +%s%N) - start) / 1000000 ))"
  done | sort -n | awk -v mode=$mode '{ t[NR] = $1 } END { printf "%s: SIGINT to exit, ms: min %d median %d max %d\n", mode, t[1], t[int((NR + 1) / 2)], t[NR] }'
done
grep 'attached to' "$dir/err"
