// Shape checks for untrusted JSON. Each one names the field it looked at,
// so a bad manifest is reported as `app.ports[1].port: must be ...` rather
// than as a type error deep in whatever consumes the value.
//
// JSON null counts as absent: Go's encoder writes `null` for empty slices
// that lack omitempty (rkt's pod manifests carry `"volumes":null`).

import { ManifestError, quote } from '../errors.js';
import { isACIdentifier, isACName } from './acname.js';

export function fail(field: string, rule: string): never {
  throw new ManifestError(field, rule);
}

export function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/** Path of a member: `a.b`, `a[2]`, or `a["net.ipv4.ip_forward"]` for keys that are not plain words. */
export function sub(field: string, key: string | number): string {
  if (typeof key === 'number') return `${field}[${key}]`;
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return `${field}[${JSON.stringify(key)}]`;
  return field === '' ? key : `${field}.${key}`;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function need(v: unknown, field: string): void {
  if (!present(v)) fail(field, 'is required');
}

export function expectObject(v: unknown, field: string): Record<string, unknown> {
  need(v, field);
  if (!isPlainObject(v)) fail(field, 'must be a JSON object');
  return v;
}

export function expectArray(v: unknown, field: string): unknown[] {
  need(v, field);
  if (!Array.isArray(v)) fail(field, 'must be a JSON array');
  return v;
}

export function expectString(v: unknown, field: string): string {
  need(v, field);
  if (typeof v !== 'string') fail(field, 'must be a string');
  return v;
}

export function expectNonEmptyString(v: unknown, field: string): string {
  const s = expectString(v, field);
  if (s === '') fail(field, 'must not be empty');
  return s;
}

export function expectBool(v: unknown, field: string): boolean {
  need(v, field);
  if (typeof v !== 'boolean') fail(field, 'must be true or false');
  return v;
}

export function expectInt(v: unknown, field: string, min?: number, max?: number): number {
  need(v, field);
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(field, 'must be an integer');
  if (min !== undefined && max !== undefined && (v < min || v > max)) fail(field, `must be between ${min} and ${max}`);
  if (min !== undefined && v < min) fail(field, min === 0 ? 'must not be negative' : `must be at least ${min}`);
  if (max !== undefined && v > max) fail(field, `must be at most ${max}`);
  return v;
}

export function expectACName(v: unknown, field: string): string {
  const s = expectNonEmptyString(v, field);
  if (!isACName(s)) fail(field, `${quote(s)} is not a valid AC name (lowercase letters, digits and "-", starting and ending with a letter or digit)`);
  return s;
}

export function expectACIdentifier(v: unknown, field: string): string {
  const s = expectNonEmptyString(v, field);
  if (!isACIdentifier(s)) {
    fail(field, `${quote(s)} is not a valid AC identifier (lowercase letters, digits and "-._~/", starting and ending with a letter or digit)`);
  }
  return s;
}

/** POSIX absolute path: what the spec means by "absolute path" inside a rootfs or on the host. */
export function expectAbsolutePath(v: unknown, field: string): string {
  const s = expectNonEmptyString(v, field);
  if (!s.startsWith('/')) fail(field, `${quote(s)} must be an absolute path`);
  if (s.includes('\0')) fail(field, 'must not contain a NUL byte');
  return s;
}

export function expectStringArray(v: unknown, field: string): string[] {
  return expectArray(v, field).map((e, i) => expectString(e, sub(field, i)));
}

/** A JSON object used as a string-to-string map (userAnnotations, sysctl). */
export function expectStringMap(v: unknown, field: string): Record<string, string> {
  const o = expectObject(v, field);
  const out: Record<string, string> = {};
  // defineProperty: assigning to out["__proto__"] would drop the key silently
  for (const [k, val] of Object.entries(o)) {
    Object.defineProperty(out, k, { value: expectString(val, sub(field, k)), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Report the first repeated key, naming the element that repeats it. */
export function checkUnique<T>(items: readonly T[], key: (item: T) => string, field: string, keyField: string, what: string): void {
  const seen = new Set<string>();
  items.forEach((item, i) => {
    const k = key(item);
    const at = keyField === '' ? sub(field, i) : sub(sub(field, i), keyField);
    if (seen.has(k)) fail(at, `duplicate ${what} ${quote(k)}`);
    seen.add(k);
  });
}
