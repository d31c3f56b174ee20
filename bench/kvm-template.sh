#!/usr/bin/env bash
# The kvm template path (RKT_KVM_TEMPLATE=on) against the cold path and the qemu floor, in one
# run of interleaved rounds: a busybox /bin/true pod, warm store, --net=none (the floor has no network),
# the template made once before the runs (in $work, never the host's cache).
# Usage: bench/kvm-template.sh [RUNS]  (as root, after scripts/setup.sh, npm run build and
# node dist/stage1-kvm/build.js build/stage1-kvm.aci)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world kvm-template
runs=${1:-10}
bench_need qemu-system-x86_64 qemu-system-x86
bench_kvm_floor
bench_true_image
mkdir -m 0700 "$work/templates"
pod="$rkt run --stage1-name=kvm --net=none example.com/true --exec /bin/true"
tpl="RKT_KVM_TEMPLATE=on RKT_KVM_TEMPLATE_DIR=$work/templates"
$pod >/dev/null 2>&1  # warm the tree store
# make the template; a warning here means the template path fell back to the cold one
env RKT_KVM_TEMPLATE=on RKT_KVM_TEMPLATE_DIR="$work/templates" $pod 2>&1 >/dev/null | grep -v 'signature verification' >&2 || true
ls "$work"/templates/*.state >/dev/null || { echo "bench: no template was made" >&2; exit 1; }
# interleaved rounds (template, cold, floor, template, ...) rather than hyperfine's blocks: on a
# shared host the load moves, and each round then meets it in all three
declare -A cmd=([template]="env $tpl $pod" [cold]="$pod" [floor]="$floor")
for _ in $(seq 1 "$runs"); do
  for name in template cold floor; do
    t0=$(date +%s%N)
    eval "${cmd[$name]}" >/dev/null 2>&1 || { echo "bench: $name failed" >&2; exit 1; }
    echo "$name $(( ($(date +%s%N) - t0) / 1000 ))"
  done
done > "$work/times"
node -e '
  const fs = require("fs");
  const lines = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "));
  const results = ["template", "cold", "floor"].map((command) => ({ command, times: lines.filter((l) => l[0] === command).map((l) => Number(l[1]) / 1e6) }));
  fs.writeFileSync(process.argv[2], JSON.stringify({ results }));
' "$work/times" "$work/run.json"
echo "accelerator: $accel; template: $(du -h "$work"/templates/*.state | cut -f1)"
bench_medians "$work/run.json"
awk '{ t[$1] = t[$1] sprintf(" %.2f", $2 / 1e6) } END { for (n in t) print n ":" t[n] }' "$work/times"
