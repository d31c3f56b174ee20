import fs from 'node:fs';
import path from 'node:path';
import type { AppStreams } from '../src/appc/app-streams.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { POD_ROOT } from '../src/stage1-common/app-reports.js';
import { credentialEntries } from '../src/stage1-common/credentials.js';
import { appUnitFiles, appUnitName, appUnitNames, podTarget, reportHooks, type AppUnitOptions, type StdioSpec } from '../src/stage1-common/units.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { FileLock } from '../src/util/lock.js';
import type { SeccompUnitPlan } from './seccomp.js';

// What the run entrypoint writes into the pod's stage1 rootfs (the
// container's root) before booting it: one systemd unit per app, made by the
// shared generator with what differs in this flavor (stdio, hooks, masked
// paths, seccomp), the pod target that wants them, the list of apps the last
// exit hook checks, and the pod's identity. The container side of the
// contract is stage1-nspawn/image/ (rkt-init, rkt-pod-end, units) and the
// exit hook it shares with the kvm guest (guest/image/rkt/bin/rkt-app-exited).

/** Paths inside the container's root. */
export const STAGE1 = {
  ...POD_ROOT,
  io: '/rkt/io',
  stdout: '/rkt/io/stdout',
  stderr: '/rkt/io/stderr',
  stdin: '/rkt/io/stdin',
  /** Per app with stream or tty modes, the ends of its streams (app-io.ts). */
  iottymux: '/rkt/iottymux',
  init: '/rkt/bin/rkt-init',
  console: '/dev/console',
  /** systemd's syscall table, recorded at build time (see seccomp.ts). */
  syscalls: '/rkt/syscalls.json',
} as const;

/**
 * rkt's masked paths: the kernel's knobs read-only, its logs and memory out
 * of reach. systemd's Protect* settings make /proc/sys, /sys and
 * /proc/sysrq-trigger read-only or gone, /proc/kcore, /proc/kallsyms and
 * /proc/kmsg inaccessible, /sys/fs/cgroup read-only, and stay current with
 * the kernel. (InaccessiblePaths= cannot add more /proc entries here:
 * systemd 252 resolves them in the app's root before it mounts its /proc,
 * and skips them.)
 */
export const MASKED_PATHS: ReadonlyArray<readonly [string, string]> = [
  ['ProtectKernelTunables', 'yes'],
  ['ProtectKernelLogs', 'yes'],
  ['ProtectControlGroups', 'yes'],
];

export interface InteractiveIo {
  /** rkt run's stdin is a terminal: the app gets the container's console, which nspawn ties to it. */
  tty: boolean;
  rows?: number;
  columns?: number;
}

export interface NspawnUnitOptions {
  seccomp: SeccompUnitPlan;
  /** --insecure-options=paths: no masked paths. */
  insecurePaths?: boolean;
  interactive?: InteractiveIo;
}

/**
 * An app's own modes (--stdin/--stdout/--stderr): null, the pod's output
 * (log), or the ends the relay made for it in /rkt/iottymux/<app>/
 * (app-io.ts): a socket for a stream stdin, FIFOs for stream output, a
 * terminal for tty.
 */
function ownStdio(app: string, s: AppStreams): StdioSpec {
  const dir = `${STAGE1.iottymux}/${app}`;
  const out = (n: 'stdout' | 'stderr'): string => ({ null: 'null', log: `file:${STAGE1[n]}`, stream: `file:${dir}/${n}`, tty: 'tty' })[s[n]];
  const input = s.stdin === 'tty' ? 'tty' : s.stdin === 'stream' ? `file:${dir}/stdin` : 'null';
  return { input, output: out('stdout'), error: out('stderr'), ...(s.stdin === 'tty' && { ttyPath: `${dir}/tty` }) };
}

function stdioFor(spec: AppSpec, interactive: InteractiveIo | undefined): StdioSpec {
  if (!interactive) return ownStdio(spec.name, spec.streams);
  if (interactive?.tty) {
    return {
      input: 'tty',
      output: 'tty',
      error: 'tty',
      ttyPath: STAGE1.console,
      ...(interactive.rows !== undefined && { ttyRows: interactive.rows }),
      ...(interactive.columns !== undefined && { ttyColumns: interactive.columns }),
    };
  }
  return { input: interactive ? `file:${STAGE1.stdin}` : 'null', output: `file:${STAGE1.stdout}`, error: `file:${STAGE1.stderr}` };
}

/** The options of every unit of one app, as the pod's systemd runs them. */
function nspawnUnitOptions(spec: AppSpec, opts: NspawnUnitOptions): AppUnitOptions {
  const extra: [string, string][] = [];
  if (!opts.insecurePaths) extra.push(...MASKED_PATHS.map(([k, v]): [string, string] => [k, v]));
  for (const f of opts.seccomp.filters) extra.push(['SystemCallFilter', f]);
  if (opts.seccomp.errno !== undefined) extra.push(['SystemCallErrorNumber', opts.seccomp.errno]);
  return {
    stdio: stdioFor(spec, opts.interactive),
    ...reportHooks(spec),
    hooksInStage1Root: true,
    hooksPrivileged: true,
    mountApiVfs: true,
    type: 'exec',
    extra,
  };
}

/** The unit files of one app (its own first, then its event handlers'), as the pod's systemd runs them. */
export function nspawnAppUnits(spec: AppSpec, opts: NspawnUnitOptions): [string, string][] {
  return appUnitFiles(spec, nspawnUnitOptions(spec, opts));
}

/** The unit text of one app, as the pod's systemd runs it. */
export function nspawnAppUnit(spec: AppSpec, opts: NspawnUnitOptions): string {
  return nspawnAppUnits(spec, opts)[0]![1];
}

export interface PodConfigOptions extends NspawnUnitOptions {
  uuid: string;
  hostname: string;
  /** Per app: its seccomp plan (overrides `seccomp`). */
  seccompByApp?: ReadonlyMap<string, SeccompUnitPlan>;
  /** rkt app sandbox: the exit hook never ends the pod (POD_ROOT.mutable). */
  mutable?: boolean;
}

function write(file: string, content: string, mode = 0o644): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, content, { mode });
}

function freshDir(dir: string, mode = 0o755): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode });
}

function readOr(file: string, dflt: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return dflt;
  }
}

/**
 * The pod's systemd must resolve every app's numeric user and groups (see
 * credentialEntries). The files are replaced whole, and an app added and a
 * command entered as another user may add to them at once: the host's unit
 * directory of the pod is locked meanwhile.
 */
function addCredentials(rootfs: string, podDir: string, specs: readonly Pick<AppSpec, 'uid' | 'gid' | 'supplementaryGids'>[]): void {
  fs.mkdirSync(path.join(podDir, 'nspawn-units'), { recursive: true, mode: 0o700 });
  const lock = FileLock.acquire(path.join(podDir, 'nspawn-units'), 'exclusive', { what: 'the pod\'s users and groups' });
  try {
    addCredentialsLocked(rootfs, specs);
  } finally {
    lock.release();
  }
}

function addCredentialsLocked(rootfs: string, specs: readonly Pick<AppSpec, 'uid' | 'gid' | 'supplementaryGids'>[]): void {
  const passwdFile = path.join(rootfs, 'etc/passwd');
  const groupFile = path.join(rootfs, 'etc/group');
  const passwd = readOr(passwdFile, '');
  const group = readOr(groupFile, '');
  const add = credentialEntries(specs, passwd, group);
  const joined = (old: string, lines: string[]): string => (old === '' || old.endsWith('\n') ? old : `${old}\n`) + lines.map((l) => `${l}\n`).join('');
  if (add.passwd.length > 0) writeFileAtomic(passwdFile, joined(passwd, add.passwd));
  if (add.group.length > 0) writeFileAtomic(groupFile, joined(group, add.group));
}

/** A command entered as a user or groups of its own (an OCI exec's): the pod's systemd must resolve them too. */
export function addEnteredCredentials(rootfs: string, podDir: string, ids: Pick<AppSpec, 'uid' | 'gid' | 'supplementaryGids'>): void {
  addCredentials(rootfs, podDir, [ids]);
}

/**
 * Where the host keeps its own copy of each app's unit, outside the
 * container's root, for `rkt enter` to read: the copy in the container
 * root is the container's to change once it runs.
 */
export function hostUnitCopy(podDir: string, app: string): string {
  return path.join(podDir, 'nspawn-units', appUnitName(app));
}

/** One app's unit files in the container root, and the host's copy of its own unit. */
function writeAppUnits(rootfs: string, podDir: string, spec: AppSpec, opts: NspawnUnitOptions): void {
  const files = nspawnAppUnits(spec, opts);
  for (const [name, text] of files) write(path.join(rootfs, STAGE1.units, name), text);
  write(hostUnitCopy(podDir, spec.name), files[0]![1], 0o600);
}

/** An app added to a running mutable pod: its units and the ids its systemd must resolve (the pod's systemd is reloaded after). */
export function writeAddedApp(rootfs: string, podDir: string, spec: AppSpec, opts: NspawnUnitOptions): void {
  writeAppUnits(rootfs, podDir, spec, opts);
  addCredentials(rootfs, podDir, [spec]);
}

/** Undo writeAddedApp, and the app's bookkeeping in the container root; what is already gone is no error. */
export function removeAppFiles(rootfs: string, podDir: string, spec: Pick<AppSpec, 'name' | 'eventHandlers'>): void {
  for (const name of appUnitNames(spec)) fs.rmSync(path.join(rootfs, STAGE1.units, name), { force: true });
  fs.rmSync(hostUnitCopy(podDir, spec.name), { force: true });
  for (const d of [STAGE1.status, STAGE1.deferred]) fs.rmSync(path.join(rootfs, d, spec.name), { force: true });
}

/** Write the pod's configuration into the container root `rootfs` (the pod's stage1/rootfs), and the host's copy of the units into `podDir`. */
export function writePodConfig(rootfs: string, podDir: string, specs: readonly AppSpec[], opts: PodConfigOptions): void {
  const at = (p: string): string => path.join(rootfs, p);
  const units = at(STAGE1.units);
  const wants = path.join(units, `${STAGE1.podTarget}.wants`);
  freshDir(wants);
  for (const spec of specs) {
    writeAppUnits(rootfs, podDir, spec, { ...opts, seccomp: opts.seccompByApp?.get(spec.name) ?? opts.seccomp });
    fs.symlinkSync(`../${appUnitName(spec.name)}`, path.join(wants, appUnitName(spec.name)));
  }
  write(path.join(units, STAGE1.podTarget), podTarget(specs.map((s) => s.name), `rkt pod ${opts.uuid}`));
  write(at(STAGE1.apps), specs.map((s) => `${s.name}\n`).join(''));
  addCredentials(rootfs, podDir, specs);
  for (const d of [STAGE1.status, STAGE1.io, STAGE1.iottymux]) freshDir(at(d));
  fs.rmSync(at(STAGE1.mutable), { force: true });
  if (opts.mutable) write(at(STAGE1.mutable), '');
  // systemd's machine ID, and nspawn's container_uuid, are the pod UUID (as rkt does it).
  write(at('/etc/machine-id'), `${opts.uuid.replace(/-/g, '')}\n`, 0o444);
  write(at('/etc/hostname'), `${opts.hostname}\n`);
}
