import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { RktEnv, REPO, RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { reapPods, waitFor } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Shared by the kvm integration tests: each test gets its own rkt world and
// a busybox image, and runs pods on the stage1-kvm image built by
// `node dist/stage1-kvm/build.js` (real VMs: tcg where there is no kvm).

export const KVM_ACI = path.join(REPO, 'build', 'stage1-kvm.aci');
export const KVM = ['--insecure-options=image', `--stage1-path=${KVM_ACI}`];

export interface Setup {
  env: RktEnv;
  image: string;
}

export async function setup(t: ExecutionContext, app: Record<string, unknown> = { exec: ['/bin/sh', '-c', 'echo default app'], user: '0', group: '0' }): Promise<Setup> {
  needFile(KVM_ACI, 'run scripts/setup.sh, which builds the stage1 images');
  const env = new RktEnv('rkt-kvm-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/busybox', app });
  return { env, image };
}

export interface Background {
  child: ResultPromise;
  uuid: string;
}

/** Start `rkt run` in the background and wait until the pod has its UUID file (not until it is ready). */
export async function runInBackground(t: ExecutionContext, env: RktEnv, args: string[], opts: { env?: Record<string, string> } = {}): Promise<Background> {
  const uuidFile = env.file(`uuid-${Math.random().toString(36).slice(2)}`);
  const child = execa(RKT, [...env.globals(), 'run', ...KVM, `--uuid-file-save=${uuidFile}`, ...args], {
    reject: false,
    stdin: 'ignore',
    ...(opts.env && { env: opts.env }),
  });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('the pod UUID', async () => fs.existsSync(uuidFile) && fs.readFileSync(uuidFile, 'utf8').trim() !== '', 60_000);
  return { child, uuid: fs.readFileSync(uuidFile, 'utf8').trim() };
}

/** Wait until the pod's apps have started in the VM. */
export async function waitReady(t: ExecutionContext, env: RktEnv, uuid: string): Promise<void> {
  const r = await env.run(['status', '--wait-ready=120s', uuid]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /state=running/);
}

/** The pod directory, wherever the pod is in its life. */
export function podDir(env: RktEnv, uuid: string): string | undefined {
  const pods = path.join(env.dir, 'pods');
  for (const state of fs.existsSync(pods) ? fs.readdirSync(pods) : []) {
    const d = path.join(pods, state, uuid);
    if (fs.existsSync(d)) return d;
  }
  return undefined;
}

/** stderr without the lines every tcg run prints. */
export function stderrOf(r: { stderr: unknown }): string {
  return String(r.stderr)
    .split('\n')
    .filter((l) => !/signature verification has been disabled|hardware virtualization is not available/.test(l))
    .join('\n')
    .trim();
}
