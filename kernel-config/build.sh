#!/bin/bash
# Build the kvm stage1 guest kernel from Debian's kernel source package and
# cache it outside the work tree, keyed by its inputs.
#
#   kernel-config/build.sh               build if needed, print the bzImage path
#   kernel-config/build.sh --print-path  never build: print the bzImage path for
#                                        the current inputs; exit 0 if it is
#                                        built, 1 if not
#
# Cache key: sha256 of guest.config + the installed source package version +
# this script. Cache: ${RKT_KERNEL_CACHE:-/var/cache/rkt-ts/kernel}/<key>/
# holding bzImage, vmlinux (PVH-bootable ELF), config and build-info.
# stdout carries only the path; everything else goes to stderr.
set -euo pipefail

readonly SRC_PKG=linux-source-6.1
readonly SRC_TARBALL=/usr/src/${SRC_PKG}.tar.xz
readonly HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly FRAGMENT=$HERE/guest.config
readonly SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
readonly CACHE_ROOT=${RKT_KERNEL_CACHE:-/var/cache/rkt-ts/kernel}

log() { printf 'kernel-config/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

print_only=0
case "${1:-}" in
  "") ;;
  --print-path) print_only=1 ;;
  -h|--help) sed -n '2,13s/^# \{0,1\}//p' "$SELF"; exit 0 ;;
  *) die "unknown argument '$1' (usage: build.sh [--print-path])" ;;
esac
[ $# -le 1 ] || die "too many arguments (usage: build.sh [--print-path])"

# --- Inputs and key ------------------------------------------------------------
[ -r "$FRAGMENT" ] || die "missing $FRAGMENT"

# Packages the build needs (lz4 compresses the bzImage; libssl-dev is not
# needed: no modules, no module signing, no keyring). Only the source package
# is needed to find a cached kernel; the tools only to build one.
readonly TOOL_PKGS=(bc bison flex libelf-dev make gcc libc6-dev xz-utils lz4 util-linux)
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$SRC_PKG" "${TOOL_PKGS[@]}" 2>/dev/null \
            | awk '$2 == "installed" { print $1 }' | sed 's/:.*//' || true)
missing=()
for p in "$SRC_PKG" "${TOOL_PKGS[@]}"; do
  grep -qxF -- "$p" <<<"$installed" || missing+=("$p")
done
need_packages() { die "missing packages: ${missing[*]} (install with: apt-get install ${missing[*]})"; }
[ "${missing[0]:-}" != "$SRC_PKG" ] || need_packages
src_version=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
key=$( { cat "$FRAGMENT"; printf '\n%s %s\n' "$SRC_PKG" "$src_version"; cat "$SELF"; } \
       | sha256sum | cut -d' ' -f1)
dest=$CACHE_ROOT/$key

if [ -f "$dest/bzImage" ]; then
  echo "$dest/bzImage"
  exit 0
fi
if [ "$print_only" = 1 ]; then
  log "not built yet for these inputs (run kernel-config/build.sh): $dest/bzImage"
  echo "$dest/bzImage"
  exit 1
fi

[ ${#missing[@]} -eq 0 ] || need_packages
[ -r "$SRC_TARBALL" ] || die "$SRC_TARBALL not found although $SRC_PKG is installed (reinstall with: apt-get install --reinstall $SRC_PKG)"

# --- Lock: one build per key per machine ----------------------------------------
mkdir -p "$CACHE_ROOT" 2>/dev/null && [ -w "$CACHE_ROOT" ] \
  || die "cannot write the kernel cache $CACHE_ROOT (set RKT_KERNEL_CACHE to a writable directory)"
exec 9>"$CACHE_ROOT/.$key.lock"
if ! flock -n 9; then
  log "another build of $key is running; waiting for it"
  flock 9
fi
if [ -f "$dest/bzImage" ]; then   # built by whoever held the lock
  echo "$dest/bzImage"
  exit 0
fi

build_dir=
stage_dir=
cleanup() {
  [ -z "$build_dir" ] || rm -rf "$build_dir"
  [ -z "$stage_dir" ] || rm -rf "$stage_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

start=$(date +%s)
build_dir=$(mktemp -d "${TMPDIR:-/var/tmp}/rkt-kernel-build.XXXXXX")
log "building guest kernel $key"
log "  source   $SRC_PKG $src_version"
log "  fragment $FRAGMENT"
log "  build in $build_dir"

tar -C "$build_dir" -xf "$SRC_TARBALL"
ksrc=$build_dir/$SRC_PKG
[ -f "$ksrc/Makefile" ] || die "unexpected layout of $SRC_TARBALL (no $SRC_PKG/Makefile)"

kmake() {
  make -C "$ksrc" ARCH=x86_64 \
    KBUILD_BUILD_USER=rkt KBUILD_BUILD_HOST=rkt-ts \
    KBUILD_BUILD_VERSION=1 "$@" >&2
}

# --- Configure ---------------------------------------------------------------------
kmake tinyconfig
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$ksrc" "$ksrc/.config" "$FRAGMENT" >&2
kmake olddefconfig

# Every option the fragment asks for must have survived olddefconfig; kconfig
# silently drops options whose dependencies are not met.
bad=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      grep -qxF -- "$line" "$ksrc/.config" || {
        sym=${line%%=*}
        got=$(grep -E "^($sym=|# $sym is not set)" "$ksrc/.config" || true)
        bad+=("$line (got: ${got:-absent})")
      } ;;
    "# CONFIG_"*" is not set")
      sym=${line#\# }; sym=${sym%% *}
      got=$(grep -E "^$sym=" "$ksrc/.config" || true)
      [ -z "$got" ] || bad+=("# $sym is not set (got: $got)") ;;
  esac
done < "$FRAGMENT"
if [ ${#bad[@]} -ne 0 ]; then
  log "the configuration does not match $FRAGMENT (missing dependency or a select):"
  for b in "${bad[@]}"; do log "  $b"; done
  die "${#bad[@]} option(s) not set as requested: $(printf '%s ' "${bad[@]%% *}")"
fi
log "configuration verified: all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "$FRAGMENT") requested options set"

# --- Build -------------------------------------------------------------------------
kmake -j"$(nproc)" bzImage

# --- Install atomically ---------------------------------------------------------------
stage_dir=$(mktemp -d "$CACHE_ROOT/.tmp-$key.XXXXXX")
cp "$ksrc/arch/x86/boot/bzImage" "$stage_dir/bzImage"
cp "$ksrc/vmlinux" "$stage_dir/vmlinux"
cp "$ksrc/.config" "$stage_dir/config"
cat > "$stage_dir/build-info" <<EOF
key=$key
source=$SRC_PKG $src_version
kernelrelease=$(make -s -C "$ksrc" ARCH=x86_64 kernelrelease)
compiler=$(gcc --version | head -n1)
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$(( $(date +%s) - start ))
EOF
chmod 0755 "$stage_dir"
chmod 0644 "$stage_dir"/*
mv -T "$stage_dir" "$dest"
stage_dir=

log "built in $(( $(date +%s) - start ))s: $dest ($(stat -c %s "$dest/bzImage") bytes bzImage)"
echo "$dest/bzImage"
