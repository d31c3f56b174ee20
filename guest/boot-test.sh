#!/bin/bash
# End-to-end test of the kvm stage1 guest image: build it, add fake apps,
# boot it under qemu microvm (tcg) over 9p and, if virtiofsd is installed,
# virtio-fs, and check:
#   - an app's output arrives on the host side of rkt.stdout, its exit
#     status in /rkt/status on the host, and qemu exits by itself;
#   - `rkt enter`-style sessions through the agent (stage1-kvm/agent-cli.ts)
#     while a long-running app is up: output, stdin, exit codes, uid/gid,
#     tty, a client killed mid-session;
#   - an orderly stop (QMP system_powerdown, the ACPI power button);
# then time pod runs against the floor: the same kernel and qemu devices
# with an initramfs whose init powers off at once. Runs are interleaved so
# that load from other processes affects every configuration alike.
#
# usage: guest/boot-test.sh [-n COUNT] [--kernel PATH] [--fs 9p|virtiofs|all]
#                           [--9p-cache MODE] [--virtiofs-cache MODE]
#                           [--cpu MODEL] [--no-enter] [--verbose] [--keep]
#   -n COUNT           timed boots per configuration (default 10; 0: none)
#   --kernel           guest kernel (default: $RKT_GUEST_KERNEL, else the
#                      cached build of kernel-config/build.sh, which must exist)
#   --fs               root filesystem transports (default: all available)
#   --9p-cache         9p cache= mount option (default loose)
#   --virtiofs-cache   virtiofsd -o cache= (default always)
#   --cpu              qemu -cpu (default max)
#   --no-enter         skip the agent and orderly-stop tests
#   --verbose          copy guest consoles to stderr
#   --keep             keep the work directory
# Needs root (9p passthrough, virtiofsd), qemu-system-x86, busybox-static,
# gcc, cpio, python3 (QMP), and `npx tsc -p .` done (dist/stage1-kvm/agent-cli.js).
# Exits 0 only if every check passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
count=10 kernel=${RKT_GUEST_KERNEL:-} fs_list=all do_enter=1 verbose=0 keep=0
p9_cache=loose vfs_cache=always cpu=max
die() { echo "boot-test.sh: error: $*" >&2; exit 2; }
log() { echo "boot-test.sh: $*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n) count=${2:?}; shift 2 ;;
    --kernel) kernel=${2:?}; shift 2 ;;
    --fs) fs_list=${2:?}; shift 2 ;;
    --9p-cache) p9_cache=${2:?}; shift 2 ;;
    --virtiofs-cache) vfs_cache=${2:?}; shift 2 ;;
    --cpu) cpu=${2:?}; shift 2 ;;
    --no-enter) do_enter=0; shift ;;
    --verbose) verbose=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,29s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (9p passthrough and virtiofsd need it)"
for c in qemu-system-x86_64 cpio gzip python3; do command -v $c >/dev/null || die "$c not found"; done
if [ -z "$kernel" ]; then
  kernel=$("$ROOT/kernel-config/build.sh" --print-path 2>/dev/null) \
    || die "the guest kernel is not built yet: run kernel-config/build.sh (or pass --kernel)"
fi
[ -r "$kernel" ] || die "kernel $kernel not readable"
client=$ROOT/dist/stage1-kvm/agent-cli.js
[ "$do_enter" = 0 ] || [ -f "$client" ] || die "$client missing: run 'npx tsc -p .' first"
virtiofsd=
for c in "$(command -v virtiofsd || true)" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd; do
  [ -n "$c" ] && [ -x "$c" ] && { virtiofsd=$c; break; }
done
case $fs_list in
  all) fs_list="9p${virtiofsd:+ virtiofs}" ;;
  9p) ;;
  virtiofs) [ -n "$virtiofsd" ] || die "virtiofsd not found (qemu-system-common <= 7.2, or apt-get install virtiofsd)" ;;
  *) die "--fs wants 9p, virtiofs or all" ;;
esac
tsc_khz=$("$ROOT/kernel-config/host-tsc-khz.sh")

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rkt-boot-test.XXXXXX")
cleanup() { [ "$keep" = 1 ] && log "work directory kept: $work" || rm -rf "$work"; }
trap cleanup EXIT

# --- The image, a fake app rootfs, the floor's initramfs ------------------------------------
t=$EPOCHREALTIME
"$HERE/build-image.sh" "$work/image"
log "image built in $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s: $(du -sh "$work/image" | cut -f1)"
app_root=$work/app-rootfs
mkdir -p "$app_root"/{bin,tmp,etc}
cp /bin/busybox "$app_root/bin/busybox"
chroot "$app_root" /bin/busybox --install -s /bin
chmod 1777 "$app_root/tmp"

floor_root=$work/floor-initramfs
mkdir -p "$floor_root"/{bin,dev}
cp /bin/busybox "$floor_root/bin/busybox"
printf '#!/bin/busybox sh\nexec /bin/busybox poweroff -f\n' > "$floor_root/init"
chmod +x "$floor_root/init"
mknod -m 600 "$floor_root/dev/console" c 5 1
(cd "$floor_root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/floor.cpio.gz"

# unit NAME EXEC: an app unit as the stage1's unit generator is expected to
# write it (guest/README.md, "App units").
unit() {
  cat <<EOF
[Unit]
Description=rkt app $1

[Service]
RootDirectory=/opt/stage2/$1/rootfs
RootDirectoryStartOnly=yes
ExecStart=$2
StandardOutput=file:/run/rkt/stdout
StandardError=file:/run/rkt/stderr
ExecStopPost=+/rkt/bin/rkt-app-exited $1 "\${EXIT_CODE}:\${EXIT_STATUS}:\${SERVICE_RESULT}"
EOF
}

# make_pod DIR APP...: a per-pod copy of the stage1 rootfs with those apps.
make_pod() {
  local pod=$1 app; shift
  cp -a "$work/image" "$pod"
  mkdir -p "$pod/etc/systemd/system/rkt-pod.target.wants"
  : > "$pod/rkt/apps"
  for app in "$@"; do
    mkdir -p "$pod/opt/stage2/$app"
    cp -a "$app_root" "$pod/opt/stage2/$app/rootfs"
    echo "$app" >> "$pod/rkt/apps"
    case $app in
      hello) unit hello "/bin/sh -c 'echo hi from app; exit 3'" ;;
      sleeper) unit sleeper "/bin/sh -c 'echo sleeper up; echo sleeper stderr >&2; while [ ! -e /tmp/stop ]; do sleep 0.2; done; echo sleeper done'" ;;
    esac > "$pod/etc/systemd/system/$app.service"
    ln -s "../$app.service" "$pod/etc/systemd/system/rkt-pod.target.wants/$app.service"
  done
}

# --- One boot ------------------------------------------------------------------------------
MACHINE=microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on,acpi=on
BASE_APPEND="console=ttyS0 quiet panic=-1 tsc_early_khz=$tsc_khz"
GUEST_APPEND="rw init=/usr/lib/systemd/systemd systemd.unit=rkt-pod.target"

# boot RUNDIR MODE [POD]: MODE is floor, 9p or virtiofs. Starts qemu in the
# background; app output ports go to FIFOs whose lines are timestamped into
# RUNDIR/stdout.log and stderr.log. Sets qemu_pid, t0, readers.
boot() {
  local run=$1 mode=$2 pod=${3:-} mem=() share=() append=$BASE_APPEND p
  mkdir -p "$run"
  readers=()
  for p in stdout stderr; do
    mkfifo "$run/$p.in" "$run/$p.out"
    ( while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done < "$run/$p.out" > "$run/$p.log" ) &
    readers+=($!)
  done
  case $mode in
    floor) share=(-initrd "$work/floor.cpio.gz") ;;
    9p)
      share=(-fsdev "local,id=root,path=$pod,security_model=passthrough,multidevs=remap"
             -device virtio-9p-device,fsdev=root,mount_tag=rktroot)
      append="$append root=rktroot rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=524288,cache=$p9_cache $GUEST_APPEND" ;;
    virtiofs)
      "$virtiofsd" --socket-path="$run/vfs.sock" -o source="$pod" -o cache="$vfs_cache" >"$run/virtiofsd.log" 2>&1 &
      echo $! > "$run/virtiofsd.pid"
      # the socket exists a moment before virtiofsd listens on it
      for _ in $(seq 300); do grep -q 'Waiting for vhost-user socket' "$run/virtiofsd.log" 2>/dev/null && break; sleep 0.01; done
      mem=(-object memory-backend-memfd,id=mem,size=256M,share=on)
      share=(-chardev "socket,id=vfs,path=$run/vfs.sock" -device vhost-user-fs-device,chardev=vfs,tag=rktroot)
      append="$append root=rktroot rootfstype=virtiofs $GUEST_APPEND" ;;
  esac
  qemu_cmd=(qemu-system-x86_64
    -M "$MACHINE${mem:+,memory-backend=mem}" -accel tcg -cpu "$cpu" -smp 1 -m 256 "${mem[@]}"
    -nodefaults -no-user-config -nographic -no-reboot
    -chardev "file,id=console,path=$run/console.log" -serial chardev:console
    -qmp "unix:$run/qmp.sock,server=on,wait=off"
    -kernel "$kernel" -append "$append"
    -global virtio-mmio.force-legacy=false
    -device virtio-serial-device
    -chardev "pipe,id=stdout,path=$run/stdout" -device virtserialport,chardev=stdout,name=rkt.stdout
    -chardev "pipe,id=stderr,path=$run/stderr" -device virtserialport,chardev=stderr,name=rkt.stderr
    -chardev "socket,id=agent,path=$run/agent.sock,server=on,wait=off" -device virtserialport,chardev=agent,name=rkt.agent
    -device virtio-rng-device
    "${share[@]}")
  [ -f "$work/cmdline.$mode" ] || printf '%q ' "${qemu_cmd[@]}" > "$work/cmdline.$mode"
  # CPU seconds (user + system) of this shell's waited-for children before
  # and after the run: qemu's (and virtiofsd's) CPU time, which other load
  # on the host inflates much less than wall-clock time. (times must run in this shell, not in
  # a $(...) subshell: hence the file.)
  times_file=$work/times.$BASHPID
  times > "$times_file"
  cpu0=$(awk 'NR == 2 { gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4 }' "$times_file")
  t0=$EPOCHREALTIME
  "${qemu_cmd[@]}" </dev/null >"$run/qemu.out" 2>&1 &
  qemu_pid=$!
  if [ "$verbose" = 1 ]; then
    ( tail -F "$run/console.log" 2>/dev/null | sed "s/^/[$mode] /" >&2 ) &
    echo $! > "$run/tail.pid"
  fi
}

readers_alive() { local r; for r in "${readers[@]}"; do kill -0 "$r" 2>/dev/null && return 0; done; return 1; }

# finish RUNDIR TIMEOUT: wait for qemu, killing it after TIMEOUT seconds.
# Sets qemu_rc and t_exit.
finish() {
  local run=$1 limit=$2 i=0 p
  while kill -0 "$qemu_pid" 2>/dev/null; do
    sleep 0.01
    i=$((i + 1))
    if [ $i -ge $((limit * 100)) ]; then kill -9 "$qemu_pid" 2>/dev/null || true; log "qemu killed after ${limit}s"; break; fi
  done
  qemu_rc=0
  wait "$qemu_pid" || qemu_rc=$?
  t_exit=$EPOCHREALTIME
  if [ -f "$run/virtiofsd.pid" ]; then
    kill "$(cat "$run/virtiofsd.pid")" 2>/dev/null || true
    wait "$(cat "$run/virtiofsd.pid")" 2>/dev/null || true
  fi
  times > "$times_file"
  qemu_cpu=$(awk -v a="$cpu0" 'NR == 2 { gsub(/[ms]/, " "); printf "%.3f", $1 * 60 + $2 + $3 * 60 + $4 - a }' "$times_file")
  # The readers see EOF when qemu exits; if qemu never opened the FIFOs,
  # open them once for writing so that the readers' open() returns.
  for _ in $(seq 100); do readers_alive || break; sleep 0.01; done
  if readers_alive; then
    for p in stdout stderr; do timeout 0.2 bash -c ': > "$1"' _ "$run/$p.out" 2>/dev/null || true; done
  fi
  for p in "${readers[@]}"; do wait "$p" 2>/dev/null || true; done
  [ ! -f "$run/tail.pid" ] || { sleep 0.2; kill "$(cat "$run/tail.pid")" 2>/dev/null || true; }
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

failures=0
fail() { log "FAIL: $*"; failures=$((failures + 1)); keep=1; }

# run_hello MODE TAG: one boot of a pod with the hello app. On success prints
# "seconds-to-app-output seconds-to-qemu-exit qemu-cpu-seconds".
run_hello() {
  local mode=$1 tag=$2 run=$work/$1-hello-$2 pod=$work/$1-pod-$2 out st
  make_pod "$pod" hello
  boot "$run" "$mode" "$pod"
  finish "$run" 60
  out=$(awk '$2 " " $3 " " $4 == "hi from app" { print $1; exit }' "$run/stdout.log")
  st=$(cat "$pod/rkt/status/hello" 2>/dev/null || echo missing)
  if [ "$qemu_rc" != 0 ] || [ -z "$out" ] || [ "$st" != 3 ]; then
    fail "$mode boot $tag: qemu status $qemu_rc, app output '${out:+present}', /rkt/status/hello '$st' (console: $run/console.log)"
    return 1
  fi
  echo "$(elapsed "$t0" "$out") $(elapsed "$t0" "$t_exit") $qemu_cpu"
  rm -rf "$pod" "$run"
}

run_floor() {
  local run=$work/floor-$1
  boot "$run" floor
  finish "$run" 60
  [ "$qemu_rc" = 0 ] || { fail "floor boot $1: qemu status $qemu_rc"; return 1; }
  echo "$(elapsed "$t0" "$t_exit") $qemu_cpu"
  rm -rf "$run"
}

for mode in $fs_list; do
  if r=$(run_hello "$mode" check); then
    set -- $r
    log "ok   $mode: 'hi from app' on rkt.stdout after ${1}s, /rkt/status/hello = 3 on the host, qemu exited by itself (status 0) after ${2}s"
  fi
done

# --- rkt enter through the agent, orderly stop ----------------------------------------------
if [ "$do_enter" = 1 ]; then
  . "$HERE/boot-test-enter.sh"
  for mode in $fs_list; do enter_test "$mode"; done
fi

# --- Timing -----------------------------------------------------------------------------------
if [ "$count" -gt 0 ]; then
  declare -A outs exits cpus
  for i in $(seq "$count"); do
    if r=$(run_floor "$i"); then exits[floor]+=" ${r% *}"; cpus[floor]+=" ${r#* }"; fi
    for mode in $fs_list; do
      r=$(run_hello "$mode" "$i") || continue
      set -- $r
      outs[$mode]+=" $1" exits[$mode]+=" $2" cpus[$mode]+=" $3"
    done
  done
  fl=$(median ${exits[floor]}) fc=$(median ${cpus[floor]})
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
  {
    printf '%-10s %-20s %-20s %-12s %-16s %s\n' "" "boot-to-app-output" "total (qemu exit)" "total/floor" "CPU time" "CPU/floor"
    printf '%-10s %-20s %-20s %-12s %-16s %s\n' floor - "${fl}s" 1.00x "${fc}s" 1.00x
    for mode in $fs_list; do
      tot=$(median ${exits[$mode]}) c=$(median ${cpus[$mode]})
      printf '%-10s %-20s %-20s %-12s %-16s %s\n' "$mode" "$(median ${outs[$mode]})s" "${tot}s" "$(ratio "$tot" "$fl")" "${c}s" "$(ratio "$c" "$fc")"
    done
  } >&2
  log "medians of $count interleaved boots each; accel tcg, -cpu $cpu, 9p cache=$p9_cache, virtiofs cache=$vfs_cache, kernel $kernel"
  log "host load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
for mode in $fs_list; do [ ! -f "$work/cmdline.$mode" ] || log "qemu command line ($mode): $(cat "$work/cmdline.$mode")"; done

if [ "$failures" -gt 0 ]; then
  log "$failures check(s) FAILED"
  exit 1
fi
log "all checks passed"
