import { UsageError } from '../errors.js';

// rkt's run/prepare command line: pod-level flags, then images, each image
// followed by the flags that apply to it alone; `--` hands the rest (up to
// `---`) to the app as arguments, `---` ends an app's arguments.

export interface AppArgs {
  image: string;
  args: string[];
  exec?: string;
  user?: string;
  group?: string;
  supplementaryGids?: number[];
  workingDir?: string;
  name?: string;
  readonlyRootfs?: boolean;
  capsRetain?: string[];
  capsRemove?: string[];
  memory?: string;
  cpu?: string;
  seccomp?: string;
  oomScoreAdjust?: string;
  environment: string[];
  mounts: string[];
  userLabels: string[];
  userAnnotations: string[];
  signature?: string;
  /** --stdin, --stdout, --stderr: the app's stream modes (src/appc/app-streams.ts). */
  stdin?: string;
  stdout?: string;
  stderr?: string;
}

export interface PodArgs {
  stage1Name?: string;
  stage1Path?: string;
  stage1Url?: string;
  stage1Hash?: string;
  stage1FromDir?: string;
  net: string[];
  dns: string[];
  dnsSearch: string[];
  dnsOpt: string[];
  dnsDomain?: string;
  hostsEntry: string[];
  hostname?: string;
  volumes: string[];
  setEnv: string[];
  setEnvFile: string[];
  inheritEnv: boolean;
  interactive: boolean;
  uuidFileSave?: string;
  podManifest?: string;
  pullPolicy?: string;
  /** Deprecated forms of --pull-policy=never and =update. */
  storeOnly?: boolean;
  noStore?: boolean;
  ports: string[];
  mdsRegister: boolean;
  noOverlay: boolean;
  /** --private-users: "" when given bare, or UIDBASE[:COUNT]. */
  privateUsers?: string;
  ipc?: string;
}

/** Global flags may appear among run's own; they are returned for the caller to apply. */
export interface GlobalArgs {
  dir?: string;
  localConfig?: string;
  systemConfig?: string;
  userConfig?: string;
  insecureOptions?: string;
  debug?: boolean;
  trustKeysFromHttps?: boolean;
}

export interface RunArgs {
  pod: PodArgs;
  apps: AppArgs[];
  globals: GlobalArgs;
}

type Kind = 'value' | 'list' | 'bool';
interface FlagDef {
  kind: Kind;
  scope: 'pod' | 'app' | 'global';
  key: string;
}

const POD_FLAGS: Record<string, [Kind, keyof PodArgs]> = {
  'stage1-name': ['value', 'stage1Name'],
  'stage1-path': ['value', 'stage1Path'],
  'stage1-url': ['value', 'stage1Url'],
  'stage1-hash': ['value', 'stage1Hash'],
  'stage1-from-dir': ['value', 'stage1FromDir'],
  net: ['list', 'net'],
  dns: ['list', 'dns'],
  'dns-search': ['list', 'dnsSearch'],
  'dns-opt': ['list', 'dnsOpt'],
  'dns-domain': ['value', 'dnsDomain'],
  'hosts-entry': ['list', 'hostsEntry'],
  hostname: ['value', 'hostname'],
  volume: ['list', 'volumes'],
  'set-env': ['list', 'setEnv'],
  'set-env-file': ['list', 'setEnvFile'],
  'inherit-env': ['bool', 'inheritEnv'],
  interactive: ['bool', 'interactive'],
  'uuid-file-save': ['value', 'uuidFileSave'],
  'pod-manifest': ['value', 'podManifest'],
  'pull-policy': ['value', 'pullPolicy'],
  'store-only': ['bool', 'storeOnly'],
  'no-store': ['bool', 'noStore'],
  port: ['list', 'ports'],
  'mds-register': ['bool', 'mdsRegister'],
  'no-overlay': ['bool', 'noOverlay'],
  'private-users': ['value', 'privateUsers'],
  ipc: ['value', 'ipc'],
};

const APP_FLAGS: Record<string, [Kind, keyof AppArgs]> = {
  exec: ['value', 'exec'],
  user: ['value', 'user'],
  group: ['value', 'group'],
  'supplementary-gids': ['value', 'supplementaryGids'],
  'working-dir': ['value', 'workingDir'],
  name: ['value', 'name'],
  'readonly-rootfs': ['bool', 'readonlyRootfs'],
  'caps-retain': ['value', 'capsRetain'],
  'caps-remove': ['value', 'capsRemove'],
  memory: ['value', 'memory'],
  cpu: ['value', 'cpu'],
  seccomp: ['value', 'seccomp'],
  'oom-score-adjust': ['value', 'oomScoreAdjust'],
  environment: ['list', 'environment'],
  mount: ['list', 'mounts'],
  'user-label': ['list', 'userLabels'],
  'user-annotation': ['list', 'userAnnotations'],
  signature: ['value', 'signature'],
  stdin: ['value', 'stdin'],
  stdout: ['value', 'stdout'],
  stderr: ['value', 'stderr'],
};

const GLOBAL_FLAGS: Record<string, [Kind, keyof GlobalArgs]> = {
  dir: ['value', 'dir'],
  'local-config': ['value', 'localConfig'],
  'system-config': ['value', 'systemConfig'],
  'user-config': ['value', 'userConfig'],
  'insecure-options': ['value', 'insecureOptions'],
  debug: ['bool', 'debug'],
  'trust-keys-from-https': ['bool', 'trustKeysFromHttps'],
};

function lookup(name: string): FlagDef | undefined {
  if (name in POD_FLAGS) return { kind: POD_FLAGS[name]![0], scope: 'pod', key: POD_FLAGS[name]![1] };
  if (name in APP_FLAGS) return { kind: APP_FLAGS[name]![0], scope: 'app', key: APP_FLAGS[name]![1] };
  if (name in GLOBAL_FLAGS) return { kind: GLOBAL_FLAGS[name]![0], scope: 'global', key: GLOBAL_FLAGS[name]![1] };
  return undefined;
}

function parseBool(flag: string, v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new UsageError(`--${flag} takes true or false, not "${v}"`);
}

function splitList(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

export function newPodArgs(): PodArgs {
  return { net: [], dns: [], dnsSearch: [], dnsOpt: [], hostsEntry: [], volumes: [], setEnv: [], setEnvFile: [], inheritEnv: false, interactive: false, ports: [], mdsRegister: false, noOverlay: false };
}

function newApp(image: string): AppArgs {
  return { image, args: [], environment: [], mounts: [], userLabels: [], userAnnotations: [] };
}

function setApp(app: AppArgs, key: keyof AppArgs, flag: string, kind: Kind, value: string): void {
  const rec = app as unknown as Record<string, unknown>;
  if (kind === 'bool') rec[key] = parseBool(flag, value);
  else if (kind === 'list') (rec[key] as string[]).push(value);
  else if (key === 'supplementaryGids') {
    app.supplementaryGids = splitList(value).map((g) => {
      if (!/^\d+$/.test(g)) throw new UsageError(`--supplementary-gids takes numeric group IDs, not "${g}"`);
      return Number(g);
    });
  } else if (key === 'capsRetain' || key === 'capsRemove') rec[key] = splitList(value);
  else rec[key] = value;
}

/** Parse the words after `rkt run` (or `rkt prepare`: `command` names it in errors). */
export function parseRunArgs(argv: string[], command: 'run' | 'prepare' = 'run'): RunArgs {
  const pod = newPodArgs();
  const globals: GlobalArgs = {};
  const apps: AppArgs[] = [];
  let current: AppArgs | undefined;
  let i = 0;
  while (i < argv.length) {
    const word = argv[i]!;
    i++;
    if (word === '---') {
      current = undefined;
      continue;
    }
    if (word === '--') {
      if (!current) throw new UsageError('"--" must follow an image: its arguments go to that app');
      while (i < argv.length && argv[i] !== '---') current.args.push(argv[i++]!);
      continue;
    }
    if (word.startsWith('--')) {
      const eq = word.indexOf('=');
      const name = eq === -1 ? word.slice(2) : word.slice(2, eq);
      const def = lookup(name);
      if (!def) throw new UsageError(`unknown flag --${name} for ${command}; see "rkt help ${command}"`);
      let value: string;
      if (eq !== -1) value = word.slice(eq + 1);
      else if (def.kind === 'bool') value = 'true';
      // like rkt, a bare --net means the default network; a value needs "="
      else if (name === 'net') value = 'default';
      else if (name === 'private-users') value = '';
      else {
        if (i >= argv.length) throw new UsageError(`--${name} needs a value`);
        value = argv[i++]!;
      }
      if (def.scope === 'app') {
        if (!current) throw new UsageError(`--${name} applies to an app: put it after the image it is for`);
        setApp(current, def.key as keyof AppArgs, name, def.kind, value);
      } else if (def.scope === 'global') {
        const rec = globals as Record<string, unknown>;
        rec[def.key] = def.kind === 'bool' ? parseBool(name, value) : value;
      } else {
        const rec = pod as unknown as Record<string, unknown>;
        if (def.kind === 'bool') rec[def.key] = parseBool(name, value);
        else if (def.kind === 'list') (rec[def.key] as string[]).push(...(name === 'net' || name === 'dns' ? splitList(value) : [value]));
        else rec[def.key] = value;
      }
      continue;
    }
    if (word.startsWith('-') && word.length > 1) throw new UsageError(`unknown flag ${word} for ${command}; flags take two dashes`);
    current = newApp(word);
    apps.push(current);
  }
  return { pod, apps, globals };
}
