#!/usr/bin/env bash
# `bash bench/map-memory.sh PID` (root): the BPF maps and programs process PID holds (an
# escapade command or the agent), and the kernel memory its maps lock: the sum of the
# `memlock:` lines of its map fds' /proc/PID/fdinfo, as `bpftool map show` reports them.
set -eu
pid=$1
memlock=0 maps=0 programs=0
for fd in /proc/"$pid"/fd/*; do
  info=/proc/$pid/fdinfo/${fd##*/}
  [ -r "$info" ] || continue
  if grep -q '^map_type:' "$info"; then
    maps=$((maps + 1))
    memlock=$((memlock + $(awk '/^memlock:/ {print $2}' "$info")))
  elif grep -q '^prog_type:' "$info"; then
    programs=$((programs + 1))
  fi
done
echo "maps=$maps programs=$programs map_memlock_kib=$((memlock >> 10))"
