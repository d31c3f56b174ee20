import { UsageError } from "../errors.js";

// Output the way rkt prints it: tab-aligned tables with a legend row (Go's
// tabwriter with tab padding), or JSON for machines on stdout only.

export type OutputFormat = 'tabbed' | 'json' | 'json-pretty';

export function parseFormat(value: string | undefined): OutputFormat {
  if (value === undefined || value === '' || value === 'tabbed') return 'tabbed';
  if (value === 'json' || value === 'json-pretty') return value;
  throw new UsageError(`unknown --format "${value}"; use json, json-pretty or leave it out for a table`);
}

const TAB = 8;

/** Align cells like tabwriter.NewWriter(w, 0, 8, 1, '\t', 0). */
export function renderTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      if (i < row.length - 1) widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  const lines = rows.map((row) =>
    row
      .map((cell, i) => {
        if (i === row.length - 1) return cell;
        const colWidth = Math.ceil(((widths[i] ?? 0) + 1) / TAB) * TAB;
        return cell + '\t'.repeat(Math.ceil((colWidth - cell.length) / TAB));
      })
      .join(''),
  );
  return lines.map((l) => l + '\n').join('');
}

export function printTable(header: string[], rows: string[][], legend: boolean): void {
  process.stdout.write(renderTable(legend ? [header, ...rows] : rows));
}

export function printJson(value: unknown, format: OutputFormat): void {
  process.stdout.write((format === 'json-pretty' ? JSON.stringify(value, null, '\t') : JSON.stringify(value)) + '\n');
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
/** Human size as rkt's image list shows it (1024-based, no decimals). */
export function humanSize(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Math.round(v)}${UNITS[u]}`;
}

/** Relative time like Go's humanize: "3 seconds ago", "2 days ago". */
export function humanAgo(when: Date, now = new Date()): string {
  const s = Math.max(0, Math.round((now.getTime() - when.getTime()) / 1000));
  const steps: [number, string][] = [
    [60, 'second'],
    [60, 'minute'],
    [24, 'hour'],
    [7, 'day'],
    [Infinity, 'week'],
  ];
  let v = s;
  for (const [div, name] of steps) {
    if (v < div) return v <= 1 && name === 'second' ? 'now' : `${v} ${name}${v === 1 ? '' : 's'} ago`;
    v = Math.floor(v / div);
  }
  return `${v} weeks ago`;
}

/**
 * A time as rkt prints it (status, and list/image list with --full): Go's
 * layout "2006-01-02 15:04:05.999 -0700 MST", whose ".999" drops trailing
 * zeros (and the dot with them), in the local zone.
 */
export function fullTime(d: Date): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const offset = `${sign}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`;
  const frac = pad(d.getMilliseconds(), 3).replace(/0+$/, '');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${frac ? '.' + frac : ''} ${offset} ${zoneName(d, offset)}`;
}

/** The zone's abbreviation ("UTC", "CET"); Go prints the numeric offset where a zone has none. */
function zoneName(d: Date, offset: string): string {
  const name = new Intl.DateTimeFormat('en-US', { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName')?.value ?? '';
  return /^[A-Z]{2,5}$/.test(name) ? name : offset;
}

const ID_PREFIX = 'sha512-';

/** An image ID in rkt's tables (list --full, image list): sha512- and 12 hex digits. */
export function tableImageId(id: string): string {
  return id.slice(0, ID_PREFIX.length + 12);
}

/** appc's short hash, which rkt fetch prints without --full: sha512- and half the digest (32 hex digits). */
export function shortImageId(id: string): string {
  return id.slice(0, ID_PREFIX.length + 32);
}
