import { RktError } from '../errors.js';
import { cpuShares, oomScoreAdj } from '../appc/isolators.js';
import { POD_ROOT } from './app-reports.js';
import type { AppSpec, VolumeMount } from './app-spec.js';
import type { EventHandlerName } from '../appc/types.js';

// systemd units for a pod's apps, for the flavors whose pod is booted by a
// systemd of their own (kvm in a VM, nspawn in a container). What differs
// between flavors (where output goes, what runs after an app exits, which
// API file systems an app gets) comes in as options; nothing here knows
// about qemu or nspawn.
//
// Everything taken from a pod manifest is untrusted text that ends up in a
// unit file. Each kind of value is written in the one syntax systemd reads
// it with, so that no value can change the meaning of the unit:
//   - ExecStart= words: systemd expands %-specifiers on the whole line, then
//     splits it into words (quotes, C escapes), then substitutes $VARIABLES
//     in each word. So "%" is doubled, "$" is doubled, every word is double
//     quoted with C escapes, and a quoted ";" is never a separator.
//   - Environment= assignments: split into words (quotes, C escapes), then
//     %-specifiers expanded; "$" means nothing there.
//   - paths (RootDirectory=, WorkingDirectory=, ReadWritePaths=): taken
//     whole after specifier expansion; quoting would be kept literally, so
//     only "%" is escaped and characters that cannot be written are refused.

export class UnitError extends RktError {}

/** Suffix of every app unit: <app>.service. */
export function appUnitName(app: string): string {
  return `${app}.service`;
}

/** C-style escapes systemd's unquoting understands, for a double-quoted word. */
function cEscape(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (c === 0) throw new UnitError('a NUL character cannot be passed to a program');
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out;
}

/** One argv word for ExecStart=-style lines: taken literally by systemd, whatever it contains. */
export function quoteExecWord(word: string): string {
  return `"${cEscape(word.replace(/%/g, '%%').replace(/\$/g, '$$$$'))}"`;
}

/**
 * A command line for Exec*= settings that runs exactly `argv`. The first
 * word must be an absolute path: systemd reads prefixes such as "-" or "@"
 * off a first word and searches bare names in its own PATH, not the app's.
 */
export function execLine(argv: readonly string[]): string {
  if (argv.length === 0) throw new UnitError('an empty command cannot be run');
  if (!argv[0]!.startsWith('/')) throw new UnitError(`command "${argv[0]}" must be an absolute path`);
  return argv.map(quoteExecWord).join(' ');
}

/** Names systemd accepts in Environment= (it drops others with a warning). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One Environment= value: a double-quoted NAME=value assignment. */
export function environmentAssignment(name: string, value: string): string {
  if (!ENV_NAME.test(name)) {
    throw new UnitError(`environment variable "${name}" cannot be passed by systemd: names are letters, digits and "_", not starting with a digit`);
  }
  return `"${cEscape(`${name}=${value}`.replace(/%/g, '%%'))}"`;
}

/** A path setting's value: written as is, with specifiers escaped. */
export function unitPath(p: string, what: string): string {
  if (!p.startsWith('/')) throw new UnitError(`${what} ${JSON.stringify(p)} must be an absolute path`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(p)) throw new UnitError(`${what} ${JSON.stringify(p)} contains a control character or backslash, which a unit file cannot carry`);
  // systemd strips whitespace around a value, so it would silently change such a path
  if (p.trim() !== p) throw new UnitError(`${what} ${JSON.stringify(p)} ends in whitespace, which a unit file cannot carry`);
  // A leading "-" or "+" would be read as a flag; an absolute path never starts with one.
  return p.replace(/%/g, '%%');
}

/** A path for space-separated list settings (ReadWritePaths=): quoted so spaces stay inside. */
function unitListPath(p: string, what: string): string {
  const v = unitPath(p, what);
  if (/["']/.test(v)) throw new UnitError(`${what} ${JSON.stringify(p)} contains a quote, which a unit file list cannot carry`);
  return /\s/.test(v) ? `"${v}"` : v;
}

/** Where an app's standard streams go, in systemd's own words (null, tty, journal, file:PATH, ...). */
export interface StdioSpec {
  input: string;
  output: string;
  error: string;
  /** For StandardInput=tty: the terminal device, and its size if known. */
  ttyPath?: string;
  /** ttyPath names (a link to) a pseudo-terminal made at boot: allowed as any pts device, not by its path. */
  ttyIsPts?: boolean;
  ttyRows?: number;
  ttyColumns?: number;
}

export interface AppUnitOptions {
  stdio: StdioSpec;
  /**
   * Commands (already in Exec*= syntax, see execLine) run after the app has
   * exited, whatever the reason; systemd sets $EXIT_CODE, $EXIT_STATUS and
   * $SERVICE_RESULT for them. kvm records the status and powers off.
   */
  execStopPost?: string[];
  /** Commands run once the app has been executed (failures ignored); e.g. a "started" mark. */
  execStartPost?: string[];
  /** Run the Exec*Post hooks in the flavor's root, not the app's (RootDirectoryStartOnly=). */
  hooksInStage1Root?: boolean;
  /**
   * Run the hooks with full privileges ("+"): they are the flavor's code, and
   * must not be held to the app's user, capability bounding set or
   * namespaces (powering a VM off needs CAP_SYS_BOOT, which no app has).
   */
  hooksPrivileged?: boolean;
  /** Mount /proc, /sys, /dev and /run inside the app's root (MountAPIVFS=). */
  mountApiVfs?: boolean;
  /**
   * A minimal private /dev instead of the whole of the pod's (PrivateDevices=):
   * the usual pseudo-devices and, for an app given a terminal (TTYPath=), that
   * one, which systemd would not add by itself.
   */
  privateDevices?: boolean;
  /** Root of the app inside the flavor's root; default /opt/stage2/<app>/rootfs. */
  rootDirectory?: string;
  /** Type= of the service: "exec" makes a missing executable a start failure. */
  type?: 'simple' | 'exec';
  /**
   * Variables systemd adds for services with User= or of its own
   * (USER, SHELL, INVOCATION_ID, ...) that the app must not see; a name the
   * app's own environment sets is kept.
   */
  unsetEnvironment?: readonly string[];
  /** Further [Service] lines a flavor needs, as [key, value]; written last. */
  extra?: ReadonlyArray<readonly [string, string]>;
  /** Units this one starts after (After=), e.g. the one that makes its streams. */
  after?: readonly string[];
}

/** What systemd puts in a service's environment besides what the unit sets. */
export const MANAGER_ENVIRONMENT: readonly string[] = [
  'USER',
  'LOGNAME',
  'HOME',
  'SHELL',
  'INVOCATION_ID',
  'JOURNAL_STREAM',
  'SYSTEMD_EXEC_PID',
  'MANAGERPID',
  'LANG',
  'NOTIFY_SOCKET',
  'RUNTIME_DIRECTORY',
];

/** How long a post-stop handler may run before systemd kills it. */
export const POST_STOP_TIMEOUT = '90s';

/** CPUQuota= from millicores: 1000m is one whole CPU, 100%. */
export function cpuQuota(millis: number): string {
  if (!Number.isFinite(millis) || millis <= 0) throw new UnitError(`CPU limit ${millis}m is not positive`);
  // systemd keeps two decimals of a percentage (permyriad)
  const pct = Math.max(0.01, Math.round(millis * 10) / 100);
  return `${pct}%`;
}

function rwVolumes(mounts: readonly VolumeMount[]): string[] {
  return mounts.filter((m) => !m.readOnly).map((m) => m.target);
}

/** What a unit runs: the app itself, or one of its event handlers (spec/aci.md). */
type UnitRole = 'app' | EventHandlerName;

/** The [Service] lines every unit of an app shares: its root, credentials, environment, isolators. */
function serviceLines(spec: AppSpec, options: AppUnitOptions, role: UnitRole): [string, string][] {
  const root = options.rootDirectory ?? `/opt/stage2/${spec.name}/rootfs`;
  const svc: [string, string][] = [];
  const add = (k: string, v: string): void => void svc.push([k, v]);

  // a handler is a command that runs to its end: the app waits for pre-start, the pod for post-stop
  add('Type', role === 'app' ? (options.type ?? 'exec') : 'oneshot');
  add('Restart', 'no');
  // rkt: a pre-start may take long (it downloads a data set, say); post-stop is bounded like a stop
  if (role === 'pre-start') add('TimeoutStartSec', 'infinity');
  if (role === 'post-stop') add('TimeoutStartSec', POST_STOP_TIMEOUT);
  add('RootDirectory', unitPath(root, 'root directory'));
  if (options.hooksInStage1Root) add('RootDirectoryStartOnly', 'yes');
  if (options.mountApiVfs) add('MountAPIVFS', 'yes');
  if (options.privateDevices) add('PrivateDevices', 'yes');
  add('User', String(spec.uid));
  add('Group', String(spec.gid));
  // An empty assignment means "none": the app gets exactly the groups asked for.
  add('SupplementaryGroups', spec.supplementaryGids.join(' '));
  add('WorkingDirectory', unitPath(spec.workingDirectory, `working directory of app "${spec.name}"`));
  for (const e of spec.env) {
    try {
      add('Environment', environmentAssignment(e.name, e.value));
    } catch (err) {
      throw new UnitError(`app "${spec.name}": ${(err as Error).message}`);
    }
  }
  const own = new Set(spec.env.map((e) => e.name));
  const unset = (options.unsetEnvironment ?? MANAGER_ENVIRONMENT).filter((n) => !own.has(n));
  if (unset.length > 0) add('UnsetEnvironment', unset.join(' '));

  const argv = role === 'app' ? spec.exec : role === 'pre-start' ? spec.eventHandlers.preStart : spec.eventHandlers.postStop;
  let exec: string;
  try {
    exec = execLine(argv ?? []);
  } catch (err) {
    throw new UnitError(`app "${spec.name}"${role === 'app' ? '' : ` (${role} handler)`}: ${(err as Error).message}`);
  }
  add('ExecStart', exec);
  const priv = options.hooksPrivileged ? '+' : '';
  if (role === 'app') {
    // "-": a failing start hook must not stop the app it reports on
    for (const c of options.execStartPost ?? []) add('ExecStartPost', `-${priv}${c}`);
    for (const c of options.execStopPost ?? []) add('ExecStopPost', `${priv}${c}`);
  } else {
    // the pod is up and the app on its way: the boot timeout no longer applies to it (a pre-start may take long)
    if (role === 'pre-start') svc.splice(svc.findIndex(([k]) => k === 'ExecStart'), 0, ['ExecStartPre', `-${priv}${execLine([POD_ROOT.report, 'pre-start', spec.name])}`]);
    add('ExecStopPost', `${priv}${handlerExitHook(spec.name, role)}`);
  }

  // A handler never reads the app's input: that is the app's alone.
  add('StandardInput', role === 'app' ? options.stdio.input : 'null');
  add('StandardOutput', options.stdio.output);
  add('StandardError', options.stdio.error);
  if (options.stdio.ttyPath !== undefined) {
    add('TTYPath', unitPath(options.stdio.ttyPath, 'terminal'));
    add('TTYReset', 'yes');
    if (options.stdio.ttyRows) add('TTYRows', String(options.stdio.ttyRows));
    if (options.stdio.ttyColumns) add('TTYColumns', String(options.stdio.ttyColumns));
    if (options.privateDevices && options.stdio.ttyIsPts) {
      // a private /dev has the pts devices, but the device policy must let the app open its own
      add('DeviceAllow', 'char-pts rw');
    } else if (options.privateDevices) {
      // systemd opens TTYPath= under the unit's device policy, and the app reopens it by name (tty, ttyname)
      add('DeviceAllow', `${unitPath(options.stdio.ttyPath, 'terminal')} rw`);
      add('BindPaths', unitPath(options.stdio.ttyPath, 'terminal'));
    }
  }

  const iso = spec.isolators;
  add('CapabilityBoundingSet', iso.capabilities.join(' '));
  // A non-root app holds no capability unless given it: an explicit retain
  // set is a grant, as in rkt, so it becomes ambient.
  if (spec.uid !== 0 && iso.capabilitiesRetain !== undefined && iso.capabilities.length > 0) {
    add('AmbientCapabilities', iso.capabilities.join(' '));
  }
  if (iso.noNewPrivileges) add('NoNewPrivileges', 'yes');
  if (iso.memoryLimit !== undefined) add('MemoryMax', String(iso.memoryLimit));
  if (iso.cpuLimitMillis !== undefined) add('CPUQuota', cpuQuota(iso.cpuLimitMillis));
  const shares = cpuShares(iso.app);
  // as rkt's units: systemd writes cpu.shares on cgroup v1 and converts to cpu.weight on v2
  if (shares !== undefined) add('CPUShares', String(shares));
  const oom = oomScoreAdj(iso.app);
  if (oom !== undefined) add('OOMScoreAdjust', String(oom));
  for (const r of spec.rlimits ?? []) add(r.unitKey, `${r.soft}:${r.hard}`);
  if (spec.readOnlyRootFS) {
    add('ReadOnlyPaths', '/');
    // "-": a volume target that vanished must not keep the app from starting
    const rw = rwVolumes(spec.mounts).map((p) => `-${unitListPath(p, `volume target of app "${spec.name}"`)}`);
    if (rw.length > 0) add('ReadWritePaths', rw.join(' '));
  }
  for (const [k, v] of options.extra ?? []) add(k, v);
  return svc;
}

function unitText(spec: AppSpec, description: string, unitLines: readonly string[], svc: readonly [string, string][]): string {
  return [
    '# Generated by rkt from the pod manifest; do not edit.',
    '[Unit]',
    `Description=${description} ${spec.name} (${spec.imageName.replace(/%/g, '%%').replace(/[\n\r]/g, ' ')})`,
    ...unitLines,
    '',
    '[Service]',
    ...svc.map(([k, v]) => `${k}=${v}`),
    '',
  ].join('\n');
}

/**
 * The service unit running one app. `spec.rootfs` is the host's view and is
 * not used: inside the pod the app's root is `options.rootDirectory`.
 * With event handlers, the app's unit requires its pre-start unit to have
 * succeeded, and starts its post-stop unit once it has stopped (see
 * appUnitFiles).
 */
export function appUnit(spec: AppSpec, options: AppUnitOptions): string {
  const unitLines: string[] = (options.after ?? []).map((u) => `After=${u}`);
  if (spec.eventHandlers.preStart) {
    const pre = handlerUnitName(spec.name, 'pre-start');
    unitLines.push(`Requires=${pre}`, `After=${pre}`);
  }
  if (spec.eventHandlers.postStop) {
    const post = handlerUnitName(spec.name, 'post-stop');
    unitLines.push(`OnSuccess=${post}`, `OnFailure=${post}`);
  }
  return unitText(spec, 'rkt app', unitLines, serviceLines(spec, options, 'app'));
}

/**
 * The unit running one of the app's event handlers: the app's own root,
 * credentials, environment, isolators and stdio, the handler as its one
 * command. Its exit hook tells the pod what came of it (handlerExitHook).
 */
export function handlerUnit(spec: AppSpec, handler: EventHandlerName, options: AppUnitOptions): string {
  // post-stop starts after the app, possibly while the pod is shutting down: it must not be
  // stopped by that shutdown, and the shutdown must wait for it
  // and it runs only after the app did: a failed pre-start triggers OnFailure= too, but the app never
  // ran, and its exit note (the hook's --defer) is missing
  const unitLines = handler === 'post-stop' ? ['DefaultDependencies=no', 'Before=shutdown.target', `ConditionPathExists=${POD_ROOT.deferred}/${spec.name}`] : [];
  // the app's input is the app's: a handler reading it would take what was meant for the app
  // (kvm: the first connection to an app's stream stdin is taken as the app's own)
  const own = options.stdio.input.startsWith('file:') ? { ...options, stdio: { ...options.stdio, input: 'null' } } : options;
  return unitText(spec, `rkt ${handler} handler of app`, [...unitLines, ...(options.after ?? []).map((u) => `After=${u}`)], serviceLines(spec, own, handler));
}

/** The name of the unit running an app's event handler; "." never occurs in an AC name, so no app's unit has it. */
export function handlerUnitName(app: string, handler: EventHandlerName): string {
  return `${app}.${handler}.service`;
}

/** The names of every unit of one app: its own, then its handlers'. */
export function appUnitNames(spec: Pick<AppSpec, 'name' | 'eventHandlers'>): string[] {
  const names = [appUnitName(spec.name)];
  if (spec.eventHandlers.preStart) names.push(handlerUnitName(spec.name, 'pre-start'));
  if (spec.eventHandlers.postStop) names.push(handlerUnitName(spec.name, 'post-stop'));
  return names;
}

/** Every unit file of one app, as [file name, text]: its own, then its handlers'. */
export function appUnitFiles(spec: AppSpec, options: AppUnitOptions): [string, string][] {
  const files: [string, string][] = [[appUnitName(spec.name), appUnit(spec, options)]];
  if (spec.eventHandlers.preStart) files.push([handlerUnitName(spec.name, 'pre-start'), handlerUnit(spec, 'pre-start', options)]);
  if (spec.eventHandlers.postStop) files.push([handlerUnitName(spec.name, 'post-stop'), handlerUnit(spec, 'post-stop', options)]);
  return files;
}

/** A target that pulls in every app of the pod (Wants=, so one failing app does not stop the others). */
export function podTarget(apps: readonly string[], description = 'rkt pod'): string {
  return [
    '# Generated by rkt from the pod manifest; do not edit.',
    '[Unit]',
    `Description=${description.replace(/%/g, '%%')}`,
    ...apps.map((a) => `Wants=${appUnitName(a)}`),
    'AllowIsolate=yes',
    '',
  ].join('\n');
}

/**
 * The hooks that report an app to the host in every flavor whose pod boots
 * systemd (see app-reports.ts): "started" once systemd has executed it, and
 * the shared exit hook. The hook's argument is one word, so that an
 * unset variable cannot shift the others; the hook splits it. An app with a
 * post-stop handler only has its exit noted here ("--defer"): the report
 * goes out once the handler has run, so that the pod cannot end under it.
 */
export function reportHooks(spec: Pick<AppSpec, 'name' | 'eventHandlers'>): Pick<AppUnitOptions, 'execStartPost' | 'execStopPost'> {
  const exited = spec.eventHandlers.postStop ? [POD_ROOT.appExited, '--defer', spec.name] : [POD_ROOT.appExited, spec.name];
  return {
    execStartPost: [execLine([POD_ROOT.report, 'started', spec.name])],
    execStopPost: [`${execLine(exited)} ${EXIT_INFO}`],
  };
}

/** systemd's account of how a unit's command ended, as one word for rkt-app-exited. */
const EXIT_INFO = '"${EXIT_CODE}:${EXIT_STATUS}:${SERVICE_RESULT}"';

/**
 * A handler unit's exit hook: after pre-start, nothing when it succeeded,
 * else the app's end with the handler's status (the app never starts); after
 * post-stop, the app's own exit noted by its unit.
 */
function handlerExitHook(app: string, handler: EventHandlerName): string {
  return `${execLine([POD_ROOT.appExited, `--${handler}`, app])} ${EXIT_INFO}`;
}
