// Time shell commands round-robin (A B C, A B C, ...) rather than one after the other as
// hyperfine does, so that a load that drifts during the run (other work on the machine) weighs
// on every command alike. Each command runs through `sh -c`; the median time of `sh -c true`,
// measured in the same rounds, is taken off every time, as hyperfine takes off its shell's.
// Writes hyperfine's --export-json shape (results: [{command, times}]) for bench/ratio.mjs.
// Usage: node bench/interleave.mjs RUNS WARMUP OUT.json NAME CMD [NAME CMD ...]
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';

const [runsArg, warmupArg, out, ...pairs] = process.argv.slice(2);
const runs = Number(runsArg);
const warmup = Number(warmupArg);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(warmup) || !out || pairs.length < 2 || pairs.length % 2) {
  console.error('usage: node bench/interleave.mjs RUNS WARMUP OUT.json NAME CMD [NAME CMD ...]');
  process.exit(2);
}
const cmds = [];
for (let i = 0; i < pairs.length; i += 2) cmds.push({ command: pairs[i], shell: pairs[i + 1], times: [] });
const shell = { command: 'sh -c true', shell: 'true', times: [] };

function once(c) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('sh', ['-c', c.shell], { stdio: ['ignore', 'ignore', 'inherit'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) {
    console.error(`bench: ${c.command} failed (status ${r.status ?? r.signal})`);
    process.exit(1);
  }
  return s;
}

for (let w = 0; w < warmup; w++) for (const c of cmds) once(c);
for (let i = 0; i < runs; i++) {
  shell.times.push(once(shell));
  for (const c of cmds) c.times.push(once(c));
  process.stderr.write(`\rround ${i + 1}/${runs}`);
}
process.stderr.write('\n');
const sorted = [...shell.times].sort((a, b) => a - b);
const base = sorted[Math.floor(sorted.length / 2)];
const results = cmds.map((c) => ({ command: c.command, times: c.times.map((t) => Math.max(t - base, 0)) }));
fs.writeFileSync(out, JSON.stringify({ results, shellMedian: base }));
