#!/usr/bin/env bash
# The kvm template path (RKT_KVM_TEMPLATE=on) against the cold path and the qemu floor, in one
# hyperfine run: a busybox /bin/true pod, warm store, --net=none (the floor has no network),
# the template made once before the runs (in $work, never the host's cache).
# Usage: bench/kvm-template.sh [RUNS]  (as root, after scripts/setup.sh, npm run build and
# node dist/stage1-kvm/build.js build/stage1-kvm.aci)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world kvm-template
runs=${1:-10}
bench_need hyperfine hyperfine
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
hyperfine --runs "$runs" --warmup 1 --export-json "$work/run.json" \
  -n template "env $tpl $pod 2>/dev/null" \
  -n cold "$pod 2>/dev/null" \
  -n floor "$floor" >&2
echo "accelerator: $accel; template: $(du -h "$work"/templates/*.state | cut -f1)"
bench_medians "$work/run.json"
