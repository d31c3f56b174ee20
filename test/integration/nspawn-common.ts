import type { ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { REPO, RKT, RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { reapPods, waitFor } from '../helpers/pods.js';

// Shared by the nspawn integration tests: the stage1 image built once per
// test file from the sources, a private rkt world per test that is reaped
// and checked for leftovers (cgroups, mounts) in teardown, and readers for
// what apps print about themselves.

export async function buildStage1(): Promise<{ aci: string; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-aci-'));
  const aci = path.join(dir, 'stage1-coreos.aci');
  const r = await execa('node', [path.join(REPO, 'dist/stage1-nspawn/build.js'), aci]);
  if (String(r.stdout).trim() !== aci) throw new Error(`build printed ${r.stdout}`);
  return { aci, dir };
}

/** The pod's cgroup directories left on the host (there should be none once it has exited). */
export function podCgroupsLeft(uuid: string): string[] {
  const out: string[] = [];
  const walk = (d: string, depth: number): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      if (e.name === `rkt-${uuid}`) out.push(path.join(d, e.name));
      else if (depth < 4) walk(path.join(d, e.name), depth + 1);
    }
  };
  walk('/sys/fs/cgroup', 0);
  return out;
}

export function mountsMentioning(text: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(text));
}

export interface NspawnEnv {
  env: RktEnv;
  image: string;
  /** Pod flags selecting the nspawn stage1 under test. */
  flags: string[];
  uuidFile: string;
  uuid(): string;
}

export async function setup(t: ExecutionContext, aci: string, app: Record<string, unknown> = {}): Promise<NspawnEnv> {
  const env = new RktEnv('rkt-nspawn-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/sh', '-c', 'echo default app'], user: '0', group: '0', ...app } });
  const uuidFile = env.file('uuid');
  return {
    env,
    image,
    flags: ['--insecure-options=image', `--stage1-path=${aci}`, `--uuid-file-save=${uuidFile}`],
    uuidFile,
    uuid: () => fs.readFileSync(uuidFile, 'utf8').trim(),
  };
}

/** An image with its own isolators (seccomp has no run flag). */
export async function imageWith(ne: NspawnEnv, name: string, isolators: unknown[], app: Record<string, unknown> = {}): Promise<string> {
  return buildAci(ne.env.root, { name, app: { exec: ['/bin/sh', '-c', 'true'], user: '0', group: '0', isolators, ...app } });
}

/** After the pod has ended: nothing of it may remain on the host. */
export function assertNoLeftovers(t: ExecutionContext, ne: NspawnEnv, uuid: string): void {
  t.deepEqual(podCgroupsLeft(uuid), [], 'no cgroup of the pod is left');
  t.deepEqual(mountsMentioning(uuid), [], 'no mount of the pod is left');
}

/** A "Cap...:" line of /proc/self/status for exactly these capabilities. */
export function capMask(names: readonly string[]): string {
  let v = 0n;
  for (const n of names) v |= 1n << BigInt(LINUX_CAPABILITIES.indexOf(n));
  return v.toString(16).padStart(16, '0');
}

export function statusField(text: string, field: string): string | undefined {
  return new RegExp(`^${field}:\\s*(\\S+)`, 'm').exec(text)?.[1];
}

export const SELF_STATUS = 'grep -E "^(Cap|Seccomp|NoNewPrivs)" /proc/self/status';

/** rkt run in the background; resolves once the pod is running and ready. */
export async function runInBackground(ne: NspawnEnv, args: string[]): Promise<{ proc: ResultPromise; uuid: string }> {
  fs.rmSync(ne.uuidFile, { force: true });
  const proc = execa(RKT, [...ne.env.globals(), 'run', ...ne.flags, ...args], { reject: false, stdin: 'ignore' });
  await waitFor('the pod UUID', async () => fs.existsSync(ne.uuidFile) || proc.exitCode !== null, 30_000);
  const uuid = ne.uuid();
  const ready = path.join(ne.env.dir, 'pods/run', uuid, 'ready');
  await waitFor('the pod to be ready', async () => {
    if (proc.exitCode !== null) throw new Error(`rkt run exited early: ${String((await proc).stderr)}`);
    return fs.existsSync(ready);
  }, 30_000);
  return { proc, uuid };
}
