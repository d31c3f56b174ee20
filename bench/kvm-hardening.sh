#!/usr/bin/env bash
# The cost of the VM-boundary hardening: a kvm pod from `rkt run` to exit
# with the stage1 image of this tree against the stage1 image built from
# BASE (a commit before the hardening), in one hyperfine run, same rkt
# stage0, same store, same image. Usage (as root, after scripts/setup.sh):
#   bench/kvm-hardening.sh [BASE [RUNS]]
# BASE defaults to 86b5539, the last commit before the hardening work.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
base=${1:-86b5539}
runs=${2:-10}
work=$(mktemp -d /var/tmp/rkt-bench-hard.XXXXXX)
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib --insecure-options=image"
cleanup() {
  $rkt gc --grace-period=0s >/dev/null 2>&1 || true
  git worktree remove --force "$work/base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# the base stage1 image, built from its own tree (node_modules shared)
git worktree add --detach "$work/base" "$base" >/dev/null 2>&1
ln -s "$PWD/node_modules" "$work/base/node_modules"
(cd "$work/base" && npx tsc -p tsconfig.json >/dev/null && node dist/stage1-kvm/build.js "$work/base.aci" >/dev/null)
node dist/stage1-kvm/build.js "$work/now.aci" >/dev/null

mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs
$rkt fetch "$work/true.aci" >/dev/null
for s in base now; do $rkt run --stage1-path="$work/$s.aci" --net=none example.com/true >/dev/null 2>&1; done  # warm the tree store

hyperfine --runs "$runs" --warmup 1 --export-json "$work/run.json" \
  -n hardened "$rkt run --stage1-path=$work/now.aci --net=none example.com/true 2>/dev/null" \
  -n before "$rkt run --stage1-path=$work/base.aci --net=none example.com/true 2>/dev/null" >&2
node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
console.log(`hardened median ${med(r[0]).toFixed(3)} s, before (${process.argv[2]}) median ${med(r[1]).toFixed(3)} s, ratio ${(med(r[0]) / med(r[1])).toFixed(3)}`);
' "$work/run.json" "$base"
