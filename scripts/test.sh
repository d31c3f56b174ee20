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
npx ava 'dist/test/integration/**/*.test.js' '!dist/test/integration/net-*.test.js' '!dist/test/integration/kvm-hostile-console.test.js'
# a guest flooding its serial console keeps a core busy for a minute or more
# under tcg: alone, so that the deadlines other VM tests check (rkt enter's
# 10 s for an agent's answer) are not measured against it
npx ava dist/test/integration/kvm-hostile-console.test.js
# the networking library's tests compare the whole host (namespaces, links,
# leases, iptables) before and after: they run when no pod of another test runs
npx ava 'dist/test/integration/net-*.test.js'
