#!/usr/bin/env bash
# Density and throughput (issue 14): PODS kvm pods started at once (all must succeed), the host
# memory of PODS idle kvm pods, then pods per minute in a loop of LOOP pods for each flavor
# against `runc run` and `podman run --rm` loops of the same busybox /bin/true, one after
# another in this one run (kvm: LOOP/4 pods, at least 2).
# Usage: bench/density.sh [PODS] [LOOP]   (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world density
pods=${1:-10}
loop=${2:-20}
bench_need runc runc
bench_need podman podman
bench_true_image
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"

# 1. PODS kvm pods at once, each its own `rkt run` (no network: a pod's CNI set-up would measure the plugins)
$rkt run --stage1-name=kvm --net=none example.com/true >/dev/null 2>&1  # warm the tree store
start=$(date +%s.%N)
pids=()
for i in $(seq 1 "$pods"); do
  $rkt run --stage1-name=kvm --net=none example.com/true --exec /bin/true >"$work/at-once.$i" 2>&1 &
  pids+=($!)
done
ok=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then ok=$((ok + 1)); else echo "bench: pod $((i + 1)) of the burst failed:" >&2; tail -3 "$work/at-once.$((i + 1))" >&2; fi
done
echo "$pods kvm pods started at once: $ok succeeded, all done in $(echo "$(date +%s.%N) - $start" | bc) s"

# 2. PODS idle kvm pods (sleep 600, the default VM size): the host memory of all their processes
mkdir -p "$work/idle"
idle=()
for i in $(seq 1 "$pods"); do
  $rkt run --stage1-name=kvm --net=none --uuid-file-save="$work/idle/$i" example.com/true --exec /bin/sleep -- 600 >/dev/null 2>&1 &
  idle+=($!)
  bench_on_exit "kill -9 $!"
done
for _ in $(seq 1 600); do
  [ "$(ls "$work"/data/pods/run/*/ready 2>/dev/null | wc -l)" -ge "$pods" ] && break
  sleep 1
done
sleep 5
bench_pod_memory "${idle[@]}" > "$work/idle.mem"
# qemu names itself after the pod (rkt-<uuid>); virtiofsd maps the guest memory too
sed -i -E 's/^  rkt-[0-9a-f]{8}-[0-9a-f]+ /  qemu /' "$work/idle.mem"
echo "VMs running: $(grep -c '^  qemu ' "$work/idle.mem")"
echo "$pods idle kvm pods, host memory in all: RSS $((mem_rss / 1024)) MiB, PSS $((mem_pss / 1024)) MiB, guest memory touched $((mem_guest / 1024)) MiB; per pod beyond the guest memory: RSS $(((mem_rss - mem_guest) / 1024 / pods)) MiB, PSS $(((mem_pss - mem_guest) / 1024 / pods)) MiB"
awk '{ n[$1]++; r[$1] += $5; p[$1] += $8 } END { for (c in n) printf "  %-16s x%-3d RSS %7d KiB per process  PSS %7d KiB\n", c, n[c], r[c] / n[c], p[c] / n[c] }' "$work/idle.mem"
for f in "$work"/idle/*; do $rkt stop --force "$(cat "$f")" >/dev/null 2>&1 || true; done
wait "${idle[@]}" 2>/dev/null || true

# 3. pods per minute: LOOP pods in a row per flavor, and the same for runc and podman
mkdir -p "$work/bundle"
cp -a "$work/aci/rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json)
podman="podman --root $work/podman/root --runroot $work/podman/run"
bench_on_exit "$podman system reset --force"
tar -C "$work/aci/rootfs" -c . | $podman import --quiet - localhost/true >/dev/null
$rkt run --stage1-name=fly example.com/true >/dev/null 2>&1  # warm the tree stores
$rkt run --stage1-name=nspawn --net=none example.com/true >/dev/null 2>&1
per_minute() { # NAME COUNT COMMAND...
  local name=$1 count=$2 s e i
  shift 2
  s=$(date +%s.%N)
  for i in $(seq 1 "$count"); do "$@" >/dev/null 2>&1 || { echo "bench: $name run $i failed" >&2; exit 1; }; done
  e=$(echo "$(date +%s.%N) - $s" | bc -l)
  printf '  %-8s %4d pods in %6.1f s: %6.1f pods per minute\n' "$name" "$count" "$e" "$(echo "$count * 60 / $e" | bc -l)"
}
echo "pods per minute, one after another:"
per_minute runc "$loop" bash -c "runc run --bundle $work/bundle bench-\$RANDOM\$RANDOM"
per_minute podman "$loop" $podman run --rm --network=none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 localhost/true /bin/true
per_minute fly "$loop" $rkt run --stage1-name=fly example.com/true --exec /bin/true
per_minute nspawn "$loop" $rkt run --stage1-name=nspawn --net=none example.com/true --exec /bin/true
kvm_loop=$((loop / 4 > 2 ? loop / 4 : 2))
per_minute kvm "$kvm_loop" $rkt run --stage1-name=kvm --net=none example.com/true --exec /bin/true
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
