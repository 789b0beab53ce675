#!/usr/bin/env bash
# `bash bench/model-memory.sh BIN` (root, from the workspace): the anonymous memory (RssAnon)
# and peak (VmHWM) of a one-shot `escapade trace --pid PID main.hot` and of `escapade agent
# --exe BIN main.hot`, each 20 s after it started, on a running BIN (one with a main.hot, such
# as the binaries bench/bigservice.sh builds). ESCAPADE names the escapade binary to run.
set -eu
bin=$1
escapade=${ESCAPADE:-target/release/escapade}
echo "$bin: $(stat -c %s "$bin") bytes, escapade: $escapade"
"$bin" > /dev/null &
target=$!
sleep 1
memory() { awk '/VmHWM|RssAnon/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"; echo; }
"$escapade" trace --pid $target -q -d 25s main.hot > /dev/null 2>&1 &
trace=$!
sleep 20
echo "trace: $(memory $trace)"
wait $trace
"$escapade" agent --listen 127.0.0.1:9478 --exe "$bin" main.hot 2> /dev/null &
agent=$!
sleep 20
echo "agent: $(memory $agent)"
kill -TERM $agent
wait $agent || true
kill $target
