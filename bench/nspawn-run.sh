#!/usr/bin/env bash
# A pod from `rkt run --stage1-name=nspawn` to exit against systemd-nspawn alone
# booting a copy of the same prepared stage1 rootfs (same systemd, same generated
# app unit, the app rootfs copied in place of the flavor's overlay mount), in one
# hyperfine run. Usage: bench/nspawn-run.sh [RUNS]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world nspawn
runs=${1:-10}
bench_need systemd-nspawn systemd-container
bench_need hyperfine hyperfine

# the pod: busybox /bin/true, warm store
bench_true_image
$rkt run --stage1-name=nspawn --net=host --uuid-file-save="$work/uuid" example.com/true --exec /bin/true >/dev/null 2>&1  # warm the tree store

# the peer: a copy of that pod's stage1 rootfs (generated rkt-pod.target and
# true.service included), the app rootfs copied where the flavor mounts its
# overlay, the app's stdout/stderr FIFOs and the report FIFO (read by rkt on the
# host) made plain files; systemd-nspawn boots the same systemd on the same target, with the
# arguments the flavor passes (minus --machine/--uuid/--hostname;
# nspawn stays in the caller's cgroups: the flavor first joins per-pod ones)
peer="$work/peer"
cp -a "$work/data/pods/run/$(cat "$work/uuid")/stage1/rootfs" "$peer"
cp -a "$work/aci/rootfs/." "$peer/opt/stage2/true/rootfs/"
rm -f "$peer"/rkt/io/std{out,err} "$peer/rkt/report" && touch "$peer"/rkt/io/std{out,err} "$peer/rkt/report"
reset="rm -f $peer/rkt/status/* $peer/rkt/started/* $peer/rkt/oom/*"
$reset
nspawn="systemd-nspawn --quiet --boot --directory=$peer --register=no --keep-unit --console=read-only --resolv-conf=off --timezone=off --link-journal=no --kill-signal=SIGRTMIN+4 -- --unit=rkt-pod.target --log-target=console --log-level=warning --show-status=no"
$nspawn >/dev/null 2>&1 && [ "$(cat "$peer/rkt/status/true")" = 0 ] || { echo "bench: the direct systemd-nspawn peer did not run the app" >&2; exit 1; }

hyperfine --runs "$runs" --warmup 1 --prepare "$reset" --export-json "$work/run.json" \
  -n rkt-nspawn "$rkt run --stage1-name=nspawn --net=host example.com/true --exec /bin/true" \
  -n systemd-nspawn "$nspawn" >&2
bench_medians "$work/run.json"
