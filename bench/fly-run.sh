#!/usr/bin/env bash
# Pod start-to-exit with the fly stage1 against runc on the same rootfs, and
# `rkt list` with 1,000 exited pods. Usage: bench/fly-run.sh [RUNS]
# (as root, after scripts/setup.sh; needs Debian's runc and hyperfine)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-20}
work=$(mktemp -d /var/tmp/rkt-bench-fly.XXXXXX)
trap 'rm -rf "$work"' EXIT
command -v runc >/dev/null || { echo "bench: install runc (apt-get install runc)" >&2; exit 1; }

mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs

# the runc bundle: the same rootfs, a default spec running /bin/true
mkdir -p "$work/bundle"
cp -a "$work/aci/rootfs" "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"\/bin\/true"/' config.json)

rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
$rkt --insecure-options=image fetch "$work/true.aci" >/dev/null
$rkt --insecure-options=image run --stage1-name=fly "$work/true.aci" >/dev/null  # warm the tree store
hyperfine --runs "$runs" --warmup 2 --export-json "$work/run.json" \
  -n rkt-fly "$rkt run --stage1-name=fly --insecure-options=image example.com/true --exec /bin/true" \
  -n runc "runc run --bundle $work/bundle bench-\$RANDOM\$RANDOM" >&2

# rkt list over 1,000 exited pods (made by copying one exited pod directory)
one=$(ls "$work/data/pods/run" | head -1)
for i in $(seq 1 1000); do
  u=$(cat /proc/sys/kernel/random/uuid)
  cp -a "$work/data/pods/run/$one" "$work/data/pods/run/$u"
done
hyperfine --runs 10 --warmup 2 --export-json "$work/list.json" -n 'rkt list (1000+ pods)' "$rkt list --no-legend > /dev/null" >&2
node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
const l = JSON.parse(fs.readFileSync(process.argv[2], "utf8")).results[0];
console.log(`rkt-fly median ${(med(r[0]) * 1000).toFixed(1)} ms, runc median ${(med(r[1]) * 1000).toFixed(1)} ms, ratio ${(med(r[0]) / med(r[1])).toFixed(2)}`);
console.log(`rkt list with 1000+ exited pods: median ${(med(l) * 1000).toFixed(1)} ms`);
' "$work/run.json" "$work/list.json"
