#!/usr/bin/env bash
# The CLI's own start-up: `rkt version` and `rkt list` (an empty data dir) against Node.js
# doing nothing (`node -e 0`), in one run (interleaved).
# Usage: bench/version.sh [RUNS]  (after npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world version
runs=${1:-30}

bench_base 'base rkt version' '@RKT@ version'
bench_time "$runs" 3 "$work/version.json" \
  'rkt version' "$rkt version" \
  'node -e 0' 'node -e 0' "${base_cmds[@]}"
base_cmds=()
bench_base 'base rkt list' '@RKT@ list'
bench_time "$runs" 3 "$work/list.json" \
  'rkt list' "$rkt list" \
  'node -e 0' 'node -e 0' "${base_cmds[@]}"
bench_medians "$work/version.json"
bench_medians "$work/list.json"
