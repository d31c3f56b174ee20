import type { ExecutionContext } from 'ava';
import fc from 'fast-check';

// Settings shared by the property tests of the parsers that read guest or
// image bytes (test/unit/fuzz-*.test.ts). The suite runs a few hundred
// cases with a fixed seed, so a failure reproduces; bench/fuzz.sh runs many
// more with any seed:
//
//   RKT_FUZZ_RUNS  cases per property (default 100)
//   RKT_FUZZ_SEED  seed (default 20260101)

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${raw} is not an integer`);
  return n;
}

export const FUZZ_RUNS = envInt('RKT_FUZZ_RUNS', 100);
export const FUZZ_SEED = envInt('RKT_FUZZ_SEED', 20260101);

/** Check parameters: the seed, and `scale` times the run count (for costly properties). */
export function fuzzParams<T>(scale = 1): fc.Parameters<T> {
  return { seed: FUZZ_SEED, numRuns: Math.max(1, Math.round(FUZZ_RUNS * scale)) };
}

/** Check a property; a failure names the shrunk input, the error and how to replay it. */
export function fuzz<T>(t: ExecutionContext, property: fc.IProperty<T>, params: fc.Parameters<T> = fuzzParams()): void {
  const r = fc.check(property, params);
  t.false(r.failed, r.failed ? report(r) : '');
}

export async function fuzzAsync<T>(t: ExecutionContext, property: fc.IAsyncProperty<T>, params: fc.Parameters<T> = fuzzParams()): Promise<void> {
  const r = await fc.check(property, params);
  t.false(r.failed, r.failed ? report(r) : '');
}

function report<T>(r: fc.RunDetails<T>): string {
  const err = r.errorInstance instanceof Error ? r.errorInstance.message : String(r.errorInstance);
  const input = fc.stringify(r.counterexample);
  return `property failed: ${err}\ninput: ${input.length > 3000 ? `${input.slice(0, 3000)}...` : input}\n(replay: RKT_FUZZ_SEED=${r.seed}, path ${r.counterexamplePath})`;
}

// Control characters (C0, DEL, C1) and the bidirectional overrides: from
// image or guest bytes they would rewrite or hide what the terminal shows.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/**
 * `err` must be the module's typed error, with a message that is one
 * printable line of reasonable length, whatever bytes caused it.
 */
export function assertTypedError(err: unknown, type: abstract new (...args: never[]) => Error, input?: unknown): void {
  const where = input === undefined ? '' : ` (input ${preview(input)})`;
  if (!(err instanceof type)) throw new Error(`expected a ${type.name}, got ${String((err as Error)?.stack ?? err)}${where}`);
  if (UNPRINTABLE.test(err.message)) throw new Error(`${type.name} message is not one printable line: ${JSON.stringify(err.message)}${where}`);
  if (err.message.length > 2000) throw new Error(`${type.name} message is ${err.message.length} characters long${where}`);
}

/** Run `fn`, which must finish within `ms` (a parser that hangs or goes quadratic fails here). */
export function withinMs<T>(ms: number, what: string, fn: () => T): T {
  const start = performance.now();
  const out = fn();
  const took = performance.now() - start;
  if (took > ms) throw new Error(`${what} took ${took.toFixed(0)} ms, more than ${ms} ms`);
  return out;
}

export async function withinMsAsync<T>(ms: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (hang?)`)), ms);
  });
  try {
    return await Promise.race([fn(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function preview(v: unknown): string {
  const text = Buffer.isBuffer(v) || v instanceof Uint8Array ? Buffer.from(v).toString('hex') : JSON.stringify(v) ?? String(v);
  return text.length > 300 ? `${text.slice(0, 300)}...` : text;
}

type Json = unknown;
type Path = (string | number)[];

function allPaths(v: Json, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...allPaths(x, [...at, i])));
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) out.push(...allPaths(x, [...at, k]));
  return out;
}

/** One change to a JSON document: replace or delete a node, add a key to an object, duplicate a list item. */
export interface Mutation {
  pick: number;
  action: 'replace' | 'delete' | 'add' | 'dup';
  key: string;
  value: Json;
}

/** Mutations whose added keys come from `keys` (the schema's names reach its rules) or anywhere, and values from `value`. */
export function mutationOf(keys: fc.Arbitrary<string>, value: fc.Arbitrary<Json>): fc.Arbitrary<Mutation> {
  return fc.record({
    pick: fc.nat(),
    action: fc.constantFrom('replace', 'delete', 'add', 'dup'),
    key: fc.oneof(keys, fc.string({ maxLength: 8 })),
    value,
  });
}

/**
 * A valid document with some mutations applied: it reaches each rule of a
 * parser, where random JSON rarely gets past the first field.
 */
export function mutate(base: Json, mutations: Mutation[]): Json {
  const doc = structuredClone(base) as Json;
  for (const m of mutations) {
    const paths = allPaths(doc).slice(1);
    if (paths.length === 0) break;
    const p = paths[m.pick % paths.length]!;
    const parent = p.slice(0, -1).reduce<Json>((o, k) => (o as Record<string | number, Json>)[k], doc) as Record<string | number, Json> | Json[];
    const key = p[p.length - 1]!;
    const target = (parent as Record<string | number, Json>)[key];
    if (m.action === 'replace') (parent as Record<string | number, Json>)[key] = m.value;
    else if (m.action === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete (parent as Record<string, Json>)[key];
    } else if (m.action === 'add' && typeof target === 'object' && target !== null && !Array.isArray(target)) {
      Object.defineProperty(target, m.key, { value: m.value, enumerable: true, configurable: true, writable: true });
    } else if (m.action === 'dup' && Array.isArray(target) && target.length > 0) target.push(structuredClone(target[m.pick % target.length]));
  }
  return doc;
}
