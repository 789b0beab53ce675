#!/usr/bin/env bash
# `bash bench/json-params.sh` (root, from the workspace, go on PATH): `escapade params` on the
# functions of Go's own encoding/json whose parameters the compiler says leak, for 8 s of the
# package's benchmarks, worked out in the kernel (the default) and from an event per call
# (--events): calls seen, events sent and lost, returns without entry. Each run starts the
# benchmarks under escapade, so no call is running at attach. ESCAPADE names the escapade binary.
set -eu
escapade=$(realpath "${ESCAPADE:-target/release/escapade}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
goroot=$(go env GOROOT)
go test -c -o "$dir/json.test" encoding/json
# "FILE:LINE:COL: leaking param: NAME" -> FILE:LINE of the function's declaration.
go build -gcflags='encoding/json/...=-m' -o /dev/null encoding/json 2>&1 |
  awk -F: '/leaking param/ { print $1 ":" $2 }' | sort -u >"$dir/leaking"
go tool nm "$dir/json.test" | awk '$2 == "T" && $3 ~ /^encoding\/json/ { print "0x" $1, $3 }' >"$dir/syms"
cut -d' ' -f1 "$dir/syms" | go tool addr2line "$dir/json.test" | paste - - | cut -f2 >"$dir/lines"
paste -d' ' "$dir/syms" "$dir/lines" | awk 'NR == FNR { leak[$1] = 1; next } ($3 in leak) { print $2 }' \
  "$dir/leaking" - >"$dir/functions"
echo "$(wc -l <"$dir/functions") functions"
for mode in kernel events; do
  extra=()
  if [ $mode = events ]; then extra=(--events); fi
  (cd "$goroot/src/encoding/json" &&
    "$escapade" params --json --duration 8s "${extra[@]}" $(cat "$dir/functions") -- \
      "$dir/json.test" -test.run='^$' -test.bench=. -test.benchtime=300ms \
      >"$dir/out.$mode" 2>/dev/null &
    # Detached after 8 s, escapade waits for the benchmarks to end: end them.
    until grep -qs params_summary "$dir/out.$mode"; do sleep 0.2; done
    pkill -f "$dir/json.test" || true
    wait 2>/dev/null || true)
  grep -m1 params_summary "$dir/out.$mode" >"$dir/summary.$mode"
  python3 - "$mode" "$dir/summary.$mode" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
calls = sum(f["calls"] for f in s["functions"])
print(f"{sys.argv[1]}: calls {calls}, events {s['events']}, dropped {s['dropped']}, "
      f"returns without entry {s['unmatched_returns']}, unverified moves {s['unverified_moves']}")
PY
done
