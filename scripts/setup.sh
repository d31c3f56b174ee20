#!/usr/bin/env bash
# Install and build everything rkt needs on Debian 12, as root. Idempotent:
# a second run only checks and finishes in seconds.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

DEB_PACKAGES=(
  ca-certificates tar gzip bzip2 xz-utils coreutils util-linux  # image formats, cp/du, setpriv/unshare/nsenter
  mount procps                                                   # pod mounts; pgrep in tests
  gnupg                                                          # signing keys for tests and users
  busybox-static                                                 # example and test images
  python3 make g++                                               # native npm addons (sqlite, flock, pty); the tap test's relay
  libcap2-bin                                                    # setcap/getcap: file capabilities in the image render tests
  hyperfine runc podman                                          # benchmarks and their peers
  qemu-system-x86 qemu-utils                                     # kvm stage1 (virtiofsd ships in qemu-system-common)
  linux-source-6.1 bc bison flex libelf-dev gcc libc6-dev lz4 cpio  # the guest kernel build; gcc + libc6-dev also build the static guest agent and rkt-idmap
  systemd systemd-container dbus-daemon                          # guest and nspawn init; systemd-nspawn; enter in nspawn
  containernetworking-plugins iproute2 iptables                 # pod networking (CNI)
  docker-registry skopeo umoci apache2-utils openssl            # docker:// tests: a local registry, pushing, OCI layouts, htpasswd -B, a throw-away CA
  containerd                                                     # the containerd/CRI tests start their own private containerd (1.6, CRI plugin and ctr included)
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# npm packages, reinstalled only when the lock file changed
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages" >&2
  npm ci --no-audit --no-fund >&2
fi

echo "setup: building" >&2
npm run --silent build

# the guest kernel: built once per machine, cached outside the work tree
# under /var/cache/rkt-ts/kernel, keyed by its configuration and source
echo "setup: guest kernel (first build takes several minutes)" >&2
kernel-config/build.sh >/dev/null

# stage1 images, installed where rkt looks for them by default
stage1_dir=${RKT_STAGE1_IMAGES_DIR:-/usr/lib/rkt/stage1-images}
mkdir -p build "$stage1_dir"
node dist/stage1-fly/build.js build/stage1-fly.aci >/dev/null
node dist/stage1-nspawn/build.js build/stage1-coreos.aci >/dev/null
node dist/stage1-kvm/build.js build/stage1-kvm.aci >/dev/null
install -m 0644 build/stage1-fly.aci "$stage1_dir/stage1-fly.aci"
install -m 0644 build/stage1-coreos.aci "$stage1_dir/stage1-coreos.aci"
install -m 0644 build/stage1-kvm.aci "$stage1_dir/stage1-kvm.aci"
echo "setup: done" >&2
