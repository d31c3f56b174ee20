import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../src/errors.js';
import { log } from '../src/log.js';
import { parseNetList } from '../src/net/netlist.js';
import { readRunOptions, type PodPaths } from '../src/stage1/contract.js';
import type { RunArgs } from '../src/stage1-common/entry.js';
import { NspawnConfigError } from './errors.js';
import { parseIpcMode, parsePrivateUsers, type IpcMode } from './nspawn-args.js';
import { STAGE1 } from './pod-units.js';
import { syscallTableFromJson, type SyscallTable } from './seccomp.js';
import type { RunRelaxation } from '../src/stage1-common/insecure.js';

// What the nspawn run entrypoint is asked beyond the shared flags: rkt's
// --ipc (a flag of interface version 6, which this stage1 does not declare:
// accepted here, and otherwise taken from run-options.json as this
// implementation's extension), and rkt's --private-users and --disable-*
// flags, which nspawn honours.

export interface FlavorFlags {
  ipc?: IpcMode;
}

/** Take --ipc=V out of argv; the rest goes to the shared parser. */
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
    if (name === '--ipc') {
      const v = value ?? argv[++i];
      if (v === undefined) throw new UsageError('--ipc needs a value: auto, private or parent');
      flags.ipc = parseIpcMode(v);
    } else {
      rest.push(a);
    }
  }
  return { flags, rest };
}

export interface PodRunOptions {
  /** What the --disable-* flags switched off. */
  insecure: Set<RunRelaxation>;
  privateUsers?: string;
  ipc: IpcMode;
}

/** The flags, and the --ipc extension from run-options.json when not given as a flag (a pod run by hand may have none). */
export function podRunOptions(paths: PodPaths, args: RunArgs, flags: FlavorFlags): PodRunOptions {
  const insecure = new Set<RunRelaxation>();
  if (args.disableCapabilities) insecure.add('capabilities');
  if (args.disablePaths) insecure.add('paths');
  if (args.disableSeccomp) insecure.add('seccomp');
  let ipc = flags.ipc;
  if (ipc === undefined) {
    const stored = readRunOptions(paths);
    if (stored === undefined) log().debug(`${paths.runOptions} does not exist: --ipc=auto`);
    ipc = typeof stored?.ipc === 'string' ? parseIpcMode(stored.ipc) : 'auto';
  }
  const out: PodRunOptions = { insecure, ipc };
  if (args.privateUsers !== undefined) out.privateUsers = parsePrivateUsers(args.privateUsers);
  return out;
}

/** Whether a --disable-* flag switched this off. */
export function insecure(opts: PodRunOptions, what: RunRelaxation): boolean {
  return opts.insecure.has(what);
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
