import { envPath, envSeconds, type Env } from '../src/stage1-common/env-config.js';

// Everything that tunes the nspawn flavor: the environment variables it
// reads (RKT_NSPAWN_*) and its named timeouts. The variables are documented
// for users in docs/configuration.md.

export const NSPAWN_ENV = {
  /** The systemd-nspawn to use instead of the one on PATH. */
  binary: 'RKT_NSPAWN_BINARY',
  /** Seconds until every app must have started (default 30). */
  bootTimeout: 'RKT_NSPAWN_BOOT_TIMEOUT',
  /** Seconds `rkt stop` waits for the pod's orderly power-off before it kills the pod (default 10). */
  stopTimeout: 'RKT_NSPAWN_STOP_TIMEOUT',
} as const;

/** Where the pod's hand-made cgroups are recorded in the pod directory, for gc. */
export const CGROUPS_FILE = 'nspawn-cgroups.json';

export const NSPAWN_TIMEOUTS = {
  /** Output still in flight when the container ends is read within this. */
  drainMs: 3000,
  /** The pod's systemd exits right after the last app's exit; this is for when it does not. */
  endGraceMs: 10_000,
  /** A SIGKILLed init takes its PID namespace down within moments. */
  killWaitMs: 5000,
} as const;

export function nspawnOverride(env: Env = process.env): string | undefined {
  return envPath(env, NSPAWN_ENV.binary);
}

export function bootTimeoutMs(env: Env = process.env): number {
  return envSeconds(env, NSPAWN_ENV.bootTimeout, 30);
}

export function stopTimeoutMs(env: Env = process.env): number {
  return envSeconds(env, NSPAWN_ENV.stopTimeout, 10);
}
