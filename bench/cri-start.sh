#!/usr/bin/env bash
# A CRI pod start through containerd 1.6 with this runtime against containerd's own runc
# handler, in one run: RunPodSandbox + CreateContainer + StartContainer until the container
# runs (busybox httpd from an image imported into a private containerd, the pod on a CNI
# bridge), timed from the first call; each pod removed untimed before the next.
# HANDLER is rkt-kvm (default) or rkt-nspawn. The anchor for real KVM hosts: Kata Containers
# with Cloud Hypervisor starts a CRI pod in 850-950 ms.
# Usage: bench/cri-start.sh [RUNS] [HANDLER]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world cri-start
runs=${1:-10}
handler=${2:-rkt-kvm}
case $handler in
  rkt-kvm | rkt-nspawn) ;;
  *) echo "bench: HANDLER is rkt-kvm or rkt-nspawn (runc is the peer), not $handler" >&2; exit 1 ;;
esac
bench_need containerd containerd
bench_need ctr containerd
accel=tcg
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; fi
node bench/cri-start.mjs "$work/cri.json" "$runs" "$handler" runc
if [ "$handler" = rkt-kvm ]; then echo "accelerator: $accel"; fi
bench_medians "$work/cri.json"
