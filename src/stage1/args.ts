import { log } from '../log.js';

// The arguments stage0 gives each stage1 entrypoint, as rkt's stage1
// implementor's guide defines them per interface version. Everything rkt's
// contract can express travels here; run-options.json carries only what it
// cannot (see docs/stage1-interface.md, "Extensions"). A flag the stage1's
// version predates is left out with a warning, as rkt's stage0 does, never
// passed to a stage1 that would refuse it.

/** How stage1 makes the apps' /etc/resolv.conf and /etc/hosts (rkt's --dns-conf-mode, version 4). */
export interface DnsConfMode {
  resolv: 'host' | 'stage0' | 'none' | 'default';
  hosts: 'host' | 'stage0' | 'default';
}

export interface RunFlags {
  debug: boolean;
  /** Networks as the user gave them; stage0 always passes at least `default`. */
  net: string[];
  interactive: boolean;
  /** "" for a range stage1 picks, else UIDBASE[:COUNT]. */
  privateUsers?: string;
  mdsToken?: string;
  localConfig?: string;
  hostname?: string;
  dnsConfMode?: DnsConfMode;
  disableCapabilities: boolean;
  disablePaths: boolean;
  disableSeccomp: boolean;
  /** rkt app sandbox: a pod whose apps come through the app entrypoints. */
  mutable?: boolean;
}

/** The first interface version that has each flag rkt added after version 1. */
export const SINCE = {
  hostname: 2,
  insecureOptions: 3,
  dnsConfMode: 4,
  gcLocalConfig: 5,
} as const;

function tooOld(flag: string, version: number): void {
  log().warn(`the pod's stage1 speaks interface version ${version}, which has no ${flag}; running without it`);
}

export function runArgv(version: number, f: RunFlags, uuid: string): string[] {
  const a: string[] = [];
  if (f.debug) a.push('--debug');
  a.push(`--net=${f.net.join(',')}`);
  if (f.interactive) a.push('--interactive');
  if (f.mutable) a.push('--mutable');
  if (f.privateUsers !== undefined) a.push(`--private-users=${f.privateUsers}`);
  if (f.mdsToken !== undefined) a.push(`--mds-token=${f.mdsToken}`);
  if (f.localConfig !== undefined) a.push(`--local-config=${f.localConfig}`);
  if (f.hostname !== undefined && f.hostname !== '') {
    if (version >= SINCE.hostname) a.push(`--hostname=${f.hostname}`);
    else tooOld('--hostname', version);
  }
  const dns = f.dnsConfMode;
  if (dns !== undefined && (dns.resolv !== 'default' || dns.hosts !== 'default')) {
    if (version >= SINCE.dnsConfMode) a.push(`--dns-conf-mode=resolv=${dns.resolv},hosts=${dns.hosts}`);
    else tooOld('--dns-conf-mode', version);
  }
  const insecure: [boolean, string][] = [
    [f.disableCapabilities, '--disable-capabilities-restriction'],
    [f.disablePaths, '--disable-paths'],
    [f.disableSeccomp, '--disable-seccomp'],
  ];
  for (const [on, flag] of insecure) {
    if (!on) continue;
    if (version >= SINCE.insecureOptions) a.push(flag);
    else tooOld(flag, version);
  }
  a.push(uuid);
  return a;
}

export function gcArgv(version: number, f: { debug: boolean; localConfig?: string }, uuid: string): string[] {
  const a: string[] = [];
  if (f.debug) a.push('--debug');
  // older gc entrypoints take no --local-config; rkt leaves it out silently, there being nothing the user asked for
  if (f.localConfig !== undefined && version >= SINCE.gcLocalConfig) a.push(`--local-config=${f.localConfig}`);
  a.push(uuid);
  return a;
}

/** `processFlags`: the options of enterProcessArgs (stage1-common/enter-process.ts), which rkt enter does not pass. */
export function enterArgv(f: { pid: number; appName: string; processFlags?: readonly string[] }, command: readonly string[]): string[] {
  return [`--pid=${f.pid}`, `--appname=${f.appName}`, ...(f.processFlags ?? []), '--', ...command];
}

export function stopArgv(f: { force: boolean }, uuid: string): string[] {
  return [...(f.force ? ['--force'] : []), uuid];
}

/** Which streams a custom attach connects (rkt attach --mode=stdin,stdout,...). */
export interface AttachEndpoints {
  ttyIn: boolean;
  ttyOut: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** rkt's actions, and ours: `console`, a kvm pod's serial console for operators. */
export type AttachAction = 'auto-attach' | 'custom-attach' | 'list' | 'console';

/** The attach entrypoint (a crossing entrypoint: the enter command, pid and app come in the environment). */
export function attachArgv(f: { action: AttachAction; app: string; debug: boolean; endpoints?: AttachEndpoints }): string[] {
  const a = [`--action=${f.action}`, `--app=${f.app}`, `--debug=${f.debug}`];
  const e = f.endpoints;
  if (f.action === 'custom-attach' && e !== undefined) {
    a.push(`--tty-in=${e.ttyIn}`, `--tty-out=${e.ttyOut}`, `--stdin=${e.stdin}`, `--stdout=${e.stdout}`, `--stderr=${e.stderr}`);
  }
  return a;
}

export type AppEntrypoint = 'appAdd' | 'appStart' | 'appStop' | 'appRm';

/** app/add's flags (rkt's version 5): the app, the pod and the insecure options. */
export function appAddArgv(f: { app: string; debug: boolean; uuid: string; disableCapabilities: boolean; disablePaths: boolean; disableSeccomp: boolean; privateUsers?: string }): string[] {
  const a = [`--app=${f.app}`, `--debug=${f.debug}`, `--uuid=${f.uuid}`];
  if (f.disableCapabilities) a.push('--disable-capabilities-restriction');
  if (f.disablePaths) a.push('--disable-paths');
  if (f.disableSeccomp) a.push('--disable-seccomp');
  if (f.privateUsers !== undefined) a.push(`--private-users=${f.privateUsers}`);
  return a;
}

/** app/start, app/stop and app/rm take the app and --debug only. */
export function appArgv(f: { app: string; debug: boolean }): string[] {
  return [`--app=${f.app}`, `--debug=${f.debug}`];
}
