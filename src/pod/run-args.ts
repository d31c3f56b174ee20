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
  cpuShares?: string;
  environment: string[];
  /** --annotation NAME=VALUE: the runtime app's annotations in the pod manifest. */
  annotations: string[];
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
  /** --mount before the first image: a mount for every app (an app's own mount of the same path wins). */
  mounts: string[];
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
  /** Deprecated flags that were given, as rkt warns of them ("use --caps-retain instead"). */
  deprecated: { flag: string; use: string }[];
}

type Kind = 'value' | 'list' | 'bool';
interface FlagDef {
  kind: Kind;
  scope: 'pod' | 'app' | 'global';
  key: string;
}

/** A flag: how it takes its value, where it goes, and what `rkt help run` says of it. */
type Def<K> = [Kind, K, string];

export const POD_FLAGS: Record<string, Def<keyof PodArgs>> = {
  'stage1-name': ['value', 'stage1Name', 'NAME[:VERSION] of a stage1 image (kvm, nspawn, fly or an image name)'],
  'stage1-path': ['value', 'stage1Path', 'PATH of a stage1 image file'],
  'stage1-url': ['value', 'stage1Url', 'file:// URL of a stage1 image'],
  'stage1-hash': ['value', 'stage1Hash', 'ID of a stage1 image in the store'],
  'stage1-from-dir': ['value', 'stage1FromDir', 'FILE name of a stage1 image in the stage1 images directory'],
  net: ['list', 'net', '[=NAME[:ARGS],...] networks to join: default, host, none, all or named ones'],
  dns: ['list', 'dns', 'IP name server for resolv.conf ("host": the host\'s; "none": no resolv.conf)'],
  'dns-search': ['list', 'dnsSearch', 'DOMAIN to search in resolv.conf'],
  'dns-opt': ['list', 'dnsOpt', 'OPTION for resolv.conf'],
  'dns-domain': ['value', 'dnsDomain', 'DOMAIN for resolv.conf'],
  'hosts-entry': ['list', 'hostsEntry', 'IP=HOST line for the pod\'s /etc/hosts ("host": the host\'s file)'],
  hostname: ['value', 'hostname', 'NAME of the pod\'s host (default rkt-UUID)'],
  volume: ['list', 'volumes', 'NAME,kind=host|empty[,source=PATH][,readOnly=BOOL][,recursive=BOOL] a volume of the pod'],
  mount: ['list', 'mounts', 'volume=NAME,target=PATH before the first image: mount it in every app'],
  'set-env': ['list', 'setEnv', 'NAME=VALUE in every app\'s environment'],
  'set-env-file': ['list', 'setEnvFile', 'FILE of NAME=VALUE lines for every app (# and ; start comments)'],
  'inherit-env': ['bool', 'inheritEnv', 'pass rkt\'s own environment to the apps'],
  interactive: ['bool', 'interactive', 'connect the terminal to the (only) app'],
  'uuid-file-save': ['value', 'uuidFileSave', 'FILE to write the pod UUID to'],
  'pod-manifest': ['value', 'podManifest', 'FILE of a pod manifest to run instead of images'],
  'pull-policy': ['value', 'pullPolicy', 'never|new|update: when to fetch an image'],
  'store-only': ['bool', 'storeOnly', 'deprecated: use --pull-policy=never'],
  'no-store': ['bool', 'noStore', 'deprecated: use --pull-policy=update'],
  port: ['list', 'ports', 'NAME:[HOSTIP:]HOSTPORT forward a port the image declares'],
  'mds-register': ['bool', 'mdsRegister', 'register the pod with the metadata service'],
  'no-overlay': ['bool', 'noOverlay', 'copy the images instead of using overlayfs'],
  'private-users': ['value', 'privateUsers', '[=UIDBASE[:COUNT]] run in a user namespace (nspawn)'],
  ipc: ['value', 'ipc', 'auto|private|parent: whether the pod has its own IPC namespace'],
};

export const APP_FLAGS: Record<string, Def<keyof AppArgs>> = {
  exec: ['value', 'exec', 'PATH of the program to run instead of the image\'s'],
  user: ['value', 'user', 'UID, name or file path: the user to run as'],
  group: ['value', 'group', 'GID, name or file path: the group to run as'],
  'supplementary-gids': ['value', 'supplementaryGids', 'GID,... supplementary groups'],
  'working-dir': ['value', 'workingDir', 'PATH to start in'],
  name: ['value', 'name', 'NAME of the app (default: from the image name)'],
  'readonly-rootfs': ['bool', 'readonlyRootfs', 'mount the app\'s root filesystem read-only'],
  'caps-retain': ['value', 'capsRetain', 'CAP,... the capabilities to keep (all others dropped)'],
  'caps-remove': ['value', 'capsRemove', 'CAP,... capabilities to drop from the default set'],
  memory: ['value', 'memory', 'LIMIT of memory, e.g. 512M'],
  cpu: ['value', 'cpu', 'LIMIT of CPU, e.g. 500m'],
  'cpu-shares': ['value', 'cpuShares', 'WEIGHT of CPU time against other apps (2-262144; 1024 is one CPU\'s worth)'],
  seccomp: ['value', 'seccomp', 'mode=retain|remove[,errno=ENAME],SYSCALL,... seccomp filter'],
  'oom-score-adj': ['value', 'oomScoreAdjust', 'N from -1000 to 1000 for the OOM killer (also --oom-score-adjust)'],
  environment: ['list', 'environment', 'NAME=VALUE in this app\'s environment'],
  mount: ['list', 'mounts', 'volume=NAME,target=PATH mount a volume in this app'],
  annotation: ['list', 'annotations', 'NAME=VALUE annotation of the app in the pod manifest'],
  'user-label': ['list', 'userLabels', 'NAME=VALUE label of the app'],
  'user-annotation': ['list', 'userAnnotations', 'NAME=VALUE user annotation of the app'],
  signature: ['value', 'signature', 'FILE or URL of the image\'s detached signature'],
  stdin: ['value', 'stdin', 'null|stream|tty: the app\'s stdin (stream, tty: reach it with rkt attach; kvm, nspawn)'],
  stdout: ['value', 'stdout', 'null|log|stream|tty: the app\'s stdout (stream, tty: rkt attach; kvm, nspawn)'],
  stderr: ['value', 'stderr', 'null|log|stream|tty: the app\'s stderr (stream, tty: rkt attach; kvm, nspawn)'],
};

/** Other names rkt accepts: [the flag meant, deprecated?]. */
const ALIASES: Record<string, [string, boolean]> = {
  'oom-score-adjust': ['oom-score-adj', false],
  'cap-retain': ['caps-retain', true],
  'cap-remove': ['caps-remove', true],
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

/** The flag a name means; --mount is the pod's before the first image and an app's after it. */
function lookup(name: string, inApp: boolean): FlagDef | undefined {
  if (name in APP_FLAGS && (inApp || !(name in POD_FLAGS))) return { kind: APP_FLAGS[name]![0], scope: 'app', key: APP_FLAGS[name]![1] };
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
  return { net: [], dns: [], dnsSearch: [], dnsOpt: [], hostsEntry: [], volumes: [], mounts: [], setEnv: [], setEnvFile: [], inheritEnv: false, interactive: false, ports: [], mdsRegister: false, noOverlay: false };
}

function newApp(image: string): AppArgs {
  return { image, args: [], environment: [], annotations: [], mounts: [], userLabels: [], userAnnotations: [] };
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
  const deprecated: RunArgs['deprecated'] = [];
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
      const given = eq === -1 ? word.slice(2) : word.slice(2, eq);
      const alias = ALIASES[given];
      if (alias?.[1]) deprecated.push({ flag: given, use: alias[0] });
      const name = alias?.[0] ?? given;
      const def = lookup(name, current !== undefined);
      if (!def) throw new UsageError(`unknown flag --${given} for ${command}; see "rkt help ${command}"`);
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
  return { pod, apps, globals, deprecated };
}

/** `rkt help run`'s list of flags, from the tables the parser reads: every flag it takes, and only those. */
export function runFlagsHelp(): string {
  const lines = (defs: Record<string, Def<string>>) =>
    Object.entries(defs)
      .map(([name, [, , what]]) => `  --${name.padEnd(20)} ${what}`)
      .join('\n');
  const aliases = Object.entries(ALIASES)
    .map(([name, [meant, old]]) => `--${name} (${old ? 'deprecated, ' : ''}same as --${meant})`)
    .join(', ');
  return `Pod flags (before the first image):\n${lines(POD_FLAGS)}\nApp flags (after the image they apply to):\n${lines(APP_FLAGS)}\nAlso taken: ${aliases}.`;
}
