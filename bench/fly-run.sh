#!/usr/bin/env bash
# Pod start-to-exit with the fly stage1 against `runc run` on the same rootfs, in one
# run (interleaved), with `node -e 0` in the same rounds: the Node.js runtime's own start-up,
# which every pod of this TypeScript rkt crosses twice (stage0, the fly run entrypoint);
# then `rkt list` with 1,000 exited pods.
# Usage: bench/fly-run.sh [RUNS]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_world fly
runs=${1:-20}
bench_need runc runc
bench_need hyperfine hyperfine
bench_true_image

# the runc bundle: the same rootfs, a default spec running /bin/true
mkdir -p "$work/bundle"
cp -a "$work/aci/rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json)

$rkt run --stage1-name=fly example.com/true >/dev/null  # warm the tree store
bench_base base-rkt-fly "@RKT@ run --stage1-name=fly example.com/true --exec /bin/true"
bench_time "$runs" 2 "$work/run.json" \
  rkt-fly "$rkt run --stage1-name=fly example.com/true --exec /bin/true" \
  runc "runc run --bundle $work/bundle bench-\$\$" \
  node-e-0 "node -e 0" "${base_cmds[@]}"

# rkt list over 1,000 exited pods (made by copying one exited pod directory)
one=$(ls "$work/data/pods/run" | head -1)
for _ in $(seq 1 1000); do
  cp -a "$work/data/pods/run/$one" "$work/data/pods/run/$(cat /proc/sys/kernel/random/uuid)"
done
hyperfine --runs 10 --warmup 2 --export-json "$work/list.json" -n 'rkt list (1000+ pods)' "$rkt list --no-legend > /dev/null" >&2
bench_medians "$work/run.json"
bench_medians "$work/list.json"
