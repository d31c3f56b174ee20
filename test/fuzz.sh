#!/usr/bin/env bash
# Long fuzzing of the parsers that read guest or image bytes: the property
# tests of test/unit/fuzz-*.test.ts, which the unit suite runs with a few
# cases and a fixed seed, here with many cases and a fresh seed. The seed is
# printed first: a failure replays with the same RKT_FUZZ_SEED (the failure
# message also gives it, with the path of the shrunk case).
# Usage: test/fuzz.sh [RUNS] [SEED]   (RUNS default 20000, SEED default random)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-20000}
seed=${2:-$(od -An -N4 -td4 /dev/urandom | tr -d ' ')}
echo "fuzzing: RKT_FUZZ_RUNS=$runs RKT_FUZZ_SEED=$seed" >&2
npm run --silent build
RKT_FUZZ_RUNS=$runs RKT_FUZZ_SEED=$seed npx ava --serial --timeout=12h 'dist/test/unit/fuzz-*.test.js'
