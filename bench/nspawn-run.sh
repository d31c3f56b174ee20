#!/usr/bin/env bash
# A pod from `rkt run --stage1-name=nspawn` to exit against systemd-nspawn alone
# booting a copy of the same prepared stage1 rootfs (same systemd, same generated
# app unit, the app rootfs copied in place of the flavor's overlay mount), in one
# hyperfine run. Usage: bench/nspawn-run.sh [RUNS]  (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-10}
work=$(mktemp -d /var/tmp/rkt-bench-nspawn.XXXXXX)
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
cleanup() { $rkt gc --grace-period=0s >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
command -v systemd-nspawn >/dev/null || { echo "bench: install systemd-container" >&2; exit 1; }

# the pod: busybox /bin/true, warm store
mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs
$rkt --insecure-options=image fetch "$work/true.aci" >/dev/null
$rkt run --stage1-name=nspawn --net=host --uuid-file-save="$work/uuid" example.com/true --exec /bin/true >/dev/null 2>&1  # warm the tree store

# the peer: a copy of that pod's stage1 rootfs (generated rkt-pod.target and
# true.service included), the app rootfs copied where the flavor mounts its
# overlay, the app's stdout/stderr FIFOs (read by rkt on the host) made plain
# files; systemd-nspawn boots the same systemd on the same target, with the
# arguments the flavor passes (minus --machine/--uuid/--hostname;
# nspawn stays in the caller's cgroups: the flavor first joins per-pod ones)
peer="$work/peer"
cp -a "$work/data/pods/run/$(cat "$work/uuid")/stage1/rootfs" "$peer"
cp -a "$work/aci/rootfs/." "$peer/opt/stage2/true/rootfs/"
rm -f "$peer"/rkt/io/std{out,err} && touch "$peer"/rkt/io/std{out,err}
reset="rm -f $peer/rkt/status/* $peer/rkt/started/* $peer/rkt/oom/*"
$reset
nspawn="systemd-nspawn --quiet --boot --directory=$peer --register=no --keep-unit --console=read-only --resolv-conf=off --timezone=off --link-journal=no --kill-signal=SIGRTMIN+4 -- --unit=rkt-pod.target --log-target=console --log-level=warning --show-status=no"
$nspawn >/dev/null 2>&1 && [ "$(cat "$peer/rkt/status/true")" = 0 ] || { echo "bench: the direct systemd-nspawn peer did not run the app" >&2; exit 1; }

hyperfine --runs "$runs" --warmup 1 --prepare "$reset" --export-json "$work/run.json" \
  -n rkt-nspawn "$rkt run --stage1-name=nspawn --net=host example.com/true --exec /bin/true" \
  -n systemd-nspawn "$nspawn" >&2
node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results;
console.log(`rkt-nspawn median ${(med(r[0]) * 1000).toFixed(1)} ms, systemd-nspawn median ${(med(r[1]) * 1000).toFixed(1)} ms, ratio ${(med(r[0]) / med(r[1])).toFixed(2)}`);
' "$work/run.json"
