#!/usr/bin/env bash
# What qemu's confinement costs a kvm pod: `rkt run` of a busybox /bin/true pod (warm store,
# default network) with this tree's stage1 against a stage1 built from BASE (a commit before
# the confinement; default 86b5539, main before it), in one hyperfine run. BASE is built in a
# temporary git worktree that is removed afterwards.
# Usage: bench/kvm-hardening.sh [RUNS] [BASE]  (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-10}
base=${2:-86b5539}
work=$(mktemp -d /var/tmp/rkt-bench-hardening.XXXXXX)
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
cleanup() {
  $rkt gc --grace-period=0s >/dev/null 2>&1 || true
  git worktree remove --force "$work/base-tree" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# the two stage1 images
node dist/stage1-kvm/build.js "$work/hardened.aci" >/dev/null
git worktree add --detach "$work/base-tree" "$base" >/dev/null 2>&1
ln -s "$(readlink -f node_modules)" "$work/base-tree/node_modules"
(cd "$work/base-tree" && npm run --silent build >/dev/null && node dist/stage1-kvm/build.js "$work/base.aci" >/dev/null)

# the pod: busybox /bin/true, warm store
mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs
$rkt --insecure-options=image fetch "$work/true.aci" >/dev/null
for img in base hardened; do
  $rkt run --insecure-options=image --stage1-path="$work/$img.aci" example.com/true >/dev/null 2>&1  # import the stage1, warm the tree store
done

hyperfine --runs "$runs" --warmup 1 --export-json "$work/run.json" \
  -n "base ($base)" "$rkt run --insecure-options=image --stage1-path=$work/base.aci example.com/true --exec /bin/true 2>/dev/null" \
  -n hardened "$rkt run --insecure-options=image --stage1-path=$work/hardened.aci example.com/true --exec /bin/true 2>/dev/null" >&2

node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const [b, h] = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
console.log(`base median ${med(b).toFixed(3)} s (mean ${b.mean.toFixed(3)} ± ${b.stddev.toFixed(3)}), hardened median ${med(h).toFixed(3)} s (mean ${h.mean.toFixed(3)} ± ${h.stddev.toFixed(3)}): ${((med(h) / med(b) - 1) * 100).toFixed(1)}% on the median`);
' "$work/run.json"
