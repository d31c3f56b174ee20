#!/usr/bin/env bash
# A pod from `rkt run --stage1-name=nspawn` to exit against systemd-nspawn alone
# booting a copy of the same prepared stage1 rootfs (same systemd, same generated
# app unit, the app rootfs copied in place of the flavor's overlay mount), in one
# hyperfine run. Usage: bench/nspawn-run.sh [RUNS]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world nspawn
runs=${1:-10}
bench_need hyperfine hyperfine

# the pod: busybox /bin/true, warm store
bench_true_image
$rkt run --stage1-name=nspawn --net=host --uuid-file-save="$work/uuid" example.com/true --exec /bin/true >/dev/null 2>&1  # warm the tree store

bench_nspawn_peer "$(cat "$work/uuid")"

hyperfine --runs "$runs" --warmup 1 --prepare "$nspawn_reset" --export-json "$work/run.json" \
  -n rkt-nspawn "$rkt run --stage1-name=nspawn --net=host example.com/true --exec /bin/true" \
  -n systemd-nspawn "$nspawn_peer" >&2
bench_medians "$work/run.json"
