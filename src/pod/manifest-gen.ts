import fs from 'node:fs';
import { ManifestError, UsageError, whyUnreadable } from '../errors.js';
import { appNameFromImageName } from '../appc/acname.js';
import { normalizeCapability } from '../appc/capabilities.js';
import { ISOLATOR } from '../appc/isolators.js';
import { validatePodManifest } from '../appc/pod-manifest.js';
import { parseCpuMillis, parseMemoryBytes } from '../appc/quantity.js';
import type { App, EnvironmentVariable, ImageManifest, Isolator, Mount, PodManifest, RuntimeApp, Volume } from '../appc/types.js';
import { APPC_VERSION } from '../version.js';
import { checkStreams, DEFAULT_STREAMS, parseStreamMode, STREAMS, streamAnnotations, type AppStreams } from '../appc/app-streams.js';
import type { AppArgs, PodArgs } from './run-args.js';
import { parsePortFlag, resolvePortMappings } from '../net/ports.js';

export interface ResolvedApp {
  args: AppArgs;
  imageId: string;
  manifest: ImageManifest;
}

/** Parse "k=v,k2=v2" (the first field may be a bare value, as in --volume NAME,...). */
function keyValues(text: string, flag: string): { head?: string; kv: Map<string, string> } {
  const kv = new Map<string, string>();
  let head: string | undefined;
  text.split(',').forEach((part, i) => {
    const eq = part.indexOf('=');
    if (eq === -1) {
      if (i === 0) head = part;
      else throw new UsageError(`${flag} "${text}": "${part}" is not key=value`);
    } else kv.set(part.slice(0, eq).trim(), part.slice(eq + 1));
  });
  return { head, kv };
}

function nameValue(text: string, flag: string): EnvironmentVariable {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`${flag} "${text}" must be NAME=VALUE`);
  return { name: text.slice(0, eq), value: text.slice(eq + 1) };
}

function boolField(v: string | undefined, flag: string, key: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new UsageError(`${flag}: ${key} must be true or false, not "${v}"`);
}

/** --volume NAME,kind=host,source=/path[,readOnly=true][,recursive=..] or NAME,kind=empty[,mode=..,uid=..,gid=..] */
export function parseVolumeFlag(text: string): Volume {
  const { head, kv } = keyValues(text, '--volume');
  const name = head ?? kv.get('name');
  if (!name) throw new UsageError(`--volume "${text}" needs a name first: NAME,kind=host,source=PATH`);
  const kind = kv.get('kind') ?? 'host';
  if (kind !== 'host' && kind !== 'empty') throw new UsageError(`--volume ${name}: kind must be host or empty`);
  const vol: Volume = { name, kind };
  if (kind === 'host') {
    const source = kv.get('source');
    if (!source) throw new UsageError(`--volume ${name}: a host volume needs source=/absolute/path`);
    vol.source = source;
  } else {
    if (kv.has('mode')) vol.mode = kv.get('mode');
    if (kv.has('uid')) vol.uid = Number(kv.get('uid'));
    if (kv.has('gid')) vol.gid = Number(kv.get('gid'));
  }
  const ro = boolField(kv.get('readOnly'), '--volume', 'readOnly');
  if (ro !== undefined) vol.readOnly = ro;
  const rec = boolField(kv.get('recursive'), '--volume', 'recursive');
  if (rec !== undefined) vol.recursive = rec;
  for (const k of kv.keys()) {
    if (!['name', 'kind', 'source', 'readOnly', 'recursive', 'mode', 'uid', 'gid'].includes(k)) throw new UsageError(`--volume ${name}: unknown field "${k}"`);
  }
  return vol;
}

/** --mount volume=NAME,target=PATH */
export function parseMountFlag(text: string): Mount {
  const { kv } = keyValues(text, '--mount');
  const volume = kv.get('volume');
  const target = kv.get('target') ?? kv.get('path');
  if (!volume || !target) throw new UsageError(`--mount "${text}" must be volume=NAME,target=/path`);
  return { volume, path: target };
}

function readEnvFile(file: string): EnvironmentVariable[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--set-env-file ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith(';')) // rkt's comment lines
    .map((l) => nameValue(l, `--set-env-file ${file}:`));
}

/** Later lists override earlier ones by name; order of first appearance is kept. */
function mergeEnv(...lists: EnvironmentVariable[][]): EnvironmentVariable[] {
  const out = new Map<string, string>();
  for (const list of lists) for (const e of list) out.set(e.name, e.value);
  return [...out].map(([name, value]) => ({ name, value }));
}

function capSet(names: string[], flag: string): string[] {
  return names.map((n) => {
    const c = normalizeCapability(n);
    if (!c) throw new UsageError(`${flag}: unknown capability "${n}"`);
    return c;
  });
}

function setIsolator(list: Isolator[], iso: Isolator): Isolator[] {
  return [...list.filter((i) => i.name !== iso.name), iso];
}

/** --seccomp mode=retain|remove[,errno=ENAME],SYSCALL... as rkt takes it. */
function setSeccomp(list: Isolator[], text: string): Isolator[] {
  let mode: string | undefined;
  let errno: string | undefined;
  const set: string[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    if (part.startsWith('mode=')) mode = part.slice(5);
    else if (part.startsWith('errno=')) errno = part.slice(6);
    else set.push(part);
  }
  if (mode !== 'retain' && mode !== 'remove') throw new UsageError(`--seccomp "${text}" needs mode=retain or mode=remove`);
  if (set.length === 0) throw new UsageError(`--seccomp "${text}" names no syscalls`);
  const name = mode === 'retain' ? ISOLATOR.seccompRetain : ISOLATOR.seccompRemove;
  const others = list.filter((i) => i.name !== ISOLATOR.seccompRetain && i.name !== ISOLATOR.seccompRemove);
  return [...others, { name, value: { set, ...(errno ? { errno } : {}) } }];
}

/** An app's --stdin, --stdout and --stderr as the annotations rkt keeps them in (none when all are the default). */
function appStreamsFromFlags(name: string, a: AppArgs, interactive: boolean): ReturnType<typeof streamAnnotations> {
  const streams: AppStreams = { ...DEFAULT_STREAMS };
  for (const n of STREAMS) {
    const v = a[n];
    if (v === undefined) continue;
    if (interactive) throw new UsageError(`--${n} cannot be used with --interactive, which gives the app rkt run's own terminal`);
    streams[n] = parseStreamMode(n, v);
  }
  checkStreams(name, streams);
  return streamAnnotations(streams);
}

function buildApp(r: ResolvedApp, pod: PodArgs, podEnv: EnvironmentVariable[]): { app: App; name: string; mounts: Mount[]; readOnly?: boolean } {
  const image = r.manifest;
  const a = r.args;
  const base: App = image.app ? structuredClone(image.app) : { user: '0', group: '0' };
  if (a.exec !== undefined) base.exec = [a.exec, ...a.args];
  else if (a.args.length > 0) {
    if (!base.exec?.length) throw new UsageError(`image ${image.name} has no exec; give --exec with the arguments`);
    base.exec = [base.exec[0]!, ...a.args];
  }
  if (!base.exec?.length) throw new UsageError(`image ${image.name} has no app to run; give --exec`);
  if (a.user !== undefined) base.user = a.user;
  if (a.group !== undefined) base.group = a.group;
  if (a.supplementaryGids) base.supplementaryGIDs = a.supplementaryGids;
  if (a.workingDir !== undefined) base.workingDirectory = a.workingDir;
  base.environment = mergeEnv(base.environment ?? [], podEnv, a.environment.map((e) => nameValue(e, '--environment')));
  let isolators = base.isolators ?? [];
  if (a.memory !== undefined) {
    parseMemoryBytes(a.memory);
    isolators = setIsolator(isolators, { name: ISOLATOR.memory, value: { limit: a.memory } });
  }
  if (a.cpu !== undefined) {
    parseCpuMillis(a.cpu);
    isolators = setIsolator(isolators, { name: ISOLATOR.cpu, value: { limit: a.cpu } });
  }
  if (a.seccomp !== undefined) isolators = setSeccomp(isolators, a.seccomp);
  if (a.oomScoreAdjust !== undefined) {
    const n = Number(a.oomScoreAdjust);
    if (!Number.isInteger(n) || n < -1000 || n > 1000) throw new UsageError(`--oom-score-adjust takes an integer from -1000 to 1000, not "${a.oomScoreAdjust}"`);
    isolators = setIsolator(isolators, { name: ISOLATOR.oomScoreAdj, value: n });
  }
  if (a.cpuShares !== undefined) {
    const n = Number(a.cpuShares);
    if (!/^\d+$/.test(a.cpuShares) || n < 2 || n > 262144) throw new UsageError(`--cpu-shares takes an integer from 2 to 262144, not "${a.cpuShares}"`);
    isolators = setIsolator(isolators, { name: ISOLATOR.cpuShares, value: n });
  }
  if (a.capsRetain && a.capsRemove) throw new UsageError('--caps-retain and --caps-remove cannot be given for the same app');
  if (a.capsRetain) isolators = setIsolator(isolators.filter((i) => i.name !== ISOLATOR.capabilitiesRemove), { name: ISOLATOR.capabilitiesRetain, value: { set: capSet(a.capsRetain, '--caps-retain') } });
  if (a.capsRemove) isolators = setIsolator(isolators.filter((i) => i.name !== ISOLATOR.capabilitiesRetain), { name: ISOLATOR.capabilitiesRemove, value: { set: capSet(a.capsRemove, '--caps-remove') } });
  if (isolators.length > 0) base.isolators = isolators;
  if (a.userLabels.length) base.userLabels = Object.fromEntries(a.userLabels.map((l) => nameValue(l, '--user-label')).map((e) => [e.name, e.value]));
  if (a.userAnnotations.length) base.userAnnotations = Object.fromEntries(a.userAnnotations.map((l) => nameValue(l, '--user-annotation')).map((e) => [e.name, e.value]));
  const name = a.name ?? appNameFromImageName(image.name);
  // rkt: a pod-wide --mount reaches every app; the app's own mount of the same path wins
  const own = a.mounts.map(parseMountFlag);
  const mounts = [...own, ...pod.mounts.map(parseMountFlag).filter((m) => !own.some((o) => o.path === m.path))];
  return { app: base, name, mounts, readOnly: a.readonlyRootfs };
}

/**
 * The pod manifest for `rkt run`/`rkt prepare`: the images' apps with the
 * command line's overrides, the volumes, and mounts for every mount point.
 * The result is checked against the spec like any manifest a user gives.
 */
export function generatePodManifest(apps: ResolvedApp[], pod: PodArgs, hostEnv: NodeJS.ProcessEnv = process.env): PodManifest {
  if (apps.length === 0) throw new UsageError('no image given; usage: rkt run [flags] IMAGE [image flags] [--- IMAGE ...]');
  if (pod.interactive && apps.length > 1) throw new UsageError('--interactive is for pods with one app; this pod has ' + apps.length);
  const inherited: EnvironmentVariable[] = pod.inheritEnv ? Object.entries(hostEnv).flatMap(([name, value]) => (value === undefined ? [] : [{ name, value }])) : [];
  const podEnv = mergeEnv(inherited, ...pod.setEnvFile.map(readEnvFile), pod.setEnv.map((e) => nameValue(e, '--set-env')));
  const volumes = pod.volumes.map(parseVolumeFlag);
  const volumeNames = new Set<string>();
  for (const v of volumes) {
    if (volumeNames.has(v.name)) throw new UsageError(`volume "${v.name}" is given twice`);
    volumeNames.add(v.name);
  }
  const used = new Set<string>();
  const names = new Set<string>();
  const runtimeApps: RuntimeApp[] = apps.map((r) => {
    const { app, name, mounts, readOnly } = buildApp(r, pod, podEnv);
    if (names.has(name)) throw new UsageError(`two apps are named "${name}"; give one of them --name`);
    names.add(name);
    for (const m of mounts) {
      if (!volumeNames.has(m.volume)) throw new UsageError(`app "${name}" mounts volume "${m.volume}", which no --volume declares`);
      used.add(m.volume);
    }
    // a mount point of the image is served by the volume of the same name
    for (const mp of app.mountPoints ?? []) {
      if (mounts.some((m) => m.path === mp.path)) continue;
      if (volumeNames.has(mp.name)) {
        mounts.push({ volume: mp.name, path: mp.path });
        used.add(mp.name);
      } else {
        // rkt gives an unserved mount point an empty volume of its own
        const implicit: Volume = { name: mp.name, kind: 'empty', readOnly: mp.readOnly ?? false, mode: '0755', uid: 0, gid: 0 };
        if (!volumes.some((v) => v.name === mp.name)) volumes.push(implicit);
        volumeNames.add(mp.name);
        used.add(mp.name);
        mounts.push({ volume: mp.name, path: mp.path });
      }
    }
    const ra: RuntimeApp = { name, image: { name: r.manifest.name, id: r.imageId, labels: r.manifest.labels ?? [] }, app };
    if (readOnly !== undefined) ra.readOnlyRootFS = readOnly;
    if (r.args.annotations.length > 0) ra.annotations = r.args.annotations.map((text) => nameValue(text, '--annotation'));
    if (mounts.length) ra.mounts = mounts;
    const streams = appStreamsFromFlags(name, r.args, pod.interactive);
    if (streams.length) ra.annotations = [...(ra.annotations ?? []), ...streams];
    return ra;
  });
  for (const v of volumes) {
    if (!used.has(v.name)) throw new UsageError(`volume "${v.name}" is not mounted by any app; add --mount volume=${v.name},target=PATH after the image`);
  }
  const manifest: PodManifest = { acKind: 'PodManifest', acVersion: APPC_VERSION, apps: runtimeApps, volumes };
  if (pod.ports.length > 0) {
    if (pod.net.length === 1 && pod.net[0] === 'host') throw new UsageError('--port needs a contained network; it cannot be used with --net=host');
    manifest.ports = pod.ports.map(parsePortFlag);
    // every forwarded port must be one an app's image declares
    resolvePortMappings(manifest.ports, runtimeApps.map((a) => ({ app: a.name, ports: a.app?.ports ?? [] })));
  }
  try {
    return validatePodManifest(JSON.parse(JSON.stringify(manifest)));
  } catch (err) {
    if (err instanceof ManifestError) throw new UsageError(`the pod these flags describe is not valid: ${err.field}: ${err.rule}`);
    throw err;
  }
}
