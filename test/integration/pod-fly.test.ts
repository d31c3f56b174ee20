import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { REPO, RktEnv, RKT } from '../helpers/rkt.js';
import { needFile } from '../helpers/prereqs.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podStatus, processesWith, reapPods, waitFor } from '../helpers/pods.js';

const FLY_OPTS = ['--insecure-options=image', '--stage1-name=fly'];
const FLY = ['run', ...FLY_OPTS];
const PREPARE = ['prepare', ...FLY_OPTS];

async function setup(t: ExecutionContext): Promise<{ env: RktEnv; image: string }> {
  const env = new RktEnv('rkt-pod-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/sh', '-c', 'echo default app'], user: '0', group: '0' } });
  return { env, image };
}

/** A sleep duration no other process uses, so that pgrep finds exactly the app. */
function uniqueMarker(): string {
  return String(100000 + Math.floor(Math.random() * 899999)) + String(process.pid % 1000);
}

test('run prints the app output and exits with its status, which status reports', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const r = await env.run([...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', 'echo out; echo err >&2; exit 3']);
  t.is(r.exitCode, 3, String(r.stderr));
  t.is(String(r.stdout).trim(), 'out');
  t.regex(String(r.stderr), /err/);
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const st = await env.run(['status', uuid.slice(0, 8)]);
  t.is(st.exitCode, 0, String(st.stderr));
  t.regex(String(st.stdout), /^state=exited$/m);
  t.regex(String(st.stdout), /^exited=true$/m);
  t.regex(String(st.stdout), /^app-busybox=3$/m);
  t.regex(String(st.stdout), /^created=/m);
  t.regex(String(st.stdout), /^started=/m);
  const json = await podStatus(env, uuid);
  t.is(json.apps[0]!.exit_code, 3);
});

test('the app sees its user, group, environment and working directory', async (t) => {
  const { env, image } = await setup(t);
  const r = await env.run([
    ...FLY,
    '--set-env=FOO=bar',
    image,
    '--user=1000',
    '--group=50',
    '--supplementary-gids=65534',
    '--working-dir=/etc',
    '--environment=BAZ=qux',
    '--exec=/bin/sh',
    '--',
    '-c',
    'echo "$(id -u) $(id -g) $(id -G) $(pwd) $AC_APP_NAME $FOO $BAZ $PATH"',
  ]);
  t.is(r.exitCode, 0, String(r.stderr));
  const [uid, gid, ...rest] = String(r.stdout).trim().split(' ');
  t.is(uid, '1000');
  t.is(gid, '50');
  t.true(rest.includes('65534'));
  t.true(rest.includes('/etc'));
  t.true(rest.includes('busybox'));
  t.true(rest.includes('bar'));
  t.true(rest.includes('qux'));
  t.true(rest.some((w) => w.includes('/usr/bin') && w.includes('/bin')));
});

test('a user or group the image does not have is refused before the pod starts', async (t) => {
  const { env, image } = await setup(t);
  const r = await env.run([...FLY, image, '--user=nosuchuser']);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /nosuchuser/);
  t.deepEqual(await listPods(env), []);
});

test('host volumes are mounted read-write or read-only, and empty volumes work', async (t) => {
  const { env, image } = await setup(t);
  const host = env.file('hostdir');
  fs.mkdirSync(host);
  fs.writeFileSync(path.join(host, 'in'), 'from host\n');
  const rw = await env.run([...FLY, `--volume=data,kind=host,source=${host}`, '--volume=scratch,kind=empty', image, '--mount=volume=data,target=/data', '--mount=volume=scratch,target=/scratch', '--exec=/bin/sh', '--', '-c', 'cat /data/in && echo written > /data/out && touch /scratch/x && ls /scratch']);
  t.is(rw.exitCode, 0, String(rw.stderr));
  t.regex(String(rw.stdout), /from host/);
  t.is(fs.readFileSync(path.join(host, 'out'), 'utf8'), 'written\n');
  const ro = await env.run([...FLY, `--volume=data,kind=host,source=${host},readOnly=true`, image, '--mount=volume=data,target=/data', '--exec=/bin/sh', '--', '-c', 'echo nope > /data/out2']);
  t.not(ro.exitCode, 0);
  t.false(fs.existsSync(path.join(host, 'out2')));
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  t.false(mounts.includes(env.dir), 'no pod mount is left on the host');
});

test('a multi-app pod runs every app and reports each exit status', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const r = await env.run([...FLY, `--uuid-file-save=${uuidFile}`, image, '--name=first', '--exec=/bin/sh', '--', '-c', 'echo one', '---', image, '--name=second', '--exec=/bin/sh', '--', '-c', 'echo two; exit 4']);
  t.is(r.exitCode, 4, String(r.stderr));
  t.regex(String(r.stdout), /one/);
  t.regex(String(r.stdout), /two/);
  const st = await podStatus(env, fs.readFileSync(uuidFile, 'utf8').trim());
  t.deepEqual(Object.fromEntries(st.apps.map((a) => [a.name, a.exit_code])), { first: 0, second: 4 });
});

test('prepare, list, cat-manifest, run-prepared and rm follow the pod through its states', async (t) => {
  const { env, image } = await setup(t);
  const p = await env.run([...PREPARE, image, '--exec=/bin/true']);
  t.is(p.exitCode, 0, String(p.stderr));
  const uuid = String(p.stdout).trim();
  t.regex(uuid, /^[0-9a-f-]{36}$/);
  t.is((await podStatus(env, uuid)).state, 'prepared');
  const list = String((await env.run(['list'])).stdout).split('\n');
  t.regex(list[0]!, /^UUID\s+APP\s+IMAGE NAME\s+STATE\s+CREATED\s+STARTED\s+NETWORKS$/);
  t.regex(list[1]!, new RegExp(`^${uuid.slice(0, 8)}\\s+busybox\\s+example\\.com/busybox:1\\.0\\.0\\s+prepared`));
  const noLegend = String((await env.run(['list', '--no-legend', '--full'])).stdout).trim().split('\n');
  t.is(noLegend.length, 1);
  t.true(noLegend[0]!.startsWith(uuid));
  const man = JSON.parse(String((await env.run(['cat-manifest', uuid])).stdout));
  t.is(man.acKind, 'PodManifest');
  t.deepEqual(man.apps[0].app.exec, ['/bin/true']);
  const run = await env.run(['run-prepared', uuid]);
  t.is(run.exitCode, 0, String(run.stderr));
  t.is((await podStatus(env, uuid)).state, 'exited');
  const again = await env.run(['run-prepared', uuid]);
  t.not(again.exitCode, 0);
  const rm = await env.run(['rm', uuid]);
  t.is(rm.exitCode, 0, String(rm.stderr));
  t.deepEqual(await listPods(env), []);
});

test('stop ends a running pod, --force kills it, --uuid-file names it', async (t) => {
  const { env, image } = await setup(t);
  const marker = uniqueMarker();
  for (const force of [false, true]) {
    const uuidFile = env.file(`uuid-${force}`);
    const child = execa(RKT, [...env.globals(), ...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', `exec sleep ${marker}`], { reject: false });
    await waitFor('uuid file', async () => fs.existsSync(uuidFile));
    const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
    const ready = await env.run(['status', '--wait-ready=20s', uuid]);
    t.is(ready.exitCode, 0, String(ready.stderr));
    t.regex(String(ready.stdout), /state=running/);
    t.regex(String(ready.stdout), /pid=\d+/);
    const stop = await env.run(['stop', ...(force ? ['--force'] : []), `--uuid-file=${uuidFile}`]);
    t.is(stop.exitCode, 0, String(stop.stderr));
    t.is(String(stop.stdout).trim(), `"${uuid}"`);
    await child;
    const st = await podStatus(env, uuid, ['--wait=20s']);
    t.is(st.state, 'exited');
    t.deepEqual(await processesWith(marker), []);
  }
  // as rkt: stopping a pod that has already exited is no failure
  const notRunning = await env.run(['stop', (await listPods(env))[0]!.name]);
  t.is(notRunning.exitCode, 0, String(notRunning.stderr));
  t.regex(String(notRunning.stderr), /already stopped/);
});

test('SIGTERM to rkt run reaches the apps', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const child = execa(RKT, [...env.globals(), ...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', 'trap "echo got-term; exit 7" TERM; while true; do sleep 0.1; done'], { reject: false });
  await waitFor('uuid file', async () => fs.existsSync(uuidFile));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  await env.run(['status', '--wait-ready=20s', uuid]);
  child.kill('SIGTERM');
  const r = await child;
  t.regex(String(r.stdout), /got-term/);
  t.is(r.exitCode, 7);
  t.is((await podStatus(env, uuid)).apps[0]!.exit_code, 7);
});

test('enter runs a command inside a running app and returns its status', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const child = execa(RKT, [...env.globals(), ...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', 'echo inside > /tmp/flag; exec sleep 1000'], { reject: false });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('uuid file', async () => fs.existsSync(uuidFile));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  await env.run(['status', '--wait-ready=20s', uuid]);
  await waitFor('app start', async () => String((await env.run(['enter', uuid, '/bin/cat', '/tmp/flag'])).stdout).includes('inside'));
  const r = await env.run(['enter', '--app=busybox', uuid, '/bin/sh', '-c', 'pwd; exit 5']);
  t.is(r.exitCode, 5);
  t.is(String(r.stdout).trim(), '/');
  const bad = await env.run(['enter', '--app=nope', uuid]);
  t.not(bad.exitCode, 0);
  await env.run(['stop', '--force', uuid]);
});

test('kill -9 of rkt run leaves an exited pod that gc removes, with no process left', async (t) => {
  const { env, image } = await setup(t);
  const marker = uniqueMarker();
  const uuidFile = env.file('uuid');
  const child = execa(RKT, [...env.globals(), ...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', `exec sleep ${marker}`], { reject: false });
  await waitFor('uuid file', async () => fs.existsSync(uuidFile));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  await env.run(['status', '--wait-ready=20s', uuid]);
  child.kill('SIGKILL');
  await child;
  await waitFor('the pod to read as exited', async () => (await podStatus(env, uuid)).state === 'exited', 10_000);
  await waitFor('the app to die', async () => (await processesWith(marker)).length === 0, 10_000);
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.deepEqual(await listPods(env), []);
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(env.dir));
});

test('gc marks exited pods first and removes them after the grace period', async (t) => {
  const { env, image } = await setup(t);
  t.is((await env.run([...FLY, image, '--exec=/bin/true'])).exitCode, 0);
  const first = await env.run(['gc']);
  t.is(first.exitCode, 0, String(first.stderr));
  t.is((await listPods(env))[0]!.state, 'exited garbage');
  const second = await env.run(['gc', '--grace-period=0s']);
  t.is(second.exitCode, 0);
  t.deepEqual(await listPods(env), []);
  const prepared = String((await env.run([...PREPARE, image])).stdout).trim();
  t.is((await env.run(['gc'])).exitCode, 0);
  t.is((await podStatus(env, prepared)).state, 'prepared');
  t.is((await env.run(['gc', '--expire-prepared=0s', '--grace-period=0s'])).exitCode, 0);
  t.deepEqual(await listPods(env), []);
});

test('a pod manifest given with --pod-manifest runs as given', async (t) => {
  const { env, image } = await setup(t);
  const id = String((await env.run(['--insecure-options=image', 'fetch', '--full', image])).stdout).trim();
  const manifest = {
    acKind: 'PodManifest',
    acVersion: '0.8.11',
    apps: [{ name: 'given', image: { name: 'example.com/busybox', id }, app: { exec: ['/bin/sh', '-c', 'echo from-manifest'], user: '0', group: '0' } }],
  };
  fs.writeFileSync(env.file('pod.json'), JSON.stringify(manifest));
  const r = await env.run([...FLY, `--pod-manifest=${env.file('pod.json')}`]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /from-manifest/);
  fs.writeFileSync(env.file('bad.json'), JSON.stringify({ ...manifest, apps: [{ ...manifest.apps[0], name: 'Bad Name' }] }));
  const bad = await env.run([...FLY, `--pod-manifest=${env.file('bad.json')}`]);
  t.not(bad.exitCode, 0);
  t.regex(String(bad.stderr), /name/);
});

test('twenty pods started at once all run and exit cleanly', async (t) => {
  const { env, image } = await setup(t);
  t.is((await env.run(['--insecure-options=image', 'fetch', '--full', image])).exitCode, 0);
  const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => env.run([...FLY, image, '--exec=/bin/sh', '--', '-c', `echo pod-${i}; exit ${i % 5}`], { timeout: 300_000 })));
  runs.forEach((r, i) => {
    t.is(r.exitCode, i % 5, String(r.stderr));
    t.is(String(r.stdout).trim(), `pod-${i}`);
  });
  const pods = await listPods(env);
  t.is(pods.length, 20);
  t.true(pods.every((p) => p.state === 'exited'));
});

for (const [what, args, rule] of [
  ['an unknown image', ['example.com/not-there', '--pull-policy=never'], /not in the store/],
  ['--interactive with two apps', ['--interactive', 'IMG', 'IMG', '--name=two'], /--interactive/],
  ['a volume without a mount', ['--volume=v,kind=empty', 'IMG'], /not mounted/],
  ['a mount of an unknown volume', ['IMG', '--mount=volume=v,target=/v'], /no --volume/],
  ['two stage1 flags', ['--stage1-path=/nonexistent', 'IMG'], /at most one/],
] as const) {
  test(`run refuses ${what} and leaves no pod behind`, async (t) => {
    const { env, image } = await setup(t);
    const r = await env.run([...FLY, ...args.map((a) => (a === 'IMG' ? image : a))]);
    t.not(r.exitCode, 0);
    t.regex(String(r.stderr), rule);
    t.is(String(r.stderr).trim().split('\n').filter((l) => !l.includes('signature verification has been disabled')).length, 1, String(r.stderr));
    t.deepEqual(await listPods(env), []);
  });
}

test('unknown and ambiguous pod UUIDs are errors', async (t) => {
  const { env, image } = await setup(t);
  const unknown = await env.run(['status', '00000000-0000-0000-0000-000000000000']);
  t.not(unknown.exitCode, 0);
  t.regex(String(unknown.stderr), /no pod/);
  const uuids: string[] = [];
  for (let i = 0; i < 17; i++) uuids.push(String((await env.run([...PREPARE, image])).stdout).trim());
  // 17 UUIDs over 16 hex digits: two share a first character
  const first = uuids.map((u) => u[0]!);
  const shared = first.find((c, i) => first.indexOf(c) !== i)!;
  const amb = await env.run(['status', shared]);
  t.is(amb.exitCode, 254);
  t.regex(String(amb.stderr), /ambiguous/);
});

test('a stage1 image without a run entrypoint is refused with its name', async (t) => {
  const { env, image } = await setup(t);
  const broken = await buildAci(env.root, { name: 'example.com/stage1-broken', busybox: false, manifest: { annotations: [{ name: 'coreos.com/rkt/stage1/interface-version', value: '5' }] } });
  const r = await env.run(['run', '--insecure-options=image', `--stage1-path=${broken}`, image]);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /coreos\.com\/rkt\/stage1\/run/);
  t.true((await listPods(env)).every((p) => p.state !== 'running'));
});

test('a running pod does not keep another pod of the same image from starting', async (t) => {
  const { env, image } = await setup(t);
  const uuidFile = env.file('uuid');
  const child = execa(RKT, [...env.globals(), ...FLY, `--uuid-file-save=${uuidFile}`, image, '--exec=/bin/sh', '--', '-c', 'exec sleep 1000'], { reject: false });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('uuid file', async () => fs.existsSync(uuidFile));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  await env.run(['status', '--wait-ready=20s', uuid]);
  const second = await env.run([...FLY, image, '--exec=/bin/true'], { timeout: 30_000 });
  t.is(second.exitCode, 0, String(second.stderr));
  // and the image cannot be removed from under the running pod
  const rm = await env.run(['image', 'rm', 'example.com/busybox']);
  t.not(rm.exitCode, 0);
  await env.run(['stop', '--force', uuid]);
});

test('an exec the image does not contain is refused before the pod starts', async (t) => {
  const { env, image } = await setup(t);
  const r = await env.run([...FLY, image, '--exec=/usr/bin/not-there']);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /\/usr\/bin\/not-there does not exist in image example\.com\/busybox/);
  t.deepEqual(await listPods(env), []);
});

test('fly refuses per-app stream modes and rkt attach with a line that names the stage1s that have them', async (t) => {
  const { env, image } = await setup(t);
  // this worktree's fly stage1, which knows the modes it refuses
  const aci = path.join(REPO, 'build', 'stage1-fly.aci');
  needFile(aci, 'build it with: node dist/stage1-fly/build.js build/stage1-fly.aci');
  const FLY = ['run', '--insecure-options=image', `--stage1-path=${aci}`];
  const r = await env.run([...FLY, image, '--stdin=stream', '--stdout=stream']);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /app "busybox": the fly stage1 does not support --stdin=stream --stdout=stream; use the kvm or nspawn stage1/);
  t.notRegex(String(r.stderr), /\n\s+at /, 'no stack trace');
  const marker = uniqueMarker();
  const child = execa(RKT, [...env.globals(), ...FLY, image, '--exec=/bin/sleep', '--', marker], { reject: false });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('the pod to run', async () => (await listPods(env)).some((p) => p.state === 'running'));
  const uuid = (await listPods(env)).find((p) => p.state === 'running')!.name;
  const a = await env.run(['attach', uuid]);
  t.is(a.exitCode, 254);
  t.regex(String(a.stderr), /has no coreos\.com\/rkt\/stage1\/attach entrypoint, so it cannot attach pods/);
  await env.run(['stop', '--force', uuid]);
  await child;
});
