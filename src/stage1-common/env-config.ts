import { UsageError } from '../errors.js';

// Typed readers for the environment variables that tune a flavor. Each
// flavor declares its variables once, in its config module, with these;
// a bad value is a usage error that names the variable.

export type Env = Readonly<Record<string, string | undefined>>;

function given(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

/** A positive number of seconds, returned in milliseconds. */
export function envSeconds(env: Env, name: string, defaultSeconds: number): number {
  const v = given(env, name);
  if (v === undefined) return defaultSeconds * 1000;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name}=${v} is not a positive number of seconds`);
  return n * 1000;
}

/** One of a fixed set of words, or undefined when unset. */
export function envChoice<T extends string>(env: Env, name: string, choices: readonly T[]): T | undefined {
  const v = given(env, name);
  if (v === undefined) return undefined;
  if (!(choices as readonly string[]).includes(v)) throw new UsageError(`${name}=${v}: use ${choices.join(' or ')}`);
  return v as T;
}

/** An absolute path, or undefined when unset. */
export function envPath(env: Env, name: string): string | undefined {
  const v = given(env, name);
  if (v !== undefined && !v.startsWith('/')) throw new UsageError(`${name}=${v} must be an absolute path`);
  return v;
}

/** Free text, or undefined when unset. */
export function envText(env: Env, name: string): string | undefined {
  return given(env, name);
}
