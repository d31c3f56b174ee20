import { Transform, type TransformCallback } from 'node:stream';
import { log } from '../log.js';

// A download's progress on stderr, when stderr is a terminal: one line,
// redrawn in place at most five times a second, with the bytes so far, the
// rate and (when the size is known) a bar and the time left. On a pipe or a
// file nothing is drawn: logs are not the place for carriage returns. With
// --debug the start and the end of each download are logged instead.

const REDRAW_MS = 200;
const BAR_WIDTH = 30;

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

/** The progress line for `done` of `total` bytes after `elapsedMs`. */
export function progressLine(label: string, done: number, total: number | undefined, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0;
  const speed = `${formatBytes(rate)}/s`;
  if (total === undefined || total <= 0) return `${label}: ${formatBytes(done)} ${speed}`;
  const frac = Math.min(1, done / total);
  const filled = Math.round(frac * BAR_WIDTH);
  const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? '>' : '') + ' '.repeat(BAR_WIDTH - filled);
  const left = rate > 0 ? (total - done) / rate : Infinity;
  return `${label}: [${bar}] ${formatBytes(done)}/${formatBytes(total)} ${speed} ${formatDuration(left)} left`;
}

/** A pass-through stream that draws the progress of the bytes going through it. */
export function progressStream(label: string, total: number | undefined, out: NodeJS.WriteStream = process.stderr): Transform {
  const start = Date.now();
  const draw = out.isTTY === true;
  let done = 0;
  let last = 0;
  const render = (final: boolean): void => {
    const line = progressLine(label, done, total, Date.now() - start);
    const width = out.columns ?? 80;
    out.write(`\r${line.slice(0, width - 1)}\x1b[K${final ? '\n' : ''}`);
  };
  log().debug({ label, total }, 'download started');
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      done += chunk.length;
      const now = Date.now();
      if (draw && now - last >= REDRAW_MS) {
        last = now;
        render(false);
      }
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (draw) render(true);
      log().debug({ label, bytes: done, ms: Date.now() - start }, 'download finished');
      cb();
    },
    destroy(err, cb) {
      // a failed download leaves the line clean for the error that follows
      if (draw && err) out.write('\r\x1b[K');
      cb(err);
    },
  });
}
