#!/usr/bin/env bash
# Pod networking (CNI): (a) the set-up and tear-down cost per pod, as the wall
# time of `rkt run --net=default` against `--net=none` for nspawn and kvm in one
# hyperfine run, plus the run entrypoint's own --debug timings; (b) TCP
# throughput from the host to an app in a kvm pod against the same to an app in
# an nspawn pod (200 MB to busybox nc -e dd of=/dev/null bs=64k over the pod IP).
# Traffic goes only to the pods this script starts. Usage: bench/net.sh [RUNS]
# (as root, after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-5}
bytes=200000000
work=$(mktemp -d /var/tmp/rkt-bench-net.XXXXXX)
rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
cleanup() {
  for f in "$work"/uuid-*; do [ -s "$f" ] && $rkt stop --force "$(cat "$f")" >/dev/null 2>&1 || true; done
  wait || true
  $rkt gc --grace-period=0s >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

accel=tcg
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; fi

# the image: busybox; /sink.sh discards its input (dd bs=64k) and reports dd's record count
mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true nc dd; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
printf 'exec dd of=/dev/null bs=65536 iflag=fullblock 2>&1\n' > "$work/aci/rootfs/sink.sh"
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/net","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/net.aci" manifest rootfs
$rkt --insecure-options=image fetch "$work/net.aci" >/dev/null 2>&1
for f in nspawn kvm; do $rkt run --stage1-name=$f --net=none example.com/net >/dev/null 2>&1; done  # warm the tree store

# (a) wall time with and without the default network (ptp + host-local + NAT)
hyperfine --runs "$runs" --warmup 1 --export-json "$work/run.json" \
  -n nspawn-default "$rkt run --stage1-name=nspawn --net=default example.com/net --exec /bin/true" \
  -n nspawn-none "$rkt run --stage1-name=nspawn --net=none example.com/net --exec /bin/true" \
  -n kvm-default "$rkt run --stage1-name=kvm --net=default example.com/net --exec /bin/true 2>/dev/null" \
  -n kvm-none "$rkt run --stage1-name=kvm --net=none example.com/net --exec /bin/true 2>/dev/null" >&2
# the run entrypoint's own measurement of CNI set-up and tear-down (ms)
debug_times() {
  for _ in 1 2 3; do
    $rkt --debug run --stage1-name="$1" --net=default example.com/net --exec /bin/true 2>&1 |
      grep -oE 'network (set up|torn down) in [0-9]+ ms' | grep -oE '[0-9]+' | paste -sd/ -
  done | paste -sd' ' -
}
lib_nspawn=$(debug_times nspawn)
lib_kvm=$(debug_times kvm)

# (b) throughput: one pod per flavor serving one connection on port 5000
push() {  # push FLAVOR -> "seconds bytes-dd-reported"
  $rkt run --stage1-name="$1" --net=default --uuid-file-save="$work/uuid-$1" example.com/net \
    --exec /bin/nc -- -l -p 5000 -e /bin/sh /sink.sh >/dev/null 2>&1 &
  for _ in $(seq 1 100); do [ -s "$work/uuid-$1" ] && break; sleep 0.2; done
  local uuid; uuid=$(cat "$work/uuid-$1")
  $rkt status --wait-ready=180s "$uuid" >/dev/null
  local ip
  ip=$($rkt status --format=json "$uuid" | node -e 'const s = JSON.parse(require("fs").readFileSync(0, "utf8")); process.stdout.write((s.networks ?? []).find((n) => n.ip4)?.ip4 ?? "")')
  [ -n "$ip" ] || { echo "bench: no pod IP for the $1 pod" >&2; exit 1; }
  node -e '
const net = require("net");
const [host, port, bytes] = [process.argv[1], 5000, Number(process.argv[2])];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  let s;
  for (let i = 0; ; i++) {  // the guest may listen a little after ready
    try { s = await new Promise((ok, ko) => { const c = net.connect({ host, port, allowHalfOpen: true }, () => ok(c)); c.once("error", ko); }); break; }
    catch (e) { if (i > 300) throw e; await sleep(100); }
  }
  const t0 = performance.now();
  const chunk = Buffer.alloc(1 << 20, 0x61);
  let reply = "";
  s.on("data", (d) => (reply += d));
  const closed = new Promise((r) => s.once("close", r));
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    const n = Math.min(chunk.length, bytes - sent);
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => s.once("drain", r));
  }
  s.end();
  await closed;
  const got = /(\d+\+\d+) records in/.exec(reply)?.[1] ?? "?";
  console.log(`${((performance.now() - t0) / 1000).toFixed(3)} ${got}`);
})().catch((e) => { console.error(e.message); process.exit(1); });
' "$ip" "$bytes"
  $rkt status --wait=60s "$uuid" >/dev/null 2>&1 || $rkt stop --force "$uuid" >/dev/null 2>&1 || true
  wait || true
}
tp_nspawn=$(push nspawn)
tp_kvm=$(push kvm)

node -e '
const fs = require("fs");
const med = (x) => { const s = [...x.times].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const r = Object.fromEntries(JSON.parse(fs.readFileSync(process.argv[1], "utf8")).results.map((x) => [x.command, med(x)]));
const [accel, libN, libK, tpN, tpK, bytes] = process.argv.slice(2);
for (const f of ["nspawn", "kvm"]) {
  const d = r[`${f}-default`], n = r[`${f}-none`];
  console.log(`${f}: --net=default median ${(d * 1000).toFixed(1)} ms, --net=none median ${(n * 1000).toFixed(1)} ms, network cost ${((d - n) * 1000).toFixed(1)} ms per pod (ratio ${(d / n).toFixed(2)})`);
}
console.log(`library set-up/tear-down (ms, 3 --debug runs): nspawn ${libN}; kvm ${libK}`);
const mbs = (t) => { const [s, got] = t.split(" "); return `${(Number(bytes) / 1e6 / Number(s)).toFixed(1)} MB/s (${s} s, dd read ${got} 64 KiB records)`; };
console.log(`throughput host -> pod, ${Number(bytes) / 1e6} MB: nspawn ${mbs(tpN)}; kvm (${accel}) ${mbs(tpK)}; kvm/nspawn ${(Number(tpN.split(" ")[0]) / Number(tpK.split(" ")[0])).toFixed(3)}`);
' "$work/run.json" "$accel" "$lib_nspawn" "$lib_kvm" "$tp_nspawn" "$tp_kvm" "$bytes"
