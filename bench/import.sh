#!/usr/bin/env bash
# Import throughput: `rkt fetch` + `rkt image render` of a large, many-file
# ACI against the floor of hashing and unpacking the same file
# (`sha512sum` + `tar -x`), in one hyperfine run. Prints the ratio of medians.
# Usage: bench/import.sh [RUNS]   (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-5}
work=$(mktemp -d /var/tmp/rkt-bench-import.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ~250 MB in many files: the first regular files of the system's libraries
# and shared data, in a stable order, copied into a rootfs
mkdir -p "$work/aci/rootfs"
set +o pipefail  # awk stops reading early on purpose
find /usr/lib/x86_64-linux-gnu /usr/share -xdev -type f -links 1 -printf '%s %p\n' 2>/dev/null | sort -k2 |
  awk '{ total += $1; print $2; if (total > 250000000) exit }' > "$work/files"
tar -cf - --files-from="$work/files" 2>/dev/null | tar -xf - -C "$work/aci/rootfs"
set -o pipefail
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench-large","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/large.aci" manifest rootfs
rm -rf "$work/aci"
files=$(tar -tf "$work/large.aci" | wc -l)
bytes=$(stat -c %s "$work/large.aci")
echo "image: $bytes bytes, $files entries" >&2

rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib --insecure-options=image"
hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -rf $work/data $work/out; sync" \
  -n rkt "$rkt fetch $work/large.aci > $work/id && $rkt image render \$(cat $work/id) $work/out" \
  -n 'sha512sum+tar' "sha512sum $work/large.aci >/dev/null && mkdir -p $work/out && tar -xf $work/large.aci -C $work/out" >&2
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const a = med(r[0]), b = med(r[1]);
console.log(`rkt median ${a.toFixed(3)} s, sha512sum+tar median ${b.toFixed(3)} s, ratio ${(a / b).toFixed(2)}`);
' "$work/result.json"
