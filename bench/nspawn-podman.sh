#!/usr/bin/env bash
# A pod from `rkt run --stage1-name=nspawn` to exit against `podman run --rm` (Debian's
# podman on runc) of the same busybox rootfs, both without a network, in one run (interleaved),
# and against the flavor's own floor in the same rounds: systemd-nspawn alone booting a copy of
# the pod's stage1 rootfs (bench_nspawn_peer; its status reset is inside the timed command).
# podman keeps its store under the work directory; its default rlimits (nofile 1048576,
# nproc 32768) are refused where the host's hard limits are lower, so it is given small ones.
# Usage: bench/nspawn-podman.sh [RUNS]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world nspawn-podman
runs=${1:-10}
bench_need podman podman
bench_true_image

podman="podman --root $work/podman/root --runroot $work/podman/run"
bench_on_exit "$podman system reset --force"
tar -C "$work/aci/rootfs" -c . | $podman import --quiet - localhost/true >/dev/null
peer="$podman run --rm --network=none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 localhost/true /bin/true"
$peer || { echo "bench: podman could not run the image" >&2; exit 1; }
$rkt run --stage1-name=nspawn --net=none --uuid-file-save="$work/uuid" example.com/true --exec /bin/true >/dev/null  # warm the tree store
bench_nspawn_peer "$(cat "$work/uuid")"
bench_base base-rkt-nspawn "@RKT@ run --stage1-name=nspawn --net=none example.com/true --exec /bin/true"

bench_time "$runs" 1 "$work/run.json" \
  rkt-nspawn "$rkt run --stage1-name=nspawn --net=none example.com/true --exec /bin/true" \
  podman "$peer" \
  systemd-nspawn-floor "$nspawn_reset; $nspawn_peer >/dev/null 2>&1" "${base_cmds[@]}"
bench_medians "$work/run.json"
