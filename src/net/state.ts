import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { JsonObject } from './config.js';
import type { NetworkInvocation } from './cni.js';
import { NetworkSetupError } from './errors.js';

// What pod networking did, recorded in the pod directory before each step
// is taken (write-ahead), so that teardown — on stop, on exit, or by
// `rkt gc` after a kill -9 — can undo exactly that and nothing else, even
// if the configs in net.d have changed since. Everything lives under
// <pod>/netinfo/.

export const STATE_VERSION = 1;

export function netinfoDir(podDir: string): string {
  return path.join(podDir, 'netinfo');
}
export function netinfoStatePath(podDir: string): string {
  return path.join(netinfoDir(podDir), 'netinfo.json');
}
/** resolv.conf generated for the pod's apps (absent when the image's own is to be used). */
export function podResolvConfPath(podDir: string): string {
  return path.join(netinfoDir(podDir), 'resolv.conf');
}
/** hosts file generated for the pod's apps (absent when the image's own is to be used). */
export function podHostsPath(podDir: string): string {
  return path.join(netinfoDir(podDir), 'hosts');
}

export interface PortMapping {
  /** The app port's name, as in the image manifest. */
  name: string;
  protocol: string;
  hostPort: number;
  podPort: number;
  /** Host address to listen on; absent means every address. */
  hostIP?: string;
}

export interface NetworkState {
  name: string;
  ifName: string;
  args: string;
  /** The file the config came from (for the user); the config itself is in `invocation`. */
  file: string;
  /** Exactly what ADD was run with, so DEL runs with the same. */
  invocation: NetworkInvocation;
  /** pending: not yet tried; adding: ADD started (a crash here still needs DEL); added: ADD succeeded. */
  phase: 'pending' | 'adding' | 'added';
  /** The raw result of ADD, handed back to DEL as prevResult. */
  result?: JsonObject;
  /** IPAM data directory of host-local, if the network uses it: emptied directories are removed on teardown. */
  ipamDataDir?: string;
}

export interface TapState {
  name: string;
  /** The CNI interface the tap is mirrored to. */
  ifName: string;
}

export interface PodNetState {
  version: number;
  podUuid: string;
  mode: 'host' | 'none' | 'contained';
  netnsPath?: string;
  /** CNI plugin directories used for ADD, used again for DEL. */
  pluginDirs: string[];
  networks: NetworkState[];
  ports: PortMapping[];
  taps: TapState[];
  /** The namespace is someone else's (--net-namespace): never deleted, its networks never DELeted. */
  external?: boolean;
  /** Set once teardown has undone everything; the summary stays for `rkt list`. */
  tornDown: boolean;
}

export function readState(podDir: string): PodNetState | undefined {
  let text: string;
  try {
    text = fs.readFileSync(netinfoStatePath(podDir), 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return undefined;
    throw err;
  }
  let st: PodNetState;
  try {
    st = JSON.parse(text) as PodNetState;
  } catch (err) {
    throw new NetworkSetupError(`pod network state ${netinfoStatePath(podDir)} is corrupt: ${(err as Error).message}`);
  }
  if (st.version !== STATE_VERSION) throw new NetworkSetupError(`pod network state ${netinfoStatePath(podDir)} has version ${st.version}, this rkt reads ${STATE_VERSION}`);
  return st;
}

export function writeState(podDir: string, st: PodNetState): void {
  fs.mkdirSync(netinfoDir(podDir), { recursive: true });
  writeFileAtomic(netinfoStatePath(podDir), JSON.stringify(st, null, 2) + '\n');
}
