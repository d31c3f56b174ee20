import fs from 'node:fs';
import path from 'node:path';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { isAttachable, type AppStreams, type StreamMode } from '../src/appc/app-streams.js';
import { POD_ROOT } from '../src/stage1-common/app-reports.js';
import { credentialEntries } from '../src/stage1-common/credentials.js';
import { appUnitFiles, appUnitName, reportHooks, type AppUnitOptions, type StdioSpec } from '../src/stage1-common/units.js';

// What the host writes into the pod's stage1 rootfs (the guest's root
// filesystem) before booting it: one systemd unit per app, hooked into the
// guest's rkt-pod.target, the list of apps the guest waits for before it
// powers off (/rkt/apps), and user and group entries for the apps' ids.
// The pod's identity (machine ID, hostname) is on the kernel command line.
// The guest side of this contract (units, rkt-app-exited, the output
// FIFOs) is guest/README.md.

/** Directories and files inside the guest's root, as the guest sees them. */
export const GUEST = {
  ...POD_ROOT,
  stdoutFifo: '/run/rkt/stdout',
  stderrFifo: '/run/rkt/stderr',
  console: '/dev/ttyS0',
  /** The stream modes of the apps that have attachable ones: /rkt/io/<app> (guest/agent/app-io.c). */
  ioConf: '/rkt/io',
  /** Where the agent makes those streams: /run/rkt/io/<app>/{tty,stdin,stdout,stderr}. */
  ioRun: '/run/rkt/io',
  agentUnit: 'rkt-agent.service',
} as const;

export interface GuestConfigOptions {
  /** --insecure-options=paths: the apps get the guest's /dev instead of a private one. */
  sharedDevices?: boolean;
  /**
   * --interactive: the one app's streams are rkt run's own, through the
   * guest agent: a terminal if rkt run has one (with its size), pipes
   * otherwise (so that piped input and its end reach the app).
   */
  interactive?: { tty: boolean; rows?: number; columns?: number };
}

/** The modes an app runs with: its own, or for --interactive those of rkt run's stdin. */
export function effectiveStreams(spec: AppSpec, opts: GuestConfigOptions): AppStreams {
  if (!opts.interactive) return spec.streams;
  const m: StreamMode = opts.interactive.tty ? 'tty' : 'stream';
  return { stdin: m, stdout: m, stderr: m };
}

function stdioFor(spec: AppSpec, opts: GuestConfigOptions): StdioSpec {
  const s = effectiveStreams(spec, opts);
  const dir = `${GUEST.ioRun}/${spec.name}`;
  const out = (mode: StreamMode, log: string, name: string): string =>
    mode === 'null' ? 'null' : mode === 'log' ? `file:${log}` : mode === 'tty' ? 'tty' : `file:${dir}/${name}`;
  const stdio: StdioSpec = {
    input: s.stdin === 'null' ? 'null' : s.stdin === 'tty' ? 'tty' : `file:${dir}/stdin`,
    output: out(s.stdout, GUEST.stdoutFifo, 'stdout'),
    error: out(s.stderr, GUEST.stderrFifo, 'stderr'),
  };
  if (s.stdin === 'tty') {
    stdio.ttyPath = `${dir}/tty`;
    stdio.ttyIsPts = true;
    if (opts.interactive?.rows) stdio.ttyRows = opts.interactive.rows;
    if (opts.interactive?.columns) stdio.ttyColumns = opts.interactive.columns;
  }
  return stdio;
}

/**
 * The options of every unit of one app, as the kvm guest runs it. Its /dev
 * is private unless --insecure-options=paths: the guest's has the
 * virtio-serial ports (the agent's among them), the console, the kernel log
 * and memory devices, none of which an app needs (guest/README.md, "Apps
 * against the agent").
 */
function kvmUnitOptions(spec: AppSpec, opts: GuestConfigOptions): AppUnitOptions {
  return {
    stdio: stdioFor(spec, opts),
    // the agent makes the app's attachable streams before it says it is ready
    ...(isAttachable(effectiveStreams(spec, opts)) && { after: [GUEST.agentUnit] }),
    ...reportHooks(spec),
    hooksInStage1Root: true,
    hooksPrivileged: true,
    mountApiVfs: true,
    privateDevices: !opts.sharedDevices,
    type: 'exec',
  };
}

/** The unit files of one app (its own and its event handlers'), as the kvm guest runs them. */
export function kvmAppUnits(spec: AppSpec, opts: GuestConfigOptions): [string, string][] {
  return appUnitFiles(spec, kvmUnitOptions(spec, opts));
}

function inRoot(rootfs: string, p: string): string {
  return path.join(rootfs, p);
}

function write(file: string, content: string, mode = 0o644): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, content, { mode });
}

/** Write the pod's configuration into the guest root `rootfs` (the pod's stage1/rootfs). */
export function writeGuestConfig(rootfs: string, specs: readonly AppSpec[], opts: GuestConfigOptions): void {
  const units = inRoot(rootfs, GUEST.units);
  const wants = path.join(units, `${GUEST.podTarget}.wants`);
  fs.mkdirSync(wants, { recursive: true });
  for (const spec of specs) {
    for (const [name, text] of kvmAppUnits(spec, opts)) write(path.join(units, name), text);
    const link = path.join(wants, appUnitName(spec.name));
    fs.rmSync(link, { force: true });
    fs.symlinkSync(`../${appUnitName(spec.name)}`, link);
  }
  write(inRoot(rootfs, GUEST.apps), specs.map((s) => `${s.name}\n`).join(''));
  fs.rmSync(inRoot(rootfs, GUEST.ioConf), { recursive: true, force: true });
  for (const spec of specs) {
    const s = effectiveStreams(spec, opts);
    if (isAttachable(s)) write(path.join(inRoot(rootfs, GUEST.ioConf), spec.name), `${s.stdin} ${s.stdout} ${s.stderr}\n`);
  }
  for (const d of [GUEST.status]) {
    fs.rmSync(inRoot(rootfs, d), { recursive: true, force: true });
    fs.mkdirSync(inRoot(rootfs, d), { recursive: true, mode: 0o755 });
  }
  addCredentials(rootfs, specs);
}

/**
 * Append what systemd needs to resolve the apps' numeric ids to the guest's
 * /etc/passwd and /etc/group, in place: a mutable pod's guest may have the
 * files open or cached as its apps come (mutable.ts).
 */
export function addCredentials(rootfs: string, specs: readonly AppSpec[]): void {
  const passwdFile = inRoot(rootfs, '/etc/passwd');
  const groupFile = inRoot(rootfs, '/etc/group');
  const read = (f: string): string => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
  const passwd = read(passwdFile);
  const group = read(groupFile);
  const add = credentialEntries(specs, passwd, group);
  const append = (file: string, text: string, lines: string[]): void => {
    if (lines.length > 0) fs.appendFileSync(file, (text === '' || text.endsWith('\n') ? '' : '\n') + lines.map((l) => `${l}\n`).join(''), { mode: 0o644 });
  };
  append(passwdFile, passwd, add.passwd);
  append(groupFile, group, add.group);
}
