# Sourced by the bench scripts (bash, as root, after scripts/setup.sh and npm run build).
#
#   bench_world NAME   cd to the tree; $work: a fresh directory under /var/tmp, removed on exit
#                      with the pods made in it; $rkt: this tree's bin/rkt on a private --dir and
#                      config dirs. The stage1 images are this tree's build/ (RKT_STAGE1_IMAGES_DIR,
#                      unless already set), so --stage1-name=FLAVOR runs the code under test and
#                      costs one stat() to look up, as an installed stage1 does.
#                      With BENCH_BASE=DIR (another checkout, built, with its own build/ stage1
#                      images), $rkt_base is its bin/rkt on the same dirs, and the scripts time
#                      it in the same run as this tree's (before/after comparisons).
#   bench_on_exit CMD  also run CMD (a string) on exit, before $work goes
#   bench_need CMD PKG fail with the Debian package to install when CMD is missing
#   bench_true_image   $work/aci/rootfs: busybox with sh, true, sleep; $work/true.aci, named
#                      example.com/true, running /bin/true as root; fetched into the store
#   bench_time RUNS WARMUP JSON NAME CMD [NAME CMD ...]
#                      time the commands round-robin (bench/interleave.mjs), so a load that
#                      drifts during the run weighs on all alike; hyperfine's JSON shape
#   bench_kvm_floor    $floor: the kvm floor, qemu booting our kernel with an initramfs whose
#                      busybox init powers off at once; $accel: tcg, or kvm where usable
#   bench_medians JSON print each command's median from a hyperfine --export-json file and the
#                      ratio of the first command's median to each other's (bench/ratio.mjs)
#   bench_nspawn_peer UUID  systemd-nspawn alone booting a copy of pod UUID's stage1 rootfs:
#                      $nspawn_peer, $nspawn_reset (below)
#   bench_pod_memory PID...  the host memory of the process trees under each PID (`rkt run`s):
#                      one line per process (RSS, PSS, and for qemu the guest memory it has
#                      touched: the RSS of its memfd guest RAM), then the sums in KiB in
#                      $mem_rss, $mem_pss, $mem_guest

bench_world() {
  cd "$(dirname "$(readlink -f "${BASH_SOURCE[1]}")")/.."
  work=$(mktemp -d "/var/tmp/rkt-bench-$1.XXXXXX")
  export RKT_STAGE1_IMAGES_DIR=${RKT_STAGE1_IMAGES_DIR:-$PWD/build}
  rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
  base_cmds=()
  if [ -n "${BENCH_BASE:-}" ]; then
    # the base's stage1 images are its own: the same name would run this tree's
    rkt_base="env RKT_STAGE1_IMAGES_DIR=$BENCH_BASE/build $BENCH_BASE/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib"
  fi
  bench_exit_cmds=()
  trap bench_cleanup EXIT
}

bench_on_exit() {
  bench_exit_cmds+=("$1")
}

bench_cleanup() {
  local c
  for c in "${bench_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  $rkt gc --grace-period=0s >/dev/null 2>&1 || true
  rm -rf "$work"
}

bench_need() {
  command -v "$1" >/dev/null || { echo "bench: $1 is missing; install it (apt-get install $2)" >&2; exit 1; }
}

bench_true_image() {
  mkdir -p "$work/aci/rootfs/bin"
  cp /bin/busybox "$work/aci/rootfs/bin/busybox"
  local a
  for a in sh true sleep; do ln -s busybox "$work/aci/rootfs/bin/$a"; done
  echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/true","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],"app":{"exec":["/bin/true"],"user":"0","group":"0"}}' > "$work/aci/manifest"
  tar --numeric-owner -C "$work/aci" -cf "$work/true.aci" manifest rootfs
  $rkt --insecure-options=image fetch "$work/true.aci" 2> >(grep -v "signature verification has been disabled" >&2) >/dev/null
}

bench_time() {
  node bench/interleave.mjs "$@"
}

bench_medians() {
  node bench/ratio.mjs "$1"
}

bench_tree() {
  echo "$1"
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do bench_tree "$c"; done
}

bench_pod_memory() {
  mem_rss=0 mem_pss=0 mem_guest=0
  local top pid comm rss pss guest
  for top in "$@"; do
    for pid in $(bench_tree "$top"); do
      read -r comm rss < <(ps -o comm=,rss= -p "$pid" 2>/dev/null) || continue
      pss=$(awk '/^Pss:/ { print $2 }' /proc/"$pid"/smaps_rollup 2>/dev/null || echo 0)
      # qemu's guest RAM is a memfd (memory-backend-memfd): what of it is resident, the guest touched
      guest=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { g = ($6 ~ /^\/memfd:/) } g && /^Rss:/ { s += $2 } END { print s + 0 }' /proc/"$pid"/smaps 2>/dev/null || echo 0)
      printf '  %-16s pid %-8s RSS %8s KiB  PSS %8s KiB  guest memory %8s KiB\n' "$comm" "$pid" "$rss" "$pss" "$guest"
      mem_rss=$((mem_rss + rss)) mem_pss=$((mem_pss + pss)) mem_guest=$((mem_guest + guest))
    done
  done
}

# bench_base NAME COMMAND: add "NAME COMMAND" to $base_cmds (for bench_time) when BENCH_BASE is set;
# COMMAND names the base's rkt as @RKT@
bench_base() {
  [ -n "${BENCH_BASE:-}" ] || return 0
  base_cmds+=("$1" "${2//@RKT@/$rkt_base}")
}

# bench_nspawn_peer UUID: systemd-nspawn alone, booting a copy of pod UUID's stage1 rootfs
# (its generated rkt-pod.target and app unit included), with the app rootfs copied where the
# flavor mounts its overlay and the app's stdout/stderr FIFOs and the report FIFO (read by rkt
# on the host) made plain files: the same systemd on the same target, with the arguments the
# flavor passes (minus --machine/--uuid/--hostname; nspawn stays in the caller's cgroups: the
# flavor first joins per-pod ones). Sets $nspawn_peer (the command) and $nspawn_reset (clears
# the statuses a run leaves); checks the peer once.
bench_nspawn_peer() {
  local peer="$work/peer"
  bench_need systemd-nspawn systemd-container
  cp -a "$work/data/pods/run/$1/stage1/rootfs" "$peer"
  cp -a "$work/aci/rootfs/." "$peer/opt/stage2/true/rootfs/"
  rm -f "$peer"/rkt/io/std{out,err} "$peer/rkt/report" && touch "$peer"/rkt/io/std{out,err} "$peer/rkt/report"
  nspawn_reset="rm -f $peer/rkt/status/* $peer/rkt/started/* $peer/rkt/oom/*"
  $nspawn_reset
  nspawn_peer="systemd-nspawn --quiet --boot --directory=$peer --register=no --keep-unit --console=read-only --resolv-conf=off --timezone=off --link-journal=no --kill-signal=SIGRTMIN+4 -- --unit=rkt-pod.target --log-target=console --log-level=warning --show-status=no"
  $nspawn_peer >/dev/null 2>&1 && [ "$(cat "$peer/rkt/status/true")" = 0 ] || { echo "bench: the direct systemd-nspawn peer did not run the app" >&2; exit 1; }
  $nspawn_reset
}

bench_kvm_floor() {
  local kernel tsc
  kernel=$(kernel-config/build.sh --print-path)
  tsc=$(kernel-config/host-tsc-khz.sh)
  accel=tcg
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; fi
  mkdir -p "$work/initramfs/bin"
  cp /bin/busybox "$work/initramfs/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$work/initramfs/init"
  chmod +x "$work/initramfs/init"
  (cd "$work/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/floor.cpio.gz"
  floor="qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on,acpi=on -accel $accel -cpu max -smp 1 -m 256 -nodefaults -no-user-config -display none -no-reboot -serial null -kernel $kernel -initrd $work/floor.cpio.gz -append 'console=ttyS0 quiet panic=-1 tsc_early_khz=$tsc'"
}
