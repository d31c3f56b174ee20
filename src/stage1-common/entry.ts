import { EXIT, RktError, UsageError } from '../errors.js';
import { reportFailure, setDebug, setProgram } from '../log.js';
import type { AttachAction, AttachEndpoints, DnsConfMode } from '../stage1/args.js';
import { parseDnsConfMode } from '../stage1/dns-conf.js';
import { ENTER_PROCESS_FLAGS, parseEnterProcess, type EnterProcess } from './enter-process.js';

// Argument handling shared by every flavor's entrypoints. stage0 passes
// flags as `--name=value` (rkt's Go flag style); `--name value` is accepted
// too so a person debugging a pod by hand is not tripped up. Unknown flags
// are refused: the stage0/stage1 contract is versioned, and a flag this
// stage1 does not understand is better reported than silently dropped.

/** rkt's stage1 programs exit 254 when they themselves fail (see the table in src/errors.ts). */
export const STAGE1_FAILURE = EXIT.stage1Failure;

/** Turn on step-by-step logging (stderr) and stack traces for failures. */
export function enableDebug(on: boolean): void {
  setDebug(on);
}

export interface FlagSpec {
  /** Flags without a value: --debug, --force. */
  booleans?: readonly string[];
  /** Flags that take a value: --net=host, --pid=42. */
  values?: readonly string[];
  /** Flags whose value is optional and must follow "=": --private-users, --private-users=1000:65536. */
  optionalValues?: readonly string[];
}

export interface ParsedArgs {
  booleans: Set<string>;
  values: Map<string, string>;
  positionals: string[];
  /** Everything after a bare `--`. */
  rest: string[];
}

/** Split argv by a flag spec; throws UsageError on anything unexpected. */
export function parseFlags(argv: readonly string[], spec: FlagSpec): ParsedArgs {
  const booleans = new Set(spec.booleans ?? []);
  const values = new Set(spec.values ?? []);
  const optional = new Set(spec.optionalValues ?? []);
  const out: ParsedArgs = { booleans: new Set(), values: new Map(), positionals: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      out.rest = argv.slice(i + 1);
      break;
    }
    if (!arg.startsWith('--') || arg === '-') {
      out.positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    if (booleans.has(name)) {
      const v = eq === -1 ? 'true' : arg.slice(eq + 1);
      if (v !== 'true' && v !== 'false') throw new UsageError(`--${name} takes no value other than true or false, not "${v}"`);
      if (v === 'true') out.booleans.add(name);
      else out.booleans.delete(name);
    } else if (values.has(name)) {
      let v: string | undefined = eq === -1 ? argv[++i] : arg.slice(eq + 1);
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      out.values.set(name, v);
    } else if (optional.has(name)) {
      out.values.set(name, eq === -1 ? '' : arg.slice(eq + 1));
    } else {
      throw new UsageError(`unknown flag ${arg.slice(0, eq === -1 ? undefined : eq)}`);
    }
  }
  return out;
}

function oneUuid(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`${what} takes exactly one pod UUID, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  return positionals[0]!;
}

export interface RunArgs {
  uuid: string;
  debug: boolean;
  /** Networks asked for, as given: ["host"], ["default"], ["net1", "net2"]... */
  net: string[];
  interactive: boolean;
  hostname?: string;
  localConfig?: string;
  mdsToken?: string;
  /** --private-users: "" for a range the flavor picks, else UIDBASE[:COUNT]. */
  privateUsers?: string;
  /** --dns-conf-mode (interface version 4); "default" for both when not given. */
  dnsConfMode: DnsConfMode;
  /** --disable-capabilities-restriction, --disable-paths, --disable-seccomp (interface version 3). */
  disableCapabilities: boolean;
  disablePaths: boolean;
  disableSeccomp: boolean;
  /** --mutable: a sandbox, whose apps come and go through the app entrypoints. */
  mutable: boolean;
}

/** The run flags of rkt's stage1 interface versions 1 to 5, as the flags and their RunArgs names. */
export const RUN_FLAGS = {
  booleans: ['debug', 'interactive', 'mutable', 'disable-capabilities-restriction', 'disable-paths', 'disable-seccomp'],
  values: ['net', 'hostname', 'local-config', 'mds-token', 'dns-conf-mode'],
  optionalValues: ['private-users'],
} as const;

/**
 * The run entrypoint, as rkt's stage1 interface versions 1 to 5 define it:
 * run [--debug] [--net=N[,N...]] [--interactive] [--private-users[=SHIFT]] [--mds-token=T]
 *     [--local-config=D] [--hostname=H] [--dns-conf-mode=resolv=M,hosts=M]
 *     [--disable-capabilities-restriction] [--disable-paths] [--disable-seccomp] UUID
 */
export function parseRunArgs(argv: readonly string[]): RunArgs {
  const p = parseFlags(argv, RUN_FLAGS);
  const net = (p.values.get('net') ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  const dns = p.values.get('dns-conf-mode');
  return {
    uuid: oneUuid(p.positionals, 'run'),
    debug: p.booleans.has('debug'),
    net,
    interactive: p.booleans.has('interactive'),
    ...(p.values.has('hostname') && { hostname: p.values.get('hostname') }),
    ...(p.values.has('local-config') && { localConfig: p.values.get('local-config') }),
    ...(p.values.has('mds-token') && { mdsToken: p.values.get('mds-token') }),
    ...(p.values.has('private-users') && { privateUsers: p.values.get('private-users') }),
    dnsConfMode: dns === undefined ? { resolv: 'default', hosts: 'default' } : parseDnsConfMode(dns),
    disableCapabilities: p.booleans.has('disable-capabilities-restriction'),
    disablePaths: p.booleans.has('disable-paths'),
    disableSeccomp: p.booleans.has('disable-seccomp'),
    mutable: p.booleans.has('mutable'),
  };
}

/** The flag each RunArgs field came from, for messages. */
const RUN_FLAG_NAMES = {
  privateUsers: '--private-users',
  disableCapabilities: '--disable-capabilities-restriction',
  disablePaths: '--disable-paths',
  disableSeccomp: '--disable-seccomp',
  mutable: '--mutable',
} as const;

/**
 * Refuse the flags a flavor cannot honour, each with why: a flag of the
 * contract is carried out or refused, never dropped.
 */
export function refuseRunFlags(flavor: string, args: RunArgs, why: Partial<Record<keyof typeof RUN_FLAG_NAMES, string>>): void {
  for (const [k, reason] of Object.entries(why) as [keyof typeof RUN_FLAG_NAMES, string][]) {
    const v = args[k];
    if (v === undefined || v === false) continue;
    throw new RktError(`the ${flavor} stage1 cannot honour ${RUN_FLAG_NAMES[k]}: ${reason}`);
  }
}

export interface EnterArgs {
  pid: number;
  appName?: string;
  debug: boolean;
  /** Command and arguments to run inside the app. */
  command: string[];
  /** What the command runs as where it is not its app's (enter-process.ts). */
  process: EnterProcess;
}

/** The enter entrypoint: enter [--debug] --pid=PID [--appname=NAME] [--working-dir=DIR] [--user=UID] [--group=GID] [--supplementary-gids=G,...] [--environment] -- CMD [ARGS...] */
export function parseEnterArgs(argv: readonly string[]): EnterArgs {
  const p = parseFlags(argv, { booleans: ['debug', 'environment'], values: ['pid', 'appname', ...ENTER_PROCESS_FLAGS] });
  const pidText = p.values.get('pid');
  if (pidText === undefined) throw new UsageError('enter needs --pid=PID of the pod process');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) throw new UsageError(`--pid=${pidText} is not a process id`);
  // Without a `--`, rkt's older stage0s put the command straight after the flags.
  const command = p.rest.length > 0 ? p.rest : p.positionals;
  if (command.length === 0) throw new UsageError('enter needs a command after "--"');
  return { pid, debug: p.booleans.has('debug'), command, process: parseEnterProcess(p.values, p.booleans.has('environment')), ...(p.values.has('appname') && { appName: p.values.get('appname') }) };
}

export interface StopArgs {
  uuid: string;
  force: boolean;
  debug: boolean;
}

export function parseStopArgs(argv: readonly string[]): StopArgs {
  const p = parseFlags(argv, { booleans: ['force', 'debug'] });
  return { uuid: oneUuid(p.positionals, 'stop'), force: p.booleans.has('force'), debug: p.booleans.has('debug') };
}

export interface GcArgs {
  uuid: string;
  debug: boolean;
  /** --local-config (interface version 5): the configuration directory the pod ran with. */
  localConfig?: string;
}

export function parseGcArgs(argv: readonly string[]): GcArgs {
  const p = parseFlags(argv, { booleans: ['debug'], values: ['local-config'] });
  return { uuid: oneUuid(p.positionals, 'gc'), debug: p.booleans.has('debug'), ...(p.values.has('local-config') && { localConfig: p.values.get('local-config') }) };
}

export interface AttachArgs {
  action: AttachAction;
  app: string;
  debug: boolean;
  endpoints: AttachEndpoints;
}

const ATTACH_ACTIONS: readonly AttachAction[] = ['auto-attach', 'custom-attach', 'list', 'console'];

/**
 * The attach entrypoint (rkt's version 5, a crossing entrypoint):
 * attach --action=auto-attach|custom-attach|list --app=NAME [--debug]
 *        [--tty-in=B] [--tty-out=B] [--stdin=B] [--stdout=B] [--stderr=B]
 */
export function parseAttachArgs(argv: readonly string[]): AttachArgs {
  const p = parseFlags(argv, { booleans: ['debug', 'tty-in', 'tty-out', 'stdin', 'stdout', 'stderr'], values: ['action', 'app'] });
  if (p.positionals.length > 0) throw new UsageError(`attach takes no arguments besides its flags, got ${p.positionals.join(' ')}`);
  const action = p.values.get('action');
  if (action === undefined || !(ATTACH_ACTIONS as readonly string[]).includes(action)) throw new UsageError(`attach needs --action=auto-attach, custom-attach, list or console${action === undefined ? '' : `, not "${action}"`}`);
  const app = p.values.get('app');
  if (app === undefined || app === '') throw new UsageError('attach needs --app=NAME');
  const b = (n: string) => p.booleans.has(n);
  return { action: action as AttachAction, app, debug: b('debug'), endpoints: { ttyIn: b('tty-in'), ttyOut: b('tty-out'), stdin: b('stdin'), stdout: b('stdout'), stderr: b('stderr') } };
}

export interface AppEntryArgs {
  app: string;
  debug: boolean;
  /** app/add only: the pod's UUID and the insecure options, as rkt passes them. */
  uuid?: string;
  disableCapabilities: boolean;
  disablePaths: boolean;
  disableSeccomp: boolean;
  privateUsers?: string;
}

/**
 * The app entrypoints (rkt's version 5, crossing entrypoints):
 * app/add --app=NAME --debug=B --uuid=UUID [--disable-capabilities-restriction]
 *         [--disable-paths] [--disable-seccomp] [--private-users=SHIFT];
 * app/start, app/stop, app/rm: --app=NAME --debug=B
 */
export function parseAppArgs(argv: readonly string[], which: 'add' | 'start' | 'stop' | 'rm'): AppEntryArgs {
  const add = which === 'add';
  const p = parseFlags(argv, add ? { booleans: ['debug', 'disable-capabilities-restriction', 'disable-paths', 'disable-seccomp'], values: ['app', 'uuid'], optionalValues: ['private-users'] } : { booleans: ['debug'], values: ['app'] });
  if (p.positionals.length > 0) throw new UsageError(`app/${which} takes no arguments besides its flags, got ${p.positionals.join(' ')}`);
  const app = p.values.get('app');
  if (app === undefined || !/^[a-z0-9]+([-._][a-z0-9]+)*$/.test(app)) throw new UsageError(`app/${which} needs --app=NAME with a valid app name${app === undefined ? '' : `, not "${app}"`}`);
  if (add && !p.values.get('uuid')) throw new UsageError('app/add needs --uuid=UUID');
  return {
    app,
    debug: p.booleans.has('debug'),
    ...(p.values.has('uuid') && { uuid: p.values.get('uuid') }),
    disableCapabilities: p.booleans.has('disable-capabilities-restriction'),
    disablePaths: p.booleans.has('disable-paths'),
    disableSeccomp: p.booleans.has('disable-seccomp'),
    ...(p.values.has('private-users') && { privateUsers: p.values.get('private-users') }),
  };
}

/** Report a failure and exit 254 (rkt's code for any failure of a stage1 program); the line says which kind. */
function failed(err: unknown): never {
  const code = reportFailure(err);
  process.exit(err instanceof RktError && !(err instanceof UsageError) ? STAGE1_FAILURE : code);
}

/**
 * Run an entrypoint's body and exit with the status it resolves to. Every
 * stderr line of the process says "stage1:". A failure, caught or not, is
 * reported as src/log.ts reportFailure does: a RktError is its message, and
 * anything else is a bug and says so.
 */
export function runEntrypoint(body: (argv: string[]) => Promise<number> | number): void {
  setProgram('stage1');
  process.on('uncaughtException', failed);
  Promise.resolve()
    .then(() => body(process.argv.slice(2)))
    .then((code) => process.exit(code), failed);
}
