#!/usr/bin/env bash
# The CLI's own start-up: `rkt version` and `rkt list` (an empty data dir) against Node.js
# doing nothing (`node -e 0`), in one hyperfine run.
# Usage: bench/version.sh [RUNS]  (after npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world version
runs=${1:-30}
bench_need hyperfine hyperfine

bench_base 'base rkt version' '@RKT@ version'
hyperfine --runs "$runs" --warmup 3 --export-json "$work/version.json" \
  -n 'rkt version' "$rkt version" \
  -n 'node -e 0' 'node -e 0' "${base_cmds[@]}" >&2
base_cmds=()
bench_base 'base rkt list' '@RKT@ list'
hyperfine --runs "$runs" --warmup 3 --export-json "$work/list.json" \
  -n 'rkt list' "$rkt list" \
  -n 'node -e 0' 'node -e 0' "${base_cmds[@]}" >&2
bench_medians "$work/version.json"
bench_medians "$work/list.json"
