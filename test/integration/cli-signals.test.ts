import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { REPO, RKT, type RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { podStatus, podWorld, processesWith, waitFor } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Issue 15, item 10: a signal to `rkt run` stops the pod promptly and the
// exit status says why (docs/architecture.md, "Signals to rkt run"):
// before every app has started, the pod is ended at once and rkt run exits
// 128 + the signal's number; after, the apps are stopped (kvm, nspawn: with
// SIGTERM, as rkt stop does) and rkt run exits with the app's status. A ^C
// at a terminal (SIGINT to rkt's whole process group) is the same request.

const ACI = {
  kvm: path.join(REPO, 'build', 'stage1-kvm.aci'),
  nspawn: path.join(REPO, 'build', 'stage1-coreos.aci'),
  fly: path.join(REPO, 'build', 'stage1-fly.aci'),
};
type Flavor = keyof typeof ACI;

interface Running {
  env: RktEnv;
  child: ResultPromise;
  uuid: string;
}

/** `rkt run` of a pod whose one app sleeps, in a process group of its own as a shell's job is. */
async function start(t: ExecutionContext, flavor: Flavor): Promise<Running> {
  needFile(ACI[flavor], 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, `rkt-signals-${flavor}-`);
  const image = await buildAci(env.root, { name: 'example.com/sleeper', app: { exec: ['/bin/sleep', '600'], user: '0', group: '0' } });
  const uuidFile = env.file('uuid');
  const net = flavor === 'fly' ? [] : ['--net=none'];
  const child = execa(RKT, [...env.globals(), 'run', '--insecure-options=image', `--stage1-path=${ACI[flavor]}`, ...net, `--uuid-file-save=${uuidFile}`, image], {
    reject: false,
    stdin: 'ignore',
    detached: true,
  });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('the pod UUID', async () => fs.existsSync(uuidFile) && fs.readFileSync(uuidFile, 'utf8').trim() !== '', 120_000);
  return { env, child, uuid: fs.readFileSync(uuidFile, 'utf8').trim() };
}

async function ready(t: ExecutionContext, r: Running): Promise<void> {
  const s = await r.env.run(['status', '--wait-ready=300s', r.uuid], { timeout: 320_000 });
  t.is(s.exitCode, 0, String(s.stderr));
}

/** The end of rkt run, and that nothing of the pod is left running. */
async function ended(t: ExecutionContext, r: Running): Promise<number> {
  const res = await r.child;
  t.deepEqual(await processesWith(r.uuid), [], 'no process of the pod is left');
  return res.exitCode ?? -1;
}

test('kvm: SIGINT while the VM boots ends the pod at once; rkt run exits 130 and rkt status says why', async (t) => {
  const r = await start(t, 'kvm');
  r.child.kill('SIGINT');
  t.is(await ended(t, r), 130);
  const s = await podStatus(r.env, r.uuid);
  t.is(s.state, 'exited');
  t.regex(s.exit_cause ?? '', /rkt run got SIGINT while the pod was starting/);
});

test('kvm: SIGTERM after boot stops the app as rkt stop does; rkt run exits with its status', async (t) => {
  const r = await start(t, 'kvm');
  await ready(t, r);
  r.child.kill('SIGTERM');
  t.is(await ended(t, r), 143);
  const s = await podStatus(r.env, r.uuid);
  t.deepEqual(s.apps.map((a) => [a.name, a.exit_code]), [['sleeper', 143]]);
});

for (const [flavor, status] of [['kvm', 143], ['nspawn', 143], ['fly', 130]] as const) {
  test(`${flavor}: ^C at the terminal (SIGINT to rkt's process group) after start: the app's status, recorded`, async (t) => {
    const r = await start(t, flavor);
    await ready(t, r);
    process.kill(-r.child.pid!, 'SIGINT');
    t.is(await ended(t, r), status);
    const s = await podStatus(r.env, r.uuid);
    t.deepEqual(s.apps.map((a) => [a.name, a.exit_code]), [['sleeper', status]], 'the app ended and said so: nothing killed the pod under it');
    t.is(s.exit_cause, undefined);
  });
}

test('kvm: ^C at the terminal while the VM boots is the same request as SIGINT to rkt', async (t) => {
  const r = await start(t, 'kvm');
  process.kill(-r.child.pid!, 'SIGINT');
  t.is(await ended(t, r), 130);
  const s = await podStatus(r.env, r.uuid);
  t.regex(s.exit_cause ?? '', /rkt run got SIGINT while the pod was starting/);
});
