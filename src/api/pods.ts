import fs from 'node:fs';
import { parseImageManifest } from '../appc/image-manifest.js';
import type { Annotation, ImageManifest } from '../appc/types.js';
import { RktError, isErrno } from '../errors.js';
import { log } from '../log.js';
import { podInfo } from '../pod/info.js';
import { Pod, type PodState } from '../pod/pod.js';
import { APPC_VERSION } from '../version.js';
import { nanosString, type AppMsg, type KeyValue, type PodFilter, type PodMsg, type PodStateName } from './messages.js';

// Pods as the v1alpha API shows them, read from the pod directories with the
// same code as "rkt list" and "rkt status" (src/pod/info.ts), never locked
// beyond the instant a state probe takes.

const STATE: Record<PodState, PodStateName> = {
  embryo: 'POD_STATE_EMBRYO',
  preparing: 'POD_STATE_PREPARING',
  'aborted prepare': 'POD_STATE_ABORTED_PREPARE',
  prepared: 'POD_STATE_PREPARED',
  running: 'POD_STATE_RUNNING',
  exited: 'POD_STATE_EXITED',
  // rkt's API shows both garbage states as garbage
  'exited garbage': 'POD_STATE_GARBAGE',
  garbage: 'POD_STATE_GARBAGE',
  deleting: 'POD_STATE_DELETING',
};

export function podStateName(state: PodState): PodStateName {
  return STATE[state];
}

export function keyValues(list: readonly Annotation[] | undefined): KeyValue[] {
  return (list ?? []).map((a) => ({ Key: a.name, value: a.value }));
}

/** The "version" label, or "latest", as rkt's API reports an image's version. */
export function imageVersion(m: Pick<ImageManifest, 'labels'>): string {
  return m.labels?.find((l) => l.name === 'version')?.value ?? 'latest';
}

function readIfThere(file: string): Buffer | undefined {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return undefined;
    throw err;
  }
}

/** The image manifest stage0 recorded for an app when it prepared the pod. */
function appImageManifest(pod: Pod, app: string): ImageManifest | undefined {
  const data = readIfThere(pod.paths.appImageManifest(app));
  if (data === undefined) return undefined;
  try {
    return parseImageManifest(data);
  } catch (err) {
    if (!(err instanceof RktError)) throw err;
    log().warn(`pod ${pod.uuid}, app ${app}: ${err.message}`);
    return undefined;
  }
}

/** The cgroup (unified hierarchy) of the pod's stage1 process. */
function cgroupOf(pid: number | undefined): string {
  if (pid === undefined) return '';
  const text = readIfThere(`/proc/${pid}/cgroup`)?.toString('utf8') ?? '';
  return /^0::(.*)$/m.exec(text)?.[1] ?? '';
}

/** When the pod was moved to garbage: the rename touches its directory. */
function gcMarkedAt(pod: Pod): Date | undefined {
  if (pod.stateDir !== 'garbage' && pod.stateDir !== 'exited-garbage') return undefined;
  try {
    return fs.statSync(pod.dir).mtime;
  } catch {
    // removed meanwhile
    return undefined;
  }
}

export function podMessage(pod: Pod, detail: boolean): PodMsg {
  const info = podInfo(pod);
  const state = podStateName(info.state);
  let manifestBytes: Buffer | undefined;
  let annotations: KeyValue[] = [];
  const appAnnotations = new Map<string, KeyValue[]>();
  if (info.state !== 'embryo') {
    manifestBytes = readIfThere(pod.paths.manifest);
    try {
      const m = pod.manifestIfWritten();
      annotations = keyValues(m?.annotations);
      for (const a of m?.apps ?? []) appAnnotations.set(a.name, keyValues(a.annotations));
    } catch (err) {
      // podInfo has already warned about a damaged manifest
      if (!(err instanceof RktError)) throw err;
    }
  }
  const afterRun = info.state === 'exited' || info.state === 'exited garbage' || info.state === 'deleting';
  const apps: AppMsg[] = info.apps.map((a) => {
    const im = appImageManifest(pod, a.name);
    let appState: AppMsg['state'] = 'APP_STATE_UNDEFINED';
    if (a.exitCode !== undefined || afterRun) appState = 'APP_STATE_EXITED';
    else if (info.state === 'running') appState = 'APP_STATE_RUNNING';
    return {
      name: a.name,
      image: {
        base_format: { type: 'IMAGE_TYPE_APPC', version: APPC_VERSION },
        id: a.imageId,
        name: im?.name ?? a.image.replace(/:[^:/]*$/, ''),
        version: im ? imageVersion(im) : '',
      },
      state: appState,
      exit_code: a.exitCode ?? 0,
      annotations: appAnnotations.get(a.name) ?? [],
    };
  });
  const withNets = info.state === 'running' || info.state === 'exited';
  return {
    id: info.uuid,
    pid: info.pid ?? -1,
    state,
    apps,
    networks: withNets ? info.networkList.map((n) => ({ name: n.name, ipv4: n.ip4 ?? '', ipv6: '' })) : [],
    manifest: detail && manifestBytes ? manifestBytes : Buffer.alloc(0),
    annotations,
    cgroup: info.state === 'running' ? cgroupOf(info.pid) : '',
    created_at: nanosString(info.created),
    started_at: nanosString(info.started),
    gc_marked_at: nanosString(gcMarkedAt(pod)),
  };
}

function hasAll(have: Iterable<string>, want: string[]): boolean {
  const set = new Set(have);
  return want.every((w) => set.has(w));
}

export function hasAllKeyValues(have: KeyValue[], want: KeyValue[]): boolean {
  return want.every((w) => have.some((h) => h.Key === w.Key && h.value === w.value));
}

/** rkt's rules: every condition of one filter must hold. */
export function podMatches(p: PodMsg, f: PodFilter): boolean {
  if (f.ids.length > 0 && !f.ids.includes(p.id)) return false;
  if (f.states.length > 0 && !f.states.includes(p.state)) return false;
  if (!hasAll(p.apps.map((a) => a.name), f.app_names)) return false;
  if (!hasAll(p.apps.map((a) => a.image.id), f.image_ids)) return false;
  if (!hasAll(p.networks.map((n) => n.name), f.network_names)) return false;
  if (!hasAllKeyValues(p.annotations, f.annotations)) return false;
  if (f.cgroups.length > 0 && !f.cgroups.includes(p.cgroup)) return false;
  if (f.pod_sub_cgroups.length > 0 && (p.cgroup === '' || !f.pod_sub_cgroups.some((c) => c.startsWith(p.cgroup)))) return false;
  return true;
}

export function listPodMessages(dataDir: string, filters: PodFilter[], detail: boolean): PodMsg[] {
  const out: PodMsg[] = [];
  for (const pod of Pod.listAll(dataDir)) {
    let msg: PodMsg;
    try {
      msg = podMessage(pod, detail);
    } catch (err) {
      // a pod removed or moved while we read it is simply not listed
      if (isErrno(err, 'ENOENT')) continue;
      throw err;
    }
    if (filters.length === 0 || filters.some((f) => podMatches(msg, f))) out.push(msg);
  }
  out.sort((a, b) => (BigInt(a.created_at) < BigInt(b.created_at) ? -1 : BigInt(a.created_at) > BigInt(b.created_at) ? 1 : 0));
  return out;
}
