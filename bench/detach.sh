#!/usr/bin/env bash
# `bash bench/detach.sh [RUNS]` (root, from the workspace, go on PATH): how long escapade takes
# to detach, as the wall time of `escapade params --duration 1s` on the methods of
# encoding/json's encoder and decoder (bench/json.go) minus that second, with uprobe_multi links
# (the default) and with one perf event per uprobe (ESCAPADE_PERF_EVENT_UPROBES, as on kernels
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
"$escapade" params --pid $target --duration 1s "${functions[@]}" 2>&1 >/dev/null | grep 'attached to'
for mode in uprobe_multi perf_events; do
  for ((i = 0; i < runs; i++)); do
    start=$(date +%s%N)
    if [ $mode = perf_events ]; then export ESCAPADE_PERF_EVENT_UPROBES=1; fi
    "$escapade" params --pid $target --duration 1s "${functions[@]}" >/dev/null 2>&1
    unset ESCAPADE_PERF_EVENT_UPROBES
    echo "$(( ($(date +%s%N) - start) / 1000000 - 1000 ))"
  done | sort -n | awk -v mode=$mode '{ t[NR] = $1 } END { printf "%s: wall - 1 s, ms: min %d median %d max %d\n", mode, t[1], t[int((NR + 1) / 2)], t[NR] }'
done
