// The ratio of medians of the first two commands of a hyperfine --export-json file.
// Usage: node bench/ratio.mjs RESULT.json
import fs from 'node:fs';
const r = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')).results;
const med = (x) => {
  const s = [...x.times].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const a = med(r[0]);
const b = med(r[1]);
console.log(`${r[0].command} median ${a.toFixed(3)} s, ${r[1].command} median ${b.toFixed(3)} s, ratio ${(a / b).toFixed(2)}`);
