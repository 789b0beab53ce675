#!/usr/bin/env bash
# `bash bench/agent-memory.sh [MINUTES]` (root, from the workspace, go and curl on PATH): the
# agent's anonymous memory (RssAnon) and open fds every 30 s, and the events it took and lost,
# with bench/hot.go traced (main.hot, entries and returns: well over 100k events/s) and every
# allocation counted; then SIGTERM. ESCAPADE names the escapade binary to run. TARGET names
# another program to run and trace instead of bench/hot.go, one with a main.hot: the service-
# sized one `bash bench/bigservice.sh DIR` builds as DIR/big calls it about 50,000 times a
# second.
set -eu
minutes=${1:-3}
escapade=${ESCAPADE:-target/release/escapade}
dir=$(mktemp -d)
target_exe=${TARGET:-$dir/hot}
[ -n "${TARGET:-}" ] || go build -o "$dir/hot" bench/hot.go
echo "target $target_exe: $(stat -c %s "$target_exe") bytes"
"$escapade" agent --listen 127.0.0.1:9477 --exe "$target_exe" --allocs exact main.hot 2>"$dir/agent.log" &
agent=$!
sleep 1
"$target_exe" > /dev/null &
target=$!
for ((s = 0; s <= minutes * 60; s += 30)); do
  rss=$(awk '/RssAnon/ {print $2}' /proc/$agent/status)
  fds=$(ls /proc/$agent/fd | wc -l)
  metrics=$(curl -s 127.0.0.1:9477/metrics)
  events=$(awk '/^escapade_events_total/ {print $2}' <<<"$metrics")
  dropped=$(awk '/^escapade_events_dropped_total/ {print $2}' <<<"$metrics")
  echo "t=${s}s rss_anon_kb=$rss fds=$fds events=$events dropped=$dropped"
  sleep 30
done
kill -TERM $agent; wait $agent; echo "agent exit after SIGTERM: $?"
kill $target
