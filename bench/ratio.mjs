// Each command's median from a hyperfine --export-json file, then the ratio of the first
// command's median to each other's (the figure bench/RESULTS.md records), and of any other
// to those after it (a base checkout's to the peers).
// Usage: node bench/ratio.mjs RESULT.json
import fs from 'node:fs';
const r = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')).results;
const med = (x) => {
  const s = [...x.times].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};
const show = (s) => (s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(3)} s`);
for (const x of r) console.log(`${x.command}: median ${show(med(x))} (${x.times.length} runs)`);
for (const x of r.slice(1)) console.log(`ratio ${r[0].command} / ${x.command}: ${(med(r[0]) / med(x)).toFixed(2)}`);
// a base checkout timed in the same run (BENCH_BASE): its ratios to the peers
const isBase = (x) => x.command.startsWith('base');
for (const b of r.filter(isBase)) for (const x of r.slice(1).filter((y) => !isBase(y))) console.log(`ratio ${b.command} / ${x.command}: ${(med(b) / med(x)).toFixed(2)}`);
