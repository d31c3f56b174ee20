import { nameWithVersion } from '../appc/image-ref.js';
import { RktError } from '../errors.js';
import { log } from '../log.js';
import { Pod, type PodState } from './pod.js';
import { formatPodNetworks, readPodNetworks } from '../net/pod-network.js';

/** What list and status report about a pod, read once. */
export interface PodInfo {
  uuid: string;
  state: PodState;
  apps: { name: string; image: string; imageId: string; exitCode?: number }[];
  created?: Date;
  started?: Date;
  exited?: Date;
  pid?: number;
  exitCause?: string;
  /** "default:ip4=172.16.28.2", as rkt prints networks. */
  networks: string;
  networkList: { name: string; ip4?: string }[];
}

export function podInfo(pod: Pod): PodInfo {
  const state = pod.state();
  let apps: PodInfo['apps'] = [];
  try {
    // an embryo or aborted preparation has no manifest yet
    const m = pod.manifestIfWritten();
    const codes = pod.appExitStatuses();
    if (m) apps = m.apps.map((a) => ({ name: a.name, image: nameWithVersion({ name: a.image.name ?? '', labels: a.image.labels }), imageId: a.image.id, exitCode: codes[a.name] }));
  } catch (err) {
    // one damaged pod must not hide the others from rkt list
    if (!(err instanceof RktError)) throw err;
    log().warn(`pod ${pod.uuid}: ${err.message}`);
  }
  const running = state === 'running';
  const net = state === 'running' || state === 'exited' ? readPodNetworks(pod.dir) : undefined;
  const ran = running || state === 'exited' || state === 'exited garbage' || state === 'deleting';
  return {
    uuid: pod.uuid,
    state,
    apps,
    created: pod.createdAt(),
    started: ran ? pod.startedAt() : undefined,
    exited: ran && !running ? (pod.exitedAt() ?? pod.startedAt()) : undefined,
    pid: ran ? pod.pid() : undefined,
    exitCause: ran && !running ? pod.exitCause() : undefined,
    networks: formatPodNetworks(net),
    networkList: (net?.networks ?? []).map((n) => ({ name: n.name, ...(n.ip4 !== undefined ? { ip4: n.ip4 } : {}) })),
  };
}

/** Nanoseconds since the epoch, as rkt's JSON carries times. */
export function nanos(d: Date | undefined): number | undefined {
  return d === undefined ? undefined : d.getTime() * 1e6;
}

/**
 * A pod as `rkt list --format=json` and `rkt status --format=json` print it:
 * rkt's field names (times in nanoseconds), plus exited_at and exit_cause,
 * which rkt's JSON lacks, the same in both commands.
 */
export function podJson(p: PodInfo): Record<string, unknown> {
  return {
    name: p.uuid,
    state: p.state,
    networks: p.networkList,
    app_names: p.apps.map((a) => a.name),
    apps: p.apps.map((a) => ({ name: a.name, image_id: a.imageId, image_name: a.image, ...(a.exitCode !== undefined ? { exit_code: a.exitCode } : {}) })),
    pid: p.state === 'running' ? p.pid : undefined,
    created_at: nanos(p.created),
    started_at: nanos(p.started),
    exited_at: nanos(p.exited),
    exit_cause: p.exitCause,
  };
}
