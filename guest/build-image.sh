#!/bin/bash
# Assemble the guest part of the kvm stage1 rootfs into DESTDIR.
#
#   guest/build-image.sh DESTDIR
#
# The result is the root filesystem the pod VM boots (shared from the host
# over 9p or virtio-fs): systemd 252 from this machine's Debian packages with
# exactly the shared libraries it links, a minimal /etc, the rkt units
# (guest/image/), busybox-static as /rkt/bin/busybox, and the guest agent.
# See guest/README.md for what is in it and why.
#
# Needs: systemd 252, busybox-static, gcc and libc6-dev (for the agent),
# run as root (file ownership is what the guest sees through the share).
# Idempotent: files are replaced, DESTDIR's other contents are left alone.
# Prints nothing but errors.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "guest/build-image.sh: error: $*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: guest/build-image.sh DESTDIR"
dest=$1

# --- What the building machine must have --------------------------------------
missing=()
for p in systemd busybox-static gcc libc6-dev; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] || die "missing packages: ${missing[*]} (apt-get install ${missing[*]})"
sd_version=$(dpkg-query -W -f='${Version}' systemd)
# The units and system.conf are written for 252's behaviour (Debian 12).
case $sd_version in 252.*) ;; *) die "systemd $sd_version found, the guest image is made for 252 (Debian 12)" ;; esac
[ "$(id -u)" = 0 ] || echo "guest/build-image.sh: warning: not root: the guest will see files owned by uid $(id -u)" >&2

# Binaries the guest runs: PID 1; systemd-shutdown, which PID 1 executes for
# an orderly power-off (rkt stop); systemctl, for a human on the console.
readonly BINARIES=(/usr/lib/systemd/systemd /usr/lib/systemd/systemd-shutdown /usr/bin/systemctl)
for b in "${BINARIES[@]}" /bin/busybox; do [ -x "$b" ] || die "$b not found"; done
ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static (apt-get install busybox-static)"

mkdir -p "$dest"
stage=$(mktemp -d "$(cd "$dest" && pwd)/.guest-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT
umask 022
chmod 0755 "$stage"   # becomes the guest's /: cp -a below gives DESTDIR this mode

# --- Layout: merged /usr, like the Debian the binaries come from -----------------
mkdir -p "$stage"/usr/{bin,sbin,lib,lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$stage/$d"; done
# Mount points PID 1 uses (it mounts /proc, /sys, /dev, /run itself), and
# the directories the rkt stage1 contract puts things in.
mkdir -p "$stage"/{proc,sys,dev,run,tmp,root,opt/stage2,var/tmp,var/lib/systemd,etc/systemd/system,rkt/bin,rkt/status}
chmod 1777 "$stage/tmp" "$stage/var/tmp"
ln -s ../run "$stage/var/run"
chmod 0700 "$stage/root"

# --- systemd and exactly the libraries it links ------------------------------------
# Copy a file to the same canonical path in the image (lib -> usr/lib etc.),
# dereferencing symlinks: the loader finds libraries by their soname.
copy_canonical() {
  local src=$1 dir
  dir=$(realpath "$(dirname "$src")")
  mkdir -p "$stage$dir"
  cp -L --preserve=mode,timestamps "$src" "$stage$dir/$(basename "$src")"
}
libs=()
for b in "${BINARIES[@]}"; do
  copy_canonical "$b"
  # "libfoo.so.1 => /lib/.../libfoo.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
  while read -r lib; do libs+=("$lib"); done < <(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done
[ ${#libs[@]} -gt 0 ] || die "ldd found no libraries for systemd"
printf '%s\n' "${libs[@]}" | sort -u | while read -r lib; do copy_canonical "$lib"; done
ln -s ../lib/systemd/systemd "$stage/usr/sbin/init"

# A loader cache: without it ld.so probes several glibc-hwcaps directories
# for each of ~20 libraries, and every probe is a round trip to the host
# over the shared filesystem.
echo /usr/lib/x86_64-linux-gnu > "$stage/etc/ld.so.conf"
ldconfig -r "$stage" -f /etc/ld.so.conf -C /etc/ld.so.cache 2>/dev/null \
  || die "ldconfig failed to build the loader cache"

# --- busybox and the guest agent ------------------------------------------------------
cp --preserve=mode,timestamps /bin/busybox "$stage/rkt/bin/busybox"
ln -s busybox "$stage/rkt/bin/sh"
"$HERE/agent/build.sh" "$stage/rkt/bin/rkt-agent"

# --- Units, system.conf, /etc, rkt-app-exited ---------------------------------------
cp -R --preserve=mode "$HERE/image/." "$stage/"

cat > "$stage/usr/lib/os-release" <<EOF
NAME="rkt kvm stage1 guest"
ID=rkt-kvm-guest
ID_LIKE=debian
VERSION_ID=1
PRETTY_NAME="rkt kvm stage1 guest (systemd $sd_version)"
EOF
ln -s ../usr/lib/os-release "$stage/etc/os-release"
ln -s ../proc/self/mounts "$stage/etc/mtab"
# The host writes the pod's machine ID here (the pod UUID without dashes, as
# rkt does for nspawn) before boot. Present and empty in the image would mean
# "first boot" to systemd (unit presets, a warning); a fixed placeholder keeps
# the image bootable as is.
echo 00000000000000000000000000000001 > "$stage/etc/machine-id"
chmod 0444 "$stage/etc/machine-id"

# --- Install --------------------------------------------------------------------------
# cp over the destination: replaces our files, keeps what other parts of the
# stage1 rootfs put there.
cp -a --remove-destination "$stage/." "$dest/"
