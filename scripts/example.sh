#!/usr/bin/env bash
# The main job on an example: build a small ACI from busybox-static, sign it
# with a throw-away key, trust that key, fetch the image with verification,
# and show it in the store. Uses its own --dir and config dirs under /tmp.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
work=$(mktemp -d /tmp/rkt-example.XXXXXX)
trap 'rm -rf "$work"' EXIT
rkt() { ./bin/rkt --dir="$work/data" --local-config="$work/etc" --system-config="$work/lib" --user-config="$work/user" "$@"; }

mkdir -p "$work/aci/rootfs/bin"
cp /bin/busybox "$work/aci/rootfs/bin/busybox"
ln -s busybox "$work/aci/rootfs/bin/sh"
cat > "$work/aci/manifest" <<'JSON'
{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/hello",
 "labels":[{"name":"version","value":"1.0.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
 "app":{"exec":["/bin/sh","-c","echo hello from a pod"],"user":"0","group":"0"}}
JSON
tar --numeric-owner --owner=0 --group=0 -C "$work/aci" -czf "$work/hello.aci" manifest rootfs

export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key 'Example <example@example.com>' ed25519 sign never 2>/dev/null
gpg --batch --quiet --armor --export > "$work/key.asc"
gpg --batch --quiet --armor --detach-sign "$work/hello.aci"

rkt trust --prefix=example.com/hello --skip-fingerprint-review "$work/key.asc"
rkt fetch "$work/hello.aci"
rkt image list
# run it as a pod with the default stage1, then show the pod and clean up
rkt run --uuid-file-save="$work/uuid" example.com/hello:1.0.0
rkt status "$(cat "$work/uuid")"
rkt gc --grace-period=0s >/dev/null
