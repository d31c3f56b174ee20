#!/usr/bin/env bash
# Where a pod start spends its time: run RUNS pods of FLAVOR (busybox /bin/true, warm store,
# no network where the flavor has one) with --debug and summarise their phase traces
# (docs/architecture.md, "The phase trace of a pod start") into a table: for each phase, the
# median of when it ended and of how long it took, over the runs.
# Usage: bench/phase-trace.sh FLAVOR [RUNS]   FLAVOR: fly, nspawn or kvm
#        (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
flavor=${1:?usage: bench/phase-trace.sh fly|nspawn|kvm [RUNS]}
runs=${2:-10}
case $flavor in
  fly) net=() ;;
  nspawn | kvm) net=(--net=none) ;;
  *) echo "bench: unknown flavor $flavor (fly, nspawn or kvm)" >&2; exit 1 ;;
esac
bench_world "trace-$flavor"
bench_true_image
$rkt run --stage1-name="$flavor" "${net[@]}" example.com/true >/dev/null 2>&1  # warm the tree store
mkdir -p "$work/traces"
for i in $(seq 1 "$runs"); do
  $rkt run --debug --stage1-name="$flavor" "${net[@]}" example.com/true --exec /bin/true 2>"$work/traces/$i" >/dev/null \
    || { echo "bench: run $i failed:" >&2; tail -5 "$work/traces/$i" >&2; exit 1; }
done
node --input-type=module - "$flavor" "$work"/traces/* <<'JS'
import fs from 'node:fs';
// bench_world made the tree the working directory
const { parseMarkLine } = await import(`${process.cwd()}/dist/src/util/phase-trace.js`);
const [flavor, ...files] = process.argv.slice(2);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
// per phase: when it ended, and how long it took: the time since the previous mark of the merged timeline
const phases = new Map();
for (const f of files) {
  const marks = fs.readFileSync(f, 'utf8').split('\n').map(parseMarkLine).filter((m) => m !== undefined);
  marks.forEach((m, i) => {
    const key = `${m.program} ${m.phase}`;
    if (!phases.has(key)) phases.set(key, { at: [], took: [] });
    phases.get(key).at.push(m.at);
    phases.get(key).took.push(m.at - (i > 0 ? marks[i - 1].at : 0));
  });
}
console.log(`${flavor}: ${files.length} pods, medians in ms\n`);
console.log('| phase | by | ends at | takes |');
console.log('|---|---|---:|---:|');
for (const [key, v] of phases) {
  const [by, phase] = key.split(' ');
  console.log(`| ${phase} | ${by} | ${median(v.at).toFixed(1)} | ${median(v.took).toFixed(1)} |`);
}
JS
