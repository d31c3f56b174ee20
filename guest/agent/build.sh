#!/bin/bash
# Build the guest agent as one static binary:  guest/agent/build.sh OUT
# Needs gcc and libc6-dev (static glibc). The agent resolves no user or
# group names and no hosts, so static glibc's NSS caveats do not apply.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$1
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$(dirname "$out")/.rkt-agent.XXXXXX")
trap 'rm -f "$tmp"' EXIT
gcc -static -O2 -s -std=gnu11 -Wall -Wextra -pthread \
  -o "$tmp" "$here/agent.c" "$here/session.c" "$here/app-context.c" "$here/request.c" "$here/frame.c" "$here/io.c" "$here/app-io.c" "$here/app-ctl.c" "$here/app-request.c"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
