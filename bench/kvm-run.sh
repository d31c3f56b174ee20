#!/usr/bin/env bash
# A kvm pod from `rkt run` to exit against the floor: the same qemu booting the same kernel
# with an initramfs whose init powers off at once, in one run (interleaved); then the host memory
# (RSS and PSS) of every process of an idle one-app pod, `rkt run` itself included, and of an
# idle node process (the floor of the pod's run entrypoint).
# Usage: bench/kvm-run.sh [RUNS]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world kvm
runs=${1:-10}
bench_need qemu-system-x86_64 qemu-system-x86

bench_kvm_floor

# the pod: busybox /bin/true, warm store, no network (the floor has none)
bench_true_image
$rkt run --stage1-name=kvm --net=none example.com/true >/dev/null 2>&1  # warm the tree store
bench_base base-rkt-kvm "@RKT@ run --stage1-name=kvm --net=none example.com/true --exec /bin/true 2>/dev/null"
bench_time "$runs" 1 "$work/run.json" \
  rkt-kvm "$rkt run --stage1-name=kvm --net=none example.com/true --exec /bin/true 2>/dev/null" \
  floor "$floor" "${base_cmds[@]}"
echo "accelerator: $accel"
bench_medians "$work/run.json"

# an idle one-app pod (no memory isolator: the default VM size): the RSS of `rkt run` and of
# every process under it, read once the app runs
$rkt run --stage1-name=kvm --net=none --uuid-file-save="$work/uuid" example.com/true --exec /bin/sleep -- 600 >/dev/null 2>&1 &
stage0=$!
bench_on_exit "kill -9 $stage0"
for _ in $(seq 1 240); do
  [ -s "$work/uuid" ] && [ -e "$(ls -d "$work"/data/pods/run/*/ready 2>/dev/null | head -1)" ] && break
  sleep 0.5
done
[ -s "$work/uuid" ] || { echo "bench: the idle pod did not start" >&2; exit 1; }
sleep 2
# RSS as the issue counts it; PSS too, which shares the pages several processes map (node's
# own code) out among them instead of counting them in each; and the guest memory qemu holds
bench_pod_memory "$stage0"
echo "idle one-app kvm pod, host memory in all: RSS $((mem_rss / 1024)) MiB, PSS $((mem_pss / 1024)) MiB, guest memory touched $((mem_guest / 1024)) MiB, RSS beyond it $(((mem_rss - mem_guest) / 1024)) MiB"
$rkt stop --force "$(cat "$work/uuid")" >/dev/null 2>&1 || true
wait || true

# the floor of the pod's resident Node.js process (the run entrypoint): node doing nothing
node -e 'setTimeout(() => {}, 1e9)' &
idle=$!
bench_on_exit "kill -9 $idle"
sleep 1
echo "an idle node process: RSS $(ps -o rss= -p "$idle" | tr -d ' ') KiB, PSS $(awk '/^Pss:/ { print $2 }' /proc/"$idle"/smaps_rollup) KiB"
kill "$idle"
wait "$idle" 2>/dev/null || true
