import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { isErrno, RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import type { PodDnsFiles } from '../src/net/dns.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { POD_ROOT } from '../src/stage1-common/app-reports.js';
import { appGeneration, TreeHolds } from '../src/stage1-common/mutable-pod.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { appRequest, parseGuestState } from './agent-app.js';
import { KvmHostError } from './errors.js';
import { GUEST, kvmAppUnits } from './guest-config.js';
import { GUEST_NET } from './guest-net.js';
import { GUEST_ROOT_MOUNT } from './guest-root.js';
import { stepDropIn } from './guest-step.js';
import { agentSocketPaths } from './pod-files.js';
import type { AppResources } from './sizing.js';

// A mutable kvm pod (rkt app sandbox): a VM booted with no apps, which
// takes them while it runs through the app entrypoints (app.ts). What the
// run entrypoint does for it, and what it leaves for those entrypoints:
//
// - The guest's root (guest-root.ts) is a tree in the run entrypoint's
//   private mount namespace, which virtiofsd copies into its own sandbox
//   at start. For an app's rootfs mounted there later to reach the guest,
//   that tree is made a shared mount before virtiofsd starts: virtiofsd's
//   namespace takes it as a slave (it makes its mounts slaves of ours, then
//   binds the source on itself, which keeps it a slave), so mounts and
//   unmounts below it propagate to virtiofsd, never back.
// - The guest must not trust its caches for a tree that changes under it:
//   virtiofsd runs with cache=auto (entries and attributes revalidated
//   after a second, file data dropped when a file changed on open), as
//   for pods with host volumes, and with announce_submounts each added
//   app's rootfs is a submount in the guest, looked up when first reached.
// - /rkt/mutable in the guest's root keeps the exit hook from powering the
//   VM off when the last app exits; the pod network's guest step (which at
//   boot only the apps' units pull in) is wanted by rkt-pod.target.
// - The sandbox is ready once the guest agent answers an APP ping, which it
//   does once the guest's systemd has reached rkt-pod.target.
// - The state the app entrypoints need (the pod's ids, its DNS files) is
//   kept in kvm-mutable.json in the pod directory, written only by the host.

/** What the app entrypoints of a mutable kvm pod need from its run entrypoint (flavor-private). */
export const MUTABLE_STATE_FILE = 'kvm-mutable.json';

export interface MutableState {
  /** The pod's block of host ids (guest-ids.ts). */
  base: number;
  /** The apps' /etc/resolv.conf and /etc/hosts (app-dns.ts). */
  dns: PodDnsFiles;
  /** --insecure-options=paths on the sandbox: every app sees the guest's /dev. */
  sharedDevices: boolean;
  /** The pod has a guest network step, which every app unit requires. */
  netStep: boolean;
}

export function saveMutableState(paths: PodPaths, s: MutableState): void {
  writeFileAtomic(path.join(paths.dir, MUTABLE_STATE_FILE), JSON.stringify(s));
}

export function loadMutableState(paths: PodPaths): MutableState {
  try {
    return JSON.parse(fs.readFileSync(path.join(paths.dir, MUTABLE_STATE_FILE), 'utf8')) as MutableState;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new RktError('the pod has not finished starting (its sandbox state is missing); wait for "rkt status --wait-ready"');
    throw err;
  }
}

/**
 * A sandbox's VM is sized before its apps come (sizing.ts): as for
 * SANDBOX_APP_SLOTS apps without limits. An added app's memory and CPU
 * limits are its unit's, inside that VM.
 */
export const SANDBOX_APP_SLOTS = 4;

export function sandboxSize(): AppResources[] {
  return Array.from({ length: SANDBOX_APP_SLOTS }, (_, i) => ({ name: `app slot ${i + 1}` }));
}

/** Before boot: the guest's marks of a mutable pod (see above). */
export function writeMutableGuest(rootfs: string, netStep: boolean): void {
  fs.writeFileSync(path.join(rootfs, POD_ROOT.mutable), '');
  const wants = path.join(rootfs, GUEST.units, `${GUEST.podTarget}.wants`);
  fs.mkdirSync(wants, { recursive: true });
  const link = path.join(wants, GUEST_NET.unit);
  fs.rmSync(link, { force: true });
  if (netStep) fs.symlinkSync(`../${GUEST_NET.unit}`, link);
}

/** Make the guest's root a shared mount (before virtiofsd starts): see above. */
export async function shareGuestRoot(): Promise<void> {
  const r = await execa('mount', ['--make-rshared', GUEST_ROOT_MOUNT], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new KvmHostError(`cannot make the guest's root a shared mount: ${String(r.stderr).trim()}`);
}

/** Where an app's rootfs is in the tree virtiofsd serves (guest-root.ts). */
export function guestShareOf(paths: PodPaths, spec: Pick<AppSpec, 'rootfs'>): string {
  const rel = path.relative(paths.stage1Rootfs, spec.rootfs);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new KvmHostError(`its rootfs ${spec.rootfs} is outside the stage1 rootfs`);
  return path.join(GUEST_ROOT_MOUNT, 'root', rel);
}

/** Show an added app's rootfs (with its volumes) to the guest; in the run entrypoint's mount namespace. */
export async function shareAppRootfs(paths: PodPaths, spec: AppSpec): Promise<void> {
  const target = guestShareOf(paths, spec);
  if (!fs.existsSync(target)) throw new KvmHostError(`the guest's root has no ${target}: the sandbox's share is not set up`);
  const r = await execa('mount', ['--rbind', spec.rootfs, target], { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new KvmHostError(`cannot share the rootfs of app ${spec.name} with the guest: ${String(r.stderr).trim()}`);
}

/** Take it back: every mount at or below the app's place in the share; returns what is left. */
export function unshareAppRootfs(paths: PodPaths, spec: AppSpec): Promise<string[]> {
  return unmountAllUnder(guestShareOf(paths, spec));
}

/** The unit files of an added app, as the agent writes them (under /run/systemd/system). */
export function addedAppUnits(spec: AppSpec, state: MutableState, insecurePaths: boolean): [string, string][] {
  const units = kvmAppUnits(spec, { sharedDevices: state.sharedDevices || insecurePaths });
  const dropIns: [string, string][] = state.netStep ? units.map(([name]) => [`${name}.d/${GUEST_NET.dropIn}`, stepDropIn(GUEST_NET)]) : [];
  return [...units, ...dropIns];
}

const PING_ANSWER_MS = 3000;
const PING_RETRY_MS = 500;

/**
 * Wait until the guest takes apps: the agent answers a ping once the
 * guest's systemd has reached rkt-pod.target. A connection made while the
 * guest still boots may go unserved, so each try is short and retried.
 */
export async function waitForGuest(podDir: string, timeoutMs: number, ended: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (!ended()) {
    try {
      const state = parseGuestState(await appRequest(agentSocketPaths(podDir), { op: 'ping', app: '' }, { what: 'the sandbox', answerTimeoutMs: PING_ANSWER_MS }));
      log().debug({ ...state }, 'the guest takes apps');
      return;
    } catch (err) {
      // not up yet (no answer, or its systemd still starting): try again
      if (!(err instanceof RktError)) throw err;
      last = err.message;
    }
    if (Date.now() >= deadline) throw new KvmHostError(`the sandbox's guest did not get ready to take apps within ${timeoutMs / 1000} s (${last})`);
    await new Promise((r) => setTimeout(r, PING_RETRY_MS));
  }
}

/**
 * The run entrypoint's view of a mutable pod's apps, reread from the pod
 * manifest when it changes (it is replaced whole by stage0): which came,
 * went or were replaced since, and the holds on their rendered images.
 */
export class MutableApps {
  private generations = new Map<string, string>();
  private manifestSeen = '';
  private readonly trees: TreeHolds;

  constructor(private readonly paths: PodPaths) {
    this.trees = new TreeHolds(paths);
  }

  /** The apps the pod booted with (none, for rkt app sandbox). */
  init(specs: readonly AppSpec[]): void {
    for (const s of specs) this.generations.set(s.name, appGeneration(this.paths, s.name));
  }

  /** The apps now and the names that changed, or undefined when the manifest did not change. */
  refresh(): { specs: AppSpec[]; changed: string[]; added: string[] } | undefined {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.paths.manifest);
    } catch {
      return undefined;
    }
    const seen = `${st.ino}:${st.mtimeMs}`;
    if (seen === this.manifestSeen) return undefined;
    let specs: AppSpec[];
    try {
      specs = loadAppSpecs(this.paths);
    } catch (err) {
      log().warn(`cannot read the pod's apps: ${(err as Error).message}`);
      return undefined;
    }
    this.manifestSeen = seen;
    const now = new Map(specs.map((s) => [s.name, appGeneration(this.paths, s.name)]));
    const changed = [...new Set([...this.generations.keys(), ...now.keys()])].filter((a) => this.generations.get(a) !== now.get(a));
    this.generations = now;
    const added = changed.filter((a) => now.has(a));
    this.trees.update(added, changed);
    return { specs, changed, added };
  }

  release(): void {
    this.trees.releaseAll();
  }
}
