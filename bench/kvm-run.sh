#!/usr/bin/env bash
# A kvm pod from `rkt run` to exit against the floor: the same qemu booting the
# same kernel with an initramfs whose init powers off at once, in one
# hyperfine run; then the host memory (RSS) of qemu and its helpers for an
# idle one-app pod. Usage: bench/kvm-run.sh [RUNS]  (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-10}
work=$(mktemp -d /var/tmp/rkt-bench-kvm.XXXXXX)
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
cleanup() { $rkt gc --grace-period=0s >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

kernel=$(kernel-config/build.sh --print-path)
tsc=$(kernel-config/host-tsc-khz.sh)
accel=tcg
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; fi

# the floor: busybox init that powers off at once
mkdir -p "$work/initramfs/bin"
cp /bin/busybox "$work/initramfs/bin/busybox"
printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$work/initramfs/init"
chmod +x "$work/initramfs/init"
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/floor.cpio.gz"
floor="qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on,acpi=on -accel $accel -cpu max -smp 1 -m 256 -nodefaults -no-user-config -display none -no-reboot -serial null -kernel $kernel -initrd $work/floor.cpio.gz -append 'console=ttyS0 quiet panic=-1 tsc_early_khz=$tsc'"

# the pod: busybox /bin/true, warm store
mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true sleep; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs
$rkt --insecure-options=image fetch "$work/true.aci" >/dev/null
$rkt run --stage1-name=kvm example.com/true >/dev/null 2>&1  # warm the tree store

hyperfine --runs "$runs" --warmup 1 --export-json "$work/run.json" \
  -n rkt-kvm "$rkt run --stage1-name=kvm example.com/true --exec /bin/true 2>/dev/null" \
  -n floor "$floor" >&2

# idle one-app pod: RSS of everything the pod runs on the host
$rkt run --stage1-name=kvm --uuid-file-save="$work/uuid" example.com/true --exec /bin/sleep -- 600 >/dev/null 2>&1 &
for _ in $(seq 1 120); do
  [ -s "$work/uuid" ] && $rkt status "$(cat "$work/uuid")" 2>/dev/null | grep -q '^state=running' && [ -e "$(ls -d "$work"/data/pods/run/*/ready 2>/dev/null | head -1)" ] && break
  sleep 0.5
done
sleep 2
uuid=$(cat "$work/uuid")
rss() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' '; }
total=0
report=""
for pid in $(pgrep -f "$uuid"); do
  comm=$(ps -o comm= -p "$pid" 2>/dev/null || true)
  r=$(rss "$pid")
  [ -n "$r" ] || continue
  report="$report $comm=${r}KiB"
  total=$((total + r))
done
$rkt stop --force "$uuid" >/dev/null 2>&1 || true
wait || true
node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
console.log(`accelerator ${process.argv[2]}: rkt-kvm median ${med(r[0]).toFixed(3)} s, floor median ${med(r[1]).toFixed(3)} s, ratio ${(med(r[0]) / med(r[1])).toFixed(2)}`);
' "$work/run.json" "$accel"
echo "idle one-app pod, host RSS: total ${total} KiB:${report}"
