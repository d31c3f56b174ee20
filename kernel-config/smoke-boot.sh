#!/bin/bash
# Boot the cached guest kernel in qemu -M microvm with a busybox initramfs and
# check that it works for the kvm stage1:
#   - reaches userspace (the /init prints a marker on the serial console),
#   - finds its virtio-mmio devices through ACPI (serial, rng, net, 9p),
#   - mounts a 9p share read-write (and with --virtiofs a virtio-fs share),
#   - writes to a named virtio-serial port,
#   - powers off by itself (`poweroff -f`), so qemu exits with status 0.
#
# usage: kernel-config/smoke-boot.sh [-n COUNT] [--kernel PATH] [--pvh]
#          [--accel kvm|tcg] [--timeout SECONDS] [--verbose] [--append STR]
#          [--machine M] [--virtiofs]
#   -n COUNT     boot COUNT times and print statistics (default 1)
#   --kernel     kernel to boot (default: the cached bzImage of build.sh)
#   --pvh        boot the uncompressed vmlinux next to the bzImage (PVH entry)
#   --accel      force the accelerator (default: kvm if usable, else tcg)
#   --timeout    per-boot timeout in seconds (default 60)
#   --verbose    copy the guest console to stderr
#   --append STR extra kernel command line arguments
#   --machine M  qemu -M value (default: microvm,x-option-roms=off,pit=off,
#                pic=off,rtc=on,isa-serial=on,acpi=on)
#   --virtiofs   also share a directory over virtio-fs (needs virtiofsd)
# Exits 0 only if every boot passed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
count=1 kernel= pvh=0 accel= boot_timeout=60 verbose=0 extra_append= machine= virtiofs=0

die() { echo "smoke-boot.sh: error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n) count=${2:?}; shift 2 ;;
    --kernel) kernel=${2:?}; shift 2 ;;
    --pvh) pvh=1; shift ;;
    --accel) accel=${2:?}; shift 2 ;;
    --timeout) boot_timeout=${2:?}; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --append) extra_append=${2:?}; shift 2 ;;
    --machine) machine=${2:?}; shift 2 ;;
    --virtiofs) virtiofs=1; shift ;;
    -h|--help) sed -n '2,25s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$count" =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number"

for c in qemu-system-x86_64 cpio gzip timeout; do
  command -v "$c" >/dev/null || die "$c not found (apt-get install qemu-system-x86 cpio gzip coreutils)"
done
busybox=/bin/busybox
[ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1 \
  || die "a static busybox is needed at /bin/busybox (apt-get install busybox-static)"

if [ -z "$kernel" ]; then
  kernel=$("$HERE/build.sh" --print-path) \
    || die "the guest kernel is not built yet; run kernel-config/build.sh first"
fi
[ "$pvh" = 0 ] || kernel=$(dirname "$kernel")/vmlinux
[ -r "$kernel" ] || die "kernel $kernel not readable"

if [ -z "$accel" ]; then
  accel=tcg
  if grep -qwE 'vmx|svm' /proc/cpuinfo && ( exec 3<>/dev/kvm ) 2>/dev/null; then
    accel=kvm
  fi
fi
tsc_khz=$("$HERE/host-tsc-khz.sh")
virtiofsd=
if [ "$virtiofs" = 1 ]; then
  for c in "$(command -v virtiofsd || true)" /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd; do
    [ -n "$c" ] && [ -x "$c" ] && { virtiofsd=$c; break; }
  done
  [ -n "$virtiofsd" ] || die "--virtiofs needs virtiofsd (apt-get install virtiofsd, or qemu-system-common <= 7.2)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/rkt-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- initramfs -------------------------------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,mnt}
cp "$busybox" "$root/bin/busybox"
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() { echo "SMOKE-FAIL: $*"; poweroff -f; }

# virtio-mmio devices found via ACPI: console(3), rng(4), net(1), 9p(9),
# virtio-fs(0x1a)
ids=$(cat /sys/bus/virtio/devices/*/device 2>/dev/null | tr '\n' ' ')
echo "SMOKE: virtio device ids: $ids"
want="0x0001 0x0003 0x0004 0x0009"
[ "$smoke_virtiofs" = 1 ] && want="$want 0x001a"
for id in $want; do
  case " $ids " in *" $id "*) ;; *) fail "virtio device $id missing" ;; esac
done
[ -e /sys/class/net/eth0 ] || fail "virtio-net eth0 missing"
grep -q virtio /sys/class/misc/hw_random/rng_current || fail "virtio rng not current"

# 9p share: read the token the host wrote, write one back
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 root /mnt || fail "9p mount"
[ "$(cat /mnt/token)" = "$smoke_token" ] || fail "9p read: got '$(cat /mnt/token)'"
echo "$smoke_token" > /mnt/from-guest || fail "9p write"
umount /mnt

if [ "$smoke_virtiofs" = 1 ]; then
  mount -t virtiofs pod /mnt || fail "virtiofs mount"
  [ "$(cat /mnt/token)" = "$smoke_token" ] || fail "virtiofs read"
  umount /mnt
fi

# named virtio-serial port
port=
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = rkt.smoke ] && port=/dev/${p##*/}
done
[ -n "$port" ] || fail "virtio-serial port rkt.smoke missing"
echo "$smoke_token" > "$port" || fail "write to $port"

echo "RKT-SMOKE-OK $smoke_token"
poweroff -f
EOF
chmod +x "$root/init"
if [ "$(id -u)" = 0 ]; then mknod -m 600 "$root/dev/console" c 5 1; fi
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.cpio.gz"

# --- boots ------------------------------------------------------------------------------
# -M microvm: ACPI describes the virtio-mmio devices and does the power-off;
# no PIT, PIC or option ROMs (the guest uses the TSC, LAPIC and IOAPIC).
# Without a PIT (and no HPET/PM timer on microvm) a tcg guest cannot calibrate
# its TSC and hangs at "Marking TSC unstable": tsc_early_khz is then
# mandatory, not an optimisation (with kvm, kvm-clock supplies the rate). The
# RTC stays: without kvm-clock (tcg) it is the guest's only wall clock, and
# with rtc=off the kernel spends a second timing out on the CMOS read.
[ -n "$machine" ] || machine=microvm,x-option-roms=off,pit=off,pic=off,rtc=on,isa-serial=on,acpi=on
echo "smoke-boot.sh: kernel $kernel, accel $accel, tsc_early_khz=$tsc_khz, $count boot(s)" >&2

ok=0 marker_times=() exit_times=()
for i in $(seq 1 "$count"); do
  run=$work/run$i
  mkdir -p "$run/share"
  token=t$RANDOM$RANDOM
  echo "$token" > "$run/share/token"
  vfs_args=() vfs_pid=
  if [ "$virtiofs" = 1 ]; then
    "$virtiofsd" --socket-path="$run/vfs.sock" -o source="$run/share" -o cache=none \
      >"$run/virtiofsd.log" 2>&1 &
    vfs_pid=$!
    for _ in $(seq 100); do [ -S "$run/vfs.sock" ] && break; sleep 0.05; done
    vfs_args=(-object memory-backend-memfd,id=mem,size=256M,share=on
      -chardev "socket,id=vfs,path=$run/vfs.sock"
      -device vhost-user-fs-device,chardev=vfs,tag=pod)
  fi
  cmd=(qemu-system-x86_64
    -M "$machine${vfs_pid:+,memory-backend=mem}" -accel "$accel" -cpu max -smp 1 -m 256
    -nodefaults -no-user-config -nographic -serial stdio
    -kernel "$kernel" -initrd "$work/initramfs.cpio.gz"
    -append "console=ttyS0 earlycon=uart8250,io,0x3f8 panic=-1 tsc_early_khz=$tsc_khz smoke_token=$token smoke_virtiofs=$virtiofs${extra_append:+ $extra_append}"
    -no-reboot
    -global virtio-mmio.force-legacy=false
    -device virtio-serial-device
    -chardev "file,id=port0,path=$run/port.out"
    -device virtserialport,chardev=port0,name=rkt.smoke
    -device virtio-rng-device
    -netdev hubport,id=net0,hubid=0
    -device virtio-net-device,netdev=net0
    -fsdev "local,id=fs0,path=$run/share,security_model=none"
    -device virtio-9p-device,fsdev=fs0,mount_tag=root
    "${vfs_args[@]}")
  [ "$i" = 1 ] && printf '%q ' "${cmd[@]}" > "$work/cmdline" && echo >> "$work/cmdline"
  t0=$EPOCHREALTIME t_marker=
  set +e
  timeout -k 5 "$boot_timeout" "${cmd[@]}" </dev/null 2>&1 | {
    while IFS= read -r line; do
      line=${line%$'\r'}
      printf '%s\n' "$line" >> "$run/console.log"
      [ "$verbose" = 0 ] || printf '%s %s\n' "${EPOCHREALTIME}" "$line" >&2
      if [[ "$line" == "RKT-SMOKE-OK $token" ]]; then
        echo "$EPOCHREALTIME" > "$run/t_marker"
      fi
    done
  }
  rc=${PIPESTATUS[0]}
  set -e
  t_exit=$EPOCHREALTIME
  if [ -n "$vfs_pid" ]; then kill "$vfs_pid" 2>/dev/null || true; wait "$vfs_pid" 2>/dev/null || true; fi
  [ -f "$run/t_marker" ] && t_marker=$(<"$run/t_marker")
  why=
  [ -n "$t_marker" ] || why="no marker"
  [ "$rc" = 0 ] || why="${why:+$why, }qemu exit status $rc$([ "$rc" = 124 ] && echo ' (timeout)')"
  [ "$(cat "$run/share/from-guest" 2>/dev/null)" = "$token" ] || why="${why:+$why, }9p write-back missing"
  [ "$(cat "$run/port.out" 2>/dev/null)" = "$token" ] || why="${why:+$why, }virtio-serial port output missing"
  if [ -z "$why" ]; then
    ok=$((ok + 1))
    m=$(awk -v a="$t0" -v b="$t_marker" 'BEGIN { printf "%.3f", b - a }')
    e=$(awk -v a="$t0" -v b="$t_exit" 'BEGIN { printf "%.3f", b - a }')
    marker_times+=("$m") exit_times+=("$e")
    echo "boot $i/$count: ok  marker ${m}s  exit ${e}s" >&2
  else
    keep=${TMPDIR:-/tmp}/rkt-smoke-fail-$$-$i.log
    cp "$run/console.log" "$keep" 2>/dev/null || : > "$keep"
    echo "boot $i/$count: FAILED ($why); console log: $keep" >&2
    grep -E 'SMOKE|Kernel panic|error' "$keep" | tail -n 5 | sed 's/^/    /' >&2 || true
  fi
  rm -rf "$run"
done

median() { [ $# -gt 0 ] || { echo -; return; }; printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "smoke-boot.sh: $ok/$count boots ok; median time to marker $(median "${marker_times[@]}")s, to qemu exit $(median "${exit_times[@]}")s" >&2
echo "smoke-boot.sh: qemu command line (boot 1): $(cat "$work/cmdline")" >&2
[ "$ok" = "$count" ]
