import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../src/errors.js';
import { log } from '../src/log.js';
import { parseNetList } from '../src/net/netlist.js';
import { readRunOptions, type PodPaths, type RunOptions } from '../src/stage1/contract.js';
import type { RunArgs } from '../src/stage1-common/entry.js';
import { NspawnConfigError } from './errors.js';
import { parseIpcMode, parsePrivateUsers, type IpcMode } from './nspawn-args.js';
import { STAGE1 } from './pod-units.js';
import { syscallTableFromJson, type SyscallTable } from './seccomp.js';

// What the run entrypoint is asked beyond the shared flags: rkt's
// --private-users and --ipc (stage1 flags in rkt, which this stage0 does not
// pass yet: accepted here, or as privateUsers/ipc in run-options.json), and
// the insecure options stage0 recorded in run-options.json.

export interface FlavorFlags {
  privateUsers?: string;
  ipc?: IpcMode;
}

/** Take --private-users[=V] and --ipc=V out of argv; the rest goes to the shared parser. */
export function takeFlavorFlags(argv: readonly string[]): { flags: FlavorFlags; rest: string[] } {
  const flags: FlavorFlags = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const [name, value] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (name === '--private-users') {
      if (value !== 'false') flags.privateUsers = parsePrivateUsers(value ?? '');
    } else if (name === '--ipc') {
      const v = value ?? argv[++i];
      if (v === undefined) throw new UsageError('--ipc needs a value: auto, private or parent');
      flags.ipc = parseIpcMode(v);
    } else {
      rest.push(a);
    }
  }
  return { flags, rest };
}

import { relaxed, type RunRelaxation } from '../src/stage1-common/insecure.js';

export interface PodRunOptions {
  insecure: Set<string>;
  privateUsers?: string;
  ipc: IpcMode;
}

// older stage0s recorded privateUsers as a boolean: read both fields as untrusted
type StoredOptions = Omit<Partial<RunOptions>, 'privateUsers' | 'ipc'> & { privateUsers?: unknown; ipc?: unknown };

/** Merge the flags with run-options.json (a pod run by hand may have none). */
export function podRunOptions(paths: PodPaths, flags: FlavorFlags): PodRunOptions {
  const found = readRunOptions(paths);
  if (found === undefined) log().debug(`${paths.runOptions} does not exist: no insecure options`);
  const stored = (found ?? {}) as StoredOptions;
  const insecure = new Set((stored.insecureOptions ?? []).filter((o): o is string => typeof o === 'string'));
  const out: PodRunOptions = { insecure, ipc: flags.ipc ?? (typeof stored.ipc === 'string' ? parseIpcMode(stored.ipc) : 'auto') };
  const pu = flags.privateUsers ?? (stored.privateUsers === true ? 'pick' : typeof stored.privateUsers === 'string' ? parsePrivateUsers(stored.privateUsers) : undefined);
  if (pu !== undefined) out.privateUsers = pu;
  return out;
}

/** rkt's fallback: the words a user may give for every run-time relaxation at once. */
export function insecure(opts: PodRunOptions, what: RunRelaxation): boolean {
  return relaxed(opts.insecure, what);
}

/**
 * Refuse a malformed --net list (bad names, host or none mixed with
 * others) before anything is mounted; which networks exist is known only
 * once their configs are loaded (network.ts).
 */
export function checkNetwork(args: RunArgs): void {
  parseNetList(args.net.length === 0 ? ['default'] : args.net);
}

export function loadSyscallTable(rootfs: string): SyscallTable {
  const file = path.join(rootfs, STAGE1.syscalls);
  try {
    return syscallTableFromJson(JSON.parse(fs.readFileSync(file, 'utf8')) as { groups: Record<string, string[]>; known: string[] });
  } catch (err) {
    throw new NspawnConfigError(`the stage1 image has no readable system call table (${file}: ${(err as Error).message}); rebuild it with stage1-nspawn/build`);
  }
}
