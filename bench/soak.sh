#!/usr/bin/env bash
# Soak: N pods in a row per flavor, each one `rkt run` to exit, then a check
# that the host is left as found and that rkt list and rkt gc do not slow
# down as pods come and go (issue 15 item 19).
#
# Usage: bench/soak.sh [FLY_N [NSPAWN_N [KVM_N]]]   (default 500 500 200)
# As root, after scripts/setup.sh and the stage1 builds into build/. Runs the
# stage1 images of this tree (build/*.aci). Exits non-zero if anything of a
# pod is left on the host, or if list/gc times grow.
#
# What it checks, per flavor:
#  - nothing of any of its pods is left: no process, mount, cgroup, network
#    namespace or iptables rule naming a pod's UUID (by UUID, so that other
#    work on the machine does not disturb the verdict);
#  - the host-wide counts (mounts, cgroups, netns, links, iptables rules)
#    before and after, printed for the record (other work may move them);
#  - open descriptors of rkt's processes (stage0, stage1, qemu, virtiofsd)
#    in one pod sampled in each batch: the same in every batch;
#  - the data dir after rkt gc: the same size as before the pods (the store
#    holds no more than the images it had);
#  - rkt list (with the batch's exited pods; the least of three runs) and
#    rkt gc times per batch: the better of the last two batches at most twice
#    the better of the first two, plus 100 ms (the machine may be shared).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
repo=$PWD
counts=("${1:-500}" "${2:-500}" "${3:-200}")
flavors=(fly nspawn kvm)
declare -A aci=([fly]=build/stage1-fly.aci [nspawn]=build/stage1-coreos.aci [kvm]=build/stage1-kvm.aci)
declare -A net=([fly]=--net=host [nspawn]=--net=default [kvm]=--net=default)
BATCHES=5
failed=0

work=$(mktemp -d /var/tmp/rkt-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT
for f in "${flavors[@]}"; do [ -f "${aci[$f]}" ] || { echo "soak: ${aci[$f]} is missing; build the stage1 images (see README)" >&2; exit 1; }; done

mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
for a in sh true sleep; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/soak","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/soak.aci" manifest rootfs

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
host_counts() {
  printf 'mounts=%s cgroups=%s netns=%s links=%s iptables=%s' \
    "$(wc -l < /proc/1/mountinfo)" \
    "$(find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | wc -l)" \
    "$(ip netns list 2>/dev/null | wc -l)" \
    "$(ip -o link 2>/dev/null | wc -l)" \
    "$( (iptables-save -t nat; iptables-save -t filter) | grep -c '^-A' || true)"
}
# descriptors of every process whose command line names the world's data dir or the pod
fds_of_pod() {
  local uuid=$1 total=0 pid
  for pid in $(pgrep -f -- "$2|$uuid" || true); do
    [ "$pid" = "$$" ] && continue
    total=$((total + $(ls "/proc/$pid/fd" 2>/dev/null | wc -l)))
  done
  echo "$total"
}
# flat: the better of the last two batches at most twice the better of the first two, plus 100 ms
flat() {
  local a=("$@") n=$#
  local first=$(( a[0] < a[1 % n] ? a[0] : a[1 % n] )) last=$(( a[n - 1] < a[n - 2 < 0 ? 0 : n - 2] ? a[n - 1] : a[n - 2 < 0 ? 0 : n - 2] ))
  [ "$last" -le $((2 * first + 100)) ]
}
leftovers() {
  local uuids=$1 n=0
  local mounts cg ns ipt procs
  mounts=$(cat /proc/1/mountinfo)
  cg=$(find /sys/fs/cgroup -type d -name '*rkt*' 2>/dev/null || true)
  ns=$(ip netns list 2>/dev/null)
  ipt=$( (iptables-save -t nat; iptables-save -t filter) 2>/dev/null || true)
  procs=$(ps -eo args)
  while read -r u; do
    [ -z "$u" ] && continue
    for what in mounts cg ns ipt procs; do
      if grep -q -- "$u" <<< "${!what}"; then echo "soak: pod $u left something in $what" >&2; n=$((n + 1)); fi
    done
  done < "$uuids"
  echo "$n"
}

echo "machine: $(nproc) vCPUs, $(awk '/MemTotal/ {printf "%d GB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), node $(node --version)"
echo "command: bench/soak.sh ${counts[*]}"
for i in 0 1 2; do
  f=${flavors[$i]}
  n=${counts[$i]}
  [ "$n" -gt 0 ] || continue
  d="$work/$f"
  rkt=("$repo/bin/rkt" "--dir=$d/data" "--local-config=$d/etc" "--system-config=$d/lib" "--insecure-options=image")
  mkdir -p "$d/etc" "$d/lib"
  "${rkt[@]}" fetch "$work/soak.aci" > /dev/null 2>&1
  # one pod first: the tree store and the stage1 are in place before the baseline
  "${rkt[@]}" run "--stage1-path=${aci[$f]}" "${net[$f]}" example.com/soak > /dev/null 2>&1
  "${rkt[@]}" gc --grace-period=0s > /dev/null 2>&1
  size_before=$(du -sb "$d/data" | cut -f1)
  before=$(host_counts)
  : > "$d/uuids"
  per=$(( (n + BATCHES - 1) / BATCHES ))
  done_n=0 runs_ms=0 fails=0 batch=0
  list_ms=() gc_ms=() fds=()
  t_all=$(date +%s%N)
  while [ "$done_n" -lt "$n" ]; do
    batch=$((batch + 1))
    # one pod of the batch kept running a moment, to count the descriptors its rkt processes hold
    "${rkt[@]}" run "--stage1-path=${aci[$f]}" "${net[$f]}" "--uuid-file-save=$d/probe" example.com/soak --exec /bin/sleep -- 3 > /dev/null 2>&1 &
    probe=$!
    for _ in $(seq 1 600); do [ -s "$d/probe" ] && "${rkt[@]}" status --wait-ready=60s "$(cat "$d/probe")" > /dev/null 2>&1 && break; sleep 0.1; done
    fds+=("$(fds_of_pod "$(cat "$d/probe")" "$d/data")")
    wait "$probe" || fails=$((fails + 1))
    cat "$d/probe" >> "$d/uuids"; echo >> "$d/uuids"; rm -f "$d/probe"
    done_n=$((done_n + 1))
    for _ in $(seq 2 "$per"); do
      [ "$done_n" -lt "$n" ] || break
      t=$(date +%s%N)
      "${rkt[@]}" run "--stage1-path=${aci[$f]}" "${net[$f]}" "--uuid-file-save=$d/u" example.com/soak > /dev/null 2>> "$d/errors" || fails=$((fails + 1))
      runs_ms=$((runs_ms + $(ms "$t")))
      cat "$d/u" >> "$d/uuids"; echo >> "$d/uuids"
      done_n=$((done_n + 1))
    done
    # the least of three: other work on the machine only ever adds time
    best=
    for _ in 1 2 3; do t=$(date +%s%N); "${rkt[@]}" list --no-legend > /dev/null; x=$(ms "$t"); [ -n "$best" ] && [ "$best" -le "$x" ] || best=$x; done
    list_ms+=("$best")
    t=$(date +%s%N); "${rkt[@]}" gc --grace-period=0s > /dev/null 2>&1; gc_ms+=("$(ms "$t")")
  done
  total_s=$(( $(ms "$t_all") / 1000 ))
  after=$(host_counts)
  size_after=$(du -sb "$d/data" | cut -f1)
  left=$(leftovers "$d/uuids")
  echo
  echo "== $f: $n pods (${net[$f]}) in ${total_s} s, $((runs_ms / (n - batch > 0 ? n - batch : 1))) ms per plain run, $fails failed"
  echo "host before: $before"
  echo "host after:  $after"
  echo "pod leftovers (by UUID): $left"
  echo "data dir after gc: $size_after bytes (before the pods: $size_before)"
  echo "fds of one running pod's rkt processes, per batch: ${fds[*]}"
  echo "rkt list ms per batch (each over ~$per exited pods): ${list_ms[*]}"
  echo "rkt gc ms per batch: ${gc_ms[*]}"
  verdict=ok
  [ "$left" -eq 0 ] || verdict="FAIL: leftovers"
  [ "$fails" -eq 0 ] || { verdict="FAIL: $fails runs failed"; tail -5 "$d/errors" >&2; }
  [ "$size_after" -le $((size_before + 65536)) ] || verdict="FAIL: the data dir grew"
  [ "${fds[-1]}" -le $((fds[0] + 2)) ] || verdict="FAIL: descriptors grew"
  flat "${list_ms[@]}" || verdict="FAIL: rkt list slowed down"
  flat "${gc_ms[@]}" || verdict="FAIL: rkt gc slowed down"
  echo "verdict: $verdict"
  [ "$verdict" = ok ] || failed=1
done
exit "$failed"
