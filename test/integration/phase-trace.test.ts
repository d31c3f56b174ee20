import test, { type ExecutionContext } from 'ava';
import path from 'node:path';
import { parseMarkLine } from '../../src/util/phase-trace.js';
import { buildAci } from '../helpers/aci.js';
import { reapPods } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';
import { REPO, RktEnv } from '../helpers/rkt.js';

// `rkt run --debug` prints the phase trace of the pod start for every
// flavor: each phase once, in the order the pod goes through them, on one
// timeline across stage0 (rkt:) and the run entrypoint (stage1:). Behaviour
// only: the times themselves are bench/'s business, never asserted here.

const STAGE0_FIRST = ['stage0-parse', 'image-lookup', 'pod-preparation'].map((p) => `rkt ${p}`);
const STAGE1_START = ['stage1-start', 'network', 'app-rootfs'].map((p) => `stage1 ${p}`);
const STAGE1_END = ['app-start', 'app-exit', 'pod-exit'].map((p) => `stage1 ${p}`);
const STAGE0_LAST = ['rkt stage0-exit'];

const FLAVORS = {
  fly: { aci: 'stage1-fly.aci', net: [], own: [] },
  nspawn: { aci: 'stage1-coreos.aci', net: ['--net=none'], own: ['stage1 container-start'] },
  kvm: { aci: 'stage1-kvm.aci', net: ['--net=none'], own: ['stage1 share-start', 'stage1 vm-start', 'stage1 guest-kernel', 'stage1 guest-init'] },
};

async function world(t: ExecutionContext, flavor: keyof typeof FLAVORS): Promise<{ env: RktEnv; image: string; flags: string[] }> {
  const aci = path.join(REPO, 'build', FLAVORS[flavor].aci);
  needFile(aci, 'build the stage1 images (scripts/setup.sh does)');
  const env = new RktEnv(`rkt-trace-${flavor}-`);
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  return { env, image, flags: ['--insecure-options=image', `--stage1-path=${aci}`, ...FLAVORS[flavor].net] };
}

function marks(stderr: unknown): { who: string; at: number }[] {
  return String(stderr)
    .split('\n')
    .map((l) => parseMarkLine(l))
    .filter((m) => m !== undefined)
    .map((m) => ({ who: `${m.program} ${m.phase}`, at: m.at }));
}

for (const flavor of Object.keys(FLAVORS) as (keyof typeof FLAVORS)[]) {
  test(`${flavor}: --debug prints every phase of the pod start once, in order, on one timeline`, async (t) => {
    const { env, image, flags } = await world(t, flavor);
    const r = await env.run(['run', '--debug', ...flags, image], { timeout: 300_000 });
    t.is(r.exitCode, 0, String(r.stderr));
    const seen = marks(r.stderr);
    t.deepEqual(
      seen.map((m) => m.who),
      [...STAGE0_FIRST, ...STAGE1_START, ...FLAVORS[flavor].own, ...STAGE1_END, ...STAGE0_LAST],
    );
    // one timeline: each mark is at or after the one before it, whichever process made it
    for (let i = 1; i < seen.length; i++) t.true(seen[i]!.at >= seen[i - 1]!.at, `${seen[i]!.who} is not before ${seen[i - 1]!.who}`);

    const quiet = await env.run(['run', ...flags, image], { timeout: 300_000 });
    t.is(quiet.exitCode, 0, String(quiet.stderr));
    t.deepEqual(marks(quiet.stderr), [], 'no trace without --debug');
  });
}

test('run-prepared traces the start of a prepared pod, without an image lookup', async (t) => {
  const { env, image, flags } = await world(t, 'fly');
  const p = await env.run(['prepare', '--quiet', ...flags, image]);
  t.is(p.exitCode, 0, String(p.stderr));
  const r = await env.run(['run-prepared', '--debug', String(p.stdout).trim()]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.deepEqual(
    marks(r.stderr).map((m) => m.who),
    ['rkt stage0-parse', ...STAGE1_START, ...STAGE1_END, ...STAGE0_LAST],
  );
});

test('the hand-over variables do not reach the apps', async (t) => {
  const { env, image, flags } = await world(t, 'fly');
  const r = await env.run(['run', '--debug', ...flags, image, '--exec=/bin/sh', '--', '-c', 'env']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /^PATH=/m, 'the app printed its environment');
  t.notRegex(String(r.stdout), /RKT_TRACE/);
});
