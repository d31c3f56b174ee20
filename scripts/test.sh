#!/usr/bin/env bash
# The whole test suite: set-up check, build, unit tests, then integration
# tests (these run the real CLI as root).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
bash scripts/setup.sh
npx ava 'dist/test/unit/**/*.test.js'
if [ "$(id -u)" != 0 ]; then
  echo "test: the integration tests need root: run npm test as root, not as $(id -un)" >&2
  exit 1
fi
alone=(dist/test/integration/kvm-hostile-guest.test.js dist/test/integration/kvm-hostile-console.test.js)
npx ava 'dist/test/integration/**/*.test.js' '!dist/test/integration/net-*.test.js' "${alone[@]/#/!}"
# one file at a time: a guest flooding its serial console keeps a core busy
# for a minute or more under tcg, and the hostile guest's test measures
# deadlines (rkt enter's 10 s for an agent's answer) and races a guest's
# systemd, which other VMs on the same 2 cores would distort
npx ava --concurrency=1 "${alone[@]}"
# the networking library's tests compare the whole host (namespaces, links,
# leases, iptables) before and after: they run when no pod of another test runs
npx ava 'dist/test/integration/net-*.test.js'
