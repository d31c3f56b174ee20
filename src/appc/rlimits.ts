import { UsageError } from '../errors.js';
import type { Annotation } from './types.js';

// Resource limits (setrlimit) of an app. appc has no isolator for them; an
// OCI bundle's process.rlimits needs them, so they travel as an annotation
// of the app in the pod manifest, written by stage0 and applied by the
// flavors whose apps are units (systemd's Limit*= settings).

export const RLIMITS_ANNOTATION = 'rkt-ts/rlimits';

/** The OCI/POSIX names and systemd's unit keys for them. */
export const RLIMIT_UNIT_KEYS: Record<string, string> = {
  RLIMIT_CPU: 'LimitCPU',
  RLIMIT_FSIZE: 'LimitFSIZE',
  RLIMIT_DATA: 'LimitDATA',
  RLIMIT_STACK: 'LimitSTACK',
  RLIMIT_CORE: 'LimitCORE',
  RLIMIT_RSS: 'LimitRSS',
  RLIMIT_NOFILE: 'LimitNOFILE',
  RLIMIT_AS: 'LimitAS',
  RLIMIT_NPROC: 'LimitNPROC',
  RLIMIT_MEMLOCK: 'LimitMEMLOCK',
  RLIMIT_LOCKS: 'LimitLOCKS',
  RLIMIT_SIGPENDING: 'LimitSIGPENDING',
  RLIMIT_MSGQUEUE: 'LimitMSGQUEUE',
  RLIMIT_NICE: 'LimitNICE',
  RLIMIT_RTPRIO: 'LimitRTPRIO',
  RLIMIT_RTTIME: 'LimitRTTIME',
};

export interface Rlimit {
  type: string;
  unitKey: string;
  /** A decimal number, or "infinity". */
  soft: string;
  hard: string;
}

const MAX = 2n ** 64n - 1n;

function limitValue(v: unknown, what: string): string {
  if (typeof v !== 'number' && typeof v !== 'string') throw new UsageError(`${what} must be a number`);
  const text = String(v);
  if (!/^\d{1,20}$/.test(text)) throw new UsageError(`${what} must be a non-negative integer, not "${text}"`);
  const n = BigInt(text);
  if (n > MAX) throw new UsageError(`${what} is larger than 2^64-1`);
  return n === MAX ? 'infinity' : n.toString();
}

/** Check a list of {type, soft, hard}; `where` names it in errors (e.g. "process.rlimits"). */
export function parseRlimits(v: unknown, where: string): Rlimit[] {
  if (!Array.isArray(v)) throw new UsageError(`${where} must be a list`);
  const seen = new Set<string>();
  return v.map((r: unknown, i): Rlimit => {
    const at = `${where}[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new UsageError(`${at} must be an object with type, soft and hard`);
    const o = r as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['type', 'soft', 'hard'].includes(k)) throw new UsageError(`${at}.${k} is not a field of an rlimit`);
    const type = o.type;
    if (typeof type !== 'string' || RLIMIT_UNIT_KEYS[type] === undefined) throw new UsageError(`${at}.type "${String(type)}" is not a Linux resource limit (RLIMIT_NOFILE, RLIMIT_NPROC, ...)`);
    if (seen.has(type)) throw new UsageError(`${at}.type ${type} is given twice`);
    seen.add(type);
    const soft = limitValue(o.soft, `${at}.soft`);
    const hard = limitValue(o.hard, `${at}.hard`);
    if (hard !== 'infinity' && (soft === 'infinity' || BigInt(soft) > BigInt(hard))) throw new UsageError(`${at}: soft limit ${soft} is above the hard limit ${hard}`);
    return { type, unitKey: RLIMIT_UNIT_KEYS[type]!, soft, hard };
  });
}

export function rlimitsAnnotation(limits: readonly Rlimit[]): Annotation {
  return { name: RLIMITS_ANNOTATION, value: JSON.stringify(limits.map((l) => ({ type: l.type, soft: l.soft === 'infinity' ? MAX.toString() : l.soft, hard: l.hard === 'infinity' ? MAX.toString() : l.hard }))) };
}

/** The app's limits from its annotations; a value stage0 could not have written is refused. */
export function appRlimits(app: string, annotations: readonly Annotation[] | undefined): Rlimit[] {
  const a = annotations?.find((x) => x.name === RLIMITS_ANNOTATION);
  if (a === undefined) return [];
  let v: unknown;
  try {
    v = JSON.parse(a.value);
  } catch {
    throw new UsageError(`app "${app}": annotation ${RLIMITS_ANNOTATION} is not JSON`);
  }
  return parseRlimits(v, `app "${app}": annotation ${RLIMITS_ANNOTATION}`);
}
