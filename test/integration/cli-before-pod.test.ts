import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, type RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podWorld } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Issue 15, items 8 and 9: which stage1 files are trusted without a
// signature, and flags that cannot work are refused before a pod exists
// (no exited pod without app statuses left in `rkt list`).

const FLY_ACI = path.join(REPO, 'build', 'stage1-fly.aci');
const KVM_ACI = path.join(REPO, 'build', 'stage1-kvm.aci');
const FLY = ['--insecure-options=image', `--stage1-path=${FLY_ACI}`];
const KVM = ['--insecure-options=image', `--stage1-path=${KVM_ACI}`];

async function world(t: ExecutionContext): Promise<{ env: RktEnv; image: string }> {
  needFile(FLY_ACI, 'run scripts/setup.sh, which builds the stage1 images');
  needFile(KVM_ACI, 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, 'rkt-before-pod-');
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  return { env, image };
}

/** No pod of any state in the data dir. */
async function noPods(t: ExecutionContext, env: RktEnv): Promise<void> {
  t.deepEqual(await listPods(env), []);
  for (const state of fs.existsSync(path.join(env.dir, 'pods')) ? fs.readdirSync(path.join(env.dir, 'pods')) : []) {
    t.deepEqual(fs.readdirSync(path.join(env.dir, 'pods', state)), [], `pods/${state} is empty`);
  }
}

test('--stage1-path to an image in the stage1 images directory needs no signature; elsewhere it does', async (t) => {
  const { env, image } = await world(t);
  t.is((await env.run(['--insecure-options=image', 'fetch', image])).exitCode, 0);
  const installed = env.file('stage1-images');
  fs.mkdirSync(installed);
  fs.copyFileSync(FLY_ACI, path.join(installed, 'stage1-fly.aci'));
  const elsewhere = env.file('elsewhere');
  fs.mkdirSync(elsewhere);
  fs.copyFileSync(FLY_ACI, path.join(elsewhere, 'stage1-fly.aci'));
  fs.symlinkSync(path.join(elsewhere, 'stage1-fly.aci'), path.join(installed, 'linked.aci'));
  const dirEnv = { RKT_STAGE1_IMAGES_DIR: installed };

  const ok = await env.run(['run', `--stage1-path=${path.join(installed, 'stage1-fly.aci')}`, 'example.com/busybox'], { env: dirEnv });
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.notRegex(String(ok.stderr), /signature/);
  const url = await env.run(['run', `--stage1-url=file://${path.join(installed, 'stage1-fly.aci')}`, 'example.com/busybox'], { env: dirEnv });
  t.is(url.exitCode, 0, String(url.stderr));

  for (const other of [path.join(elsewhere, 'stage1-fly.aci'), path.join(installed, 'linked.aci')]) {
    const refused = await env.run(['run', `--stage1-path=${other}`, 'example.com/busybox'], { env: dirEnv });
    t.is(refused.exitCode, 254, `${other} is not an installed stage1`);
    t.regex(String(refused.stderr), /signature|\.asc/i);
  }
  const insecure = await env.run(['run', '--insecure-options=image', `--stage1-path=${path.join(elsewhere, 'stage1-fly.aci')}`, 'example.com/busybox'], { env: dirEnv });
  t.is(insecure.exitCode, 0, String(insecure.stderr));
});

test('--net=host on kvm is refused before the pod exists, by run, prepare and run-prepared', async (t) => {
  const { env, image } = await world(t);
  for (const cmd of ['run', 'prepare']) {
    const r = await env.run([cmd, ...KVM, '--net=host', image]);
    t.is(r.exitCode, 254, String(r.stderr));
    t.regex(String(r.stderr), /--net=host cannot be used/);
    await noPods(t, env);
  }
  const prep = await env.run(['prepare', ...KVM, image]);
  t.is(prep.exitCode, 0, String(prep.stderr));
  const uuid = String(prep.stdout).trim();
  const r = await env.run(['run-prepared', '--net=host', uuid]);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /--net=host cannot be used/);
  t.deepEqual((await listPods(env)).map((p) => [p.name, p.state]), [[uuid, 'prepared']], 'the prepared pod stays prepared');
});

test('a --volume source that does not exist is refused before the pod exists', async (t) => {
  const { env, image } = await world(t);
  const missing = env.file('no-such-dir');
  for (const cmd of ['run', 'prepare']) {
    const r = await env.run([cmd, ...FLY, `--volume=data,kind=host,source=${missing}`, image, '--mount=volume=data,target=/data']);
    t.is(r.exitCode, 254, String(r.stderr));
    t.regex(String(r.stderr), /volume "data": source .*no-such-dir does not exist on the host/);
    await noPods(t, env);
  }
});

test('network, DNS, hosts and --interactive flags that stage1 would refuse are refused before the pod exists', async (t) => {
  const { env, image } = await world(t);
  const cases: [string[], string[]][] = [
    [KVM, ['--net=no-such-network']],
    [KVM, ['--dns=host', '--dns=1.1.1.1']],
    [KVM, ['--hosts-entry=not-an-ip=name']],
    [FLY, ['--net=none']],
    [FLY, ['--net=default,no-such-network']],
  ];
  for (const [stage1, flags] of cases) {
    const r = await env.run(['run', ...stage1, ...flags, image]);
    t.is(r.exitCode, 254, `${flags.join(' ')}: ${r.stderr}`);
    await noPods(t, env);
  }
  const two = await env.run(['run', ...FLY, '--interactive', image, '---', image, '--name=second']);
  t.is(two.exitCode, 254);
  t.regex(String(two.stderr), /--interactive is for pods with one app/);
  await noPods(t, env);
});

test('a working directory or an executable the image does not have is refused before the pod exists', async (t) => {
  const { env } = await world(t);
  const image = await buildAci(env.root, { name: 'example.com/odd', app: { exec: ['/bin/true'], user: '0', group: '0' }, files: { 'bin/notexec': 'echo hi\n' } });
  const cases: [string[], RegExp][] = [
    [['--working-dir=/no/such/dir'], /working directory \/no\/such\/dir of app "odd" does not exist in image example\.com\/odd/],
    [['--exec=/bin/notexec'], /\/bin\/notexec is not an executable file in image example\.com\/odd/],
  ];
  for (const [flags, message] of cases) {
    const r = await env.run(['run', ...FLY, image, ...flags]);
    t.is(r.exitCode, 254, String(r.stderr));
    t.regex(String(r.stderr), message);
    await noPods(t, env);
  }
  // a working directory a volume brings is there at run time
  const dir = env.file('vol');
  fs.mkdirSync(dir);
  const ok = await env.run(['run', ...FLY, `--volume=v,kind=host,source=${dir}`, image, '--mount=volume=v,target=/srv/data', '--working-dir=/srv/data']);
  t.is(ok.exitCode, 0, String(ok.stderr));
});
