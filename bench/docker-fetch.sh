#!/usr/bin/env bash
# docker:// fetch throughput: `rkt fetch docker://127.0.0.1:PORT/img:tag` of
# a three-layer image of about 100 MB (compressed) from Debian's
# docker-registry on loopback, against `skopeo copy docker://... oci:DIR` of
# the same image, in one hyperfine run. Prints the ratio of medians.
# Usage: bench/docker-fetch.sh [RUNS]   (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-5}
work=$(mktemp -d /var/tmp/rkt-bench-docker.XXXXXX)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done

# three layers of about 45 MB of uncompressed system files each, in a stable order
umoci init --layout "$work/layout"
umoci new --image "$work/layout:1"
set +o pipefail  # awk stops reading early on purpose
find /usr/lib/x86_64-linux-gnu /usr/share /usr/bin -xdev -type f -links 1 -printf '%s %p\n' 2>/dev/null | sort -k2 |
  awk '{ total += $1; n = int(total / 45000000); if (n > 2) exit; print n, $2 }' > "$work/files"
set -o pipefail
for layer in 0 1 2; do
  umoci unpack --image "$work/layout:1" "$work/bundle" >/dev/null
  awk -v l="$layer" '$1 == l { print $2 }' "$work/files" | tar -cf - --files-from=- 2>/dev/null | tar -xf - -C "$work/bundle/rootfs"
  umoci repack --image "$work/layout:1" "$work/bundle"
  rm -rf "$work/bundle"
done
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$work/layout:1" "docker://127.0.0.1:$port/bench/img:1"
echo "image: $(du -sb "$work/layout/blobs" | cut -f1) bytes of blobs, 3 layers" >&2

img="docker://127.0.0.1:$port/bench/img:1"
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib --insecure-options=image,http"
hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -rf $work/data $work/out; sync" \
  -n rkt "$rkt fetch $img" \
  -n skopeo "skopeo copy --quiet --insecure-policy --src-tls-verify=false $img oci:$work/out:1" >&2
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const a = med(r[0]), b = med(r[1]);
console.log(`rkt median ${a.toFixed(3)} s, skopeo median ${b.toFixed(3)} s, ratio ${(a / b).toFixed(2)}`);
' "$work/result.json"
