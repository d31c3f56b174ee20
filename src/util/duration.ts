import { UsageError } from '../errors.js';

const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse a Go duration ("24h", "1h30m", "90s", "0") into milliseconds, as rkt's flags take them. */
export function parseDuration(value: string, flag: string): number {
  if (value === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < value.length) {
    re.lastIndex = pos;
    const m = re.exec(value);
    if (!m) throw new UsageError(`invalid duration "${value}" for ${flag}; use a form like 30s, 10m or 24h`);
    total += Number(m[1]) * UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (value.length === 0) throw new UsageError(`empty duration for ${flag}`);
  return total;
}
