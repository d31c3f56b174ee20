import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { REPO, RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { exclusiveHost, freePort, needNetPrereqs, serverReport } from './net-helpers.js';
import { assertNoLeftovers, buildStage1, mountsMentioning, setup, type NspawnEnv } from './nspawn-common.js';

// rkt's app commands on the nspawn stage1, as a user runs them: a sandbox
// in the background, apps added, started, stopped and removed one by one,
// and what the commands refuse. Run as root.

let stage1: { aci: string; dir: string };
test.before(async () => {
  stage1 = await buildStage1();
});
test.after.always(() => fs.rmSync(stage1.dir, { recursive: true, force: true }));

/** rkt app sandbox in the background; resolves once the (empty) pod is running and ready. */
async function sandbox(ne: NspawnEnv, extra: string[] = [], net = '--net=host'): Promise<{ proc: ResultPromise; uuid: string }> {
  fs.rmSync(ne.uuidFile, { force: true });
  const proc = execa(RKT, [...ne.env.globals(), 'app', 'sandbox', ...ne.flags, net, ...extra], { reject: false, stdin: 'ignore' });
  await waitFor('the sandbox UUID', async () => fs.existsSync(ne.uuidFile) || proc.exitCode !== null, 30_000);
  if (!fs.existsSync(ne.uuidFile)) throw new Error(`rkt app sandbox exited early: ${String((await proc).stderr)}`);
  const uuid = ne.uuid();
  const ready = path.join(ne.env.dir, 'pods/run', uuid, 'ready');
  await waitFor('the sandbox to be ready', async () => {
    if (proc.exitCode !== null) throw new Error(`rkt app sandbox exited early: ${String((await proc).stderr)}`);
    return fs.existsSync(ready);
  }, 60_000);
  return { proc, uuid };
}

async function rkt(ne: NspawnEnv, args: string[]) {
  return ne.env.run(args);
}

async function ok(ne: NspawnEnv, args: string[]) {
  const r = await rkt(ne, args);
  if (r.exitCode !== 0) throw new Error(`rkt ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
  return r;
}

async function appStatus(ne: NspawnEnv, uuid: string, app: string): Promise<{ name: string; state: string; exit_code?: number; image_id: string; started_at?: number; finished_at?: number }> {
  const r = await ok(ne, ['app', 'status', uuid, `--app=${app}`, '--format=json']);
  return JSON.parse(String(r.stdout));
}

let lastSandboxOutput = '';
async function stopSandbox(ne: NspawnEnv, uuid: string, proc: ResultPromise): Promise<number> {
  await ok(ne, ['stop', uuid]);
  const end = await proc;
  lastSandboxOutput = String(end.stdout);
  return end.exitCode ?? -1;
}

test('a sandbox takes an app: add, start, status, stop, rm; it stays up with no app running until rkt stop', async (t) => {
  const ne = await setup(t, stage1.aci);
  const worker = await buildAci(ne.env.root, { name: 'example.com/worker', app: { exec: ['/bin/sh', '-c', 'echo worker says hi; trap "exit 7" TERM; while true; do sleep 0.1; done'], user: '0', group: '0' } });
  const quick = await buildAci(ne.env.root, { name: 'example.com/quick', app: { exec: ['/bin/sh', '-c', 'exit 3'], user: '0', group: '0' } });
  const { proc, uuid } = await sandbox(ne, ['--annotation=example.com/owner=tests', '--hosts-entry=10.9.8.7=sandbox-peer']);

  const list0 = await ok(ne, ['app', 'list', uuid]);
  t.is(String(list0.stdout).trim(), 'NAME\tSTATE', 'an empty sandbox lists no app');
  const manifest = JSON.parse(String((await ok(ne, ['cat-manifest', uuid])).stdout));
  t.true(manifest.annotations.some((a: { name: string; value: string }) => a.name === 'coreos.com/rkt/stage1/mutable' && a.value === 'true'), 'the sandbox is marked mutable');
  t.true(manifest.annotations.some((a: { name: string; value: string }) => a.name === 'example.com/owner' && a.value === 'tests'), '--annotation lands in the pod manifest');

  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, worker, '--name=worker']);
  t.is((await appStatus(ne, uuid, 'worker')).state, 'created');
  const listed = String((await ok(ne, ['app', 'list', '--no-legend', uuid])).stdout);
  t.regex(listed, /^worker\s+created$/m);
  await ok(ne, ['app', 'start', uuid, '--app=worker']);
  let st = await appStatus(ne, uuid, 'worker');
  t.is(st.state, 'running');
  t.true(typeof st.started_at === 'number');
  // the added app's rendered image is held while the app is in the pod
  const tree = fs.readFileSync(path.join(ne.env.dir, 'pods/run', uuid, 'appsinfo/worker/treeRootfs'), 'utf8').trim();
  const gc = await ok(ne, ['image', 'gc', '--grace-period=0s']);
  t.true(fs.existsSync(path.join(tree, 'bin')), `rkt image gc left the running app's image alone: ${gc.stdout}${gc.stderr}`);
  t.regex(String(gc.stderr), new RegExp(`kept ${st.image_id}`), 'gc says why it kept the image');
  const hosts = await ok(ne, ['enter', '--app=worker', uuid, '/bin/cat', '/etc/hosts']);
  t.regex(String(hosts.stdout), /10\.9\.8\.7\s+sandbox-peer/, 'the sandbox\'s --hosts-entry reaches an added app');

  await ok(ne, ['app', 'stop', uuid, '--app=worker']);
  st = await appStatus(ne, uuid, 'worker');
  t.is(st.state, 'exited');
  t.is(st.exit_code, 7, 'the exit status of the stopped app is recorded');
  const pod = await podStatus(ne.env, uuid);
  t.is(pod.state, 'running', 'the sandbox stays up with no app running');
  t.is(pod.app_names?.includes('worker') ?? true, true);
  const status = String((await ok(ne, ['status', uuid])).stdout);
  t.regex(status, /app-worker=7/, 'rkt status shows the app\'s exit status');
  const listed2 = (await listPods(ne.env)).find((p) => p.name === uuid);
  t.deepEqual(listed2?.apps.map((a) => [a.name, a.exit_code]), [['worker', 7]], 'rkt list shows the app and its exit status');

  // an app that exits by itself
  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, quick, '--name=quick']);
  await ok(ne, ['app', 'start', uuid, '--app=quick']);
  await waitFor('the quick app to exit', async () => (await appStatus(ne, uuid, 'quick')).state === 'exited', 30_000);
  t.is((await appStatus(ne, uuid, 'quick')).exit_code, 3);
  t.is((await podStatus(ne.env, uuid)).state, 'running', 'every app has exited, and the sandbox is still up');

  await ok(ne, ['app', 'rm', uuid, '--app=worker']);
  await ok(ne, ['app', 'rm', uuid, '--app=quick']);
  t.is(String((await ok(ne, ['app', 'list', '--no-legend', uuid])).stdout).trim(), '');
  const after = JSON.parse(String((await ok(ne, ['cat-manifest', uuid])).stdout));
  t.deepEqual(after.apps, [], 'the removed apps are gone from the pod manifest');
  t.false(fs.existsSync(path.join(ne.env.dir, 'pods/run', uuid, 'exit-status', 'worker')));

  // an app still running when the sandbox stops records its status too
  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, worker, '--name=last']);
  await ok(ne, ['app', 'start', uuid, '--app=last']);
  await waitFor('the last app to run', async () => String((await ok(ne, ['enter', '--app=last', uuid, '/bin/cat', '/proc/1/comm'])).stdout).length > 0, 30_000);
  t.is(await stopSandbox(ne, uuid, proc), 7, "rkt app sandbox exits with its apps' status");
  t.regex(lastSandboxOutput, /worker says hi/, "the apps' output comes out of rkt app sandbox");
  const ended = await podStatus(ne.env, uuid);
  t.is(ended.state, 'exited');
  t.deepEqual(ended.apps.map((a) => [a.name, a.exit_code]), [['last', 7]]);
  t.is((await appStatus(ne, uuid, 'last')).state, 'exited');
  assertNoLeftovers(t, ne, uuid);
});

test('adding, starting, stopping and removing 20 apps in turn leaves no mount, unit or process behind', async (t) => {
  const ne = await setup(t, stage1.aci);
  // the sleep's argument is the marker pgrep finds
  const marker = String(900000 + (process.pid % 90000));
  const img = await buildAci(ne.env.root, { name: 'example.com/churn', app: { exec: ['/bin/sleep', marker], user: '0', group: '0' } });
  const { proc, uuid } = await sandbox(ne);
  const podDir = path.join(ne.env.dir, 'pods/run', uuid);
  const runPid = Number(fs.readFileSync(path.join(podDir, 'nspawn-run.pid'), 'utf8'));
  const init = Number(fs.readFileSync(path.join(podDir, 'pid'), 'utf8'));
  const mounts = () => fs.readFileSync(`/proc/${runPid}/mountinfo`, 'utf8').split('\n').filter((l) => l.includes(uuid)).sort();
  const containerMounts = () => fs.readFileSync(`/proc/${init}/mountinfo`, 'utf8').split('\n').sort();
  const units = async () => String((await execa('nsenter', [`--target=${init}`, '--all', '--root', '--wd', '--', '/usr/bin/systemctl', 'list-units', '--all', '--no-legend', '--plain'])).stdout).split('\n').map((l) => l.split(' ')[0]).filter((u) => u.endsWith('.service')).sort();
  const rootLine = containerMounts().find((l) => l.split(' ')[4] === '/')!;
  const master = / master:(\d+)/.exec(rootLine)?.[1];
  const runRoot = mounts().filter((l) => l.split(' ')[4] === path.join(podDir, 'stage1/rootfs'));
  t.truthy(master, "the container's root is a slave: it receives the app mounts");
  t.true(runRoot.some((l) => l.includes(` shared:${master} `)), "its master is the run entrypoint's shared mount of the container root");
  const own = / shared:(\d+)/.exec(rootLine)?.[1];
  t.false(own !== undefined && runRoot.some((l) => l.includes(` shared:${own} `)), 'the container sends no mount back to the run entrypoint');
  const before = { mounts: mounts(), container: containerMounts(), units: await units(), hostMounts: mountsMentioning(uuid) };
  for (let i = 0; i < 20; i++) {
    const name = `app${i}`;
    await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, img, `--name=${name}`]);
    t.true(mounts().some((l) => l.includes(`/opt/stage2/${name}/rootfs`)), `${name}'s rootfs is mounted`);
    await ok(ne, ['app', 'start', uuid, `--app=${name}`]);
    t.is((await appStatus(ne, uuid, name)).state, 'running');
    t.is((await processesWith(marker)).length, 1, `${name} runs, alone`);
    await ok(ne, ['app', 'stop', uuid, `--app=${name}`]);
    // recorded by the time app stop returns, as containerd's stop then remove expects
    t.is((await appStatus(ne, uuid, name)).exit_code, 143, `${name}'s SIGTERM is its status once app stop returns`);
    await ok(ne, ['app', 'rm', uuid, `--app=${name}`]);
  }
  t.deepEqual(mounts(), before.mounts, "the run entrypoint's mounts are as before");
  t.deepEqual(containerMounts(), before.container, "the container's mounts are as before");
  t.deepEqual(await units(), before.units, "the pod's systemd has the units it had before");
  t.deepEqual(mountsMentioning(uuid), before.hostMounts, 'the host has no mount of the pod');
  t.deepEqual(await processesWith(marker), [], 'no app process is left');
  t.deepEqual(fs.readdirSync(path.join(podDir, 'stage1/rootfs/opt/stage2')), [], 'no app directory is left');
  t.is(await stopSandbox(ne, uuid, proc), 0);
  assertNoLeftovers(t, ne, uuid);
});

test('what the app commands refuse, each with one line and status 254', async (t) => {
  const ne = await setup(t, stage1.aci);
  const img = await buildAci(ne.env.root, { name: 'example.com/svc', app: { exec: ['/bin/sh', '-c', 'while true; do sleep 0.1; done'], user: '0', group: '0' } });
  const { proc, uuid } = await sandbox(ne);
  const fails = async (args: string[], re: RegExp, what: string) => {
    const r = await rkt(ne, args);
    t.is(r.exitCode, 254, `${what}: status`);
    t.regex(String(r.stderr), re, what);
    t.false(/\n\s+at /.test(String(r.stderr)), `${what}: no stack trace`);
  };
  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, img, '--name=svc']);
  await fails(['--insecure-options=image', 'app', 'add', uuid, img, '--name=svc'], /already has an app named "svc"/, 'the same app name twice');
  t.is(JSON.parse(String((await ok(ne, ['cat-manifest', uuid])).stdout)).apps.length, 1, 'the refused add changed nothing');
  await fails(['app', 'start', uuid, '--app=nosuch'], /has no app "nosuch"/, 'start of an unknown app');
  await ok(ne, ['app', 'start', uuid, '--app=svc']);
  await fails(['app', 'start', uuid, '--app=svc'], /already running/, 'start of a running app');
  await fails(['app', 'rm', uuid, '--app=svc'], /is running; stop it first/, 'rm of a running app');
  t.is((await appStatus(ne, uuid, 'svc')).state, 'running', 'the refused rm left the app running');
  await fails(['app', 'status', uuid], /--app/, 'status without --app');
  await ok(ne, ['app', 'stop', uuid, '--app=svc']);
  await ok(ne, ['app', 'rm', uuid, '--app=svc']);
  // an app never started has nothing to stop, and goes away as it came
  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, img, '--name=idle']);
  const idleStop = await ok(ne, ['app', 'stop', uuid, '--app=idle']);
  t.regex(String(idleStop.stderr), /has not been started/);
  await ok(ne, ['app', 'rm', uuid, '--app=idle']);
  t.deepEqual(JSON.parse(String((await ok(ne, ['cat-manifest', uuid])).stdout)).apps, []);
  await fails(['--insecure-options=image', 'app', 'add', uuid, img, '--name=Bad_Name'], /Bad_Name|name/, 'an app name that is not an appc name');
  await fails(['app', 'add', uuid, img, '--net=host'], /app flags only/, 'a pod flag given to app add');

  // a pod started by rkt run is no sandbox
  fs.rmSync(ne.uuidFile, { force: true });
  const plain = execa(RKT, [...ne.env.globals(), 'run', ...ne.flags, '--net=host', img], { reject: false, stdin: 'ignore' });
  t.teardown(() => {
    plain.kill('SIGKILL');
  });
  await waitFor('the plain pod', async () => fs.existsSync(ne.uuidFile), 30_000);
  const other = ne.uuid();
  await waitFor('the plain pod to be ready', async () => fs.existsSync(path.join(ne.env.dir, 'pods/run', other, 'ready')), 60_000);
  await fails(['--insecure-options=image', 'app', 'add', other, img, '--name=extra'], /is not a mutable pod/, 'adding to a pod that is not a sandbox');
  await ok(ne, ['stop', other]);
  await plain;

  t.is(await stopSandbox(ne, uuid, proc), 0);
  await fails(['--insecure-options=image', 'app', 'add', uuid, img, '--name=late'], /is exited/, 'adding to a sandbox that has ended');
  assertNoLeftovers(t, ne, uuid);
});

test('fly refuses a sandbox with one line, and leaves no pod', async (t) => {
  const ne = await setup(t, stage1.aci);
  const dir = fs.mkdtempSync(path.join(ne.env.root, 'fly-'));
  const fly = path.join(dir, 'stage1-fly.aci');
  await execa('node', [path.join(REPO, 'dist/stage1-fly/build.js'), fly]);
  const r = await ne.env.run(['app', 'sandbox', '--insecure-options=image', `--stage1-path=${fly}`, '--net=host']);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /stage1 image coreos\.com\/rkt\/stage1-fly does not run mutable pods .*use .*nspawn/);
  t.is(String(r.stderr).split('\n').filter((l) => l.startsWith('rkt: ') && !l.startsWith('rkt: warning:')).length, 1, String(r.stderr));
  t.deepEqual(fs.readdirSync(path.join(ne.env.dir, 'pods')).flatMap((d) => fs.readdirSync(path.join(ne.env.dir, 'pods', d))), [], 'no pod is left');
});

test("a sandbox's network: --port forwards a host port to an app added later, --hostname names the pod", async (t) => {
  needNetPrereqs();
  await exclusiveHost(t);
  const ne = await setup(t, stage1.aci);
  const hostPort = await freePort();
  const img = await buildAci(ne.env.root, { name: 'example.com/server', app: { exec: ['/bin/sh', '-c', "exec nc -ll -p 80 -e /bin/sh -c 'echo hostname $(hostname)'"], user: '0', group: '0' } });
  const { proc, uuid } = await sandbox(ne, [`--port=http:tcp:80:127.0.0.1:${hostPort}`, '--hostname=sbx'], '--net=default');
  await ok(ne, ['--insecure-options=image', 'app', 'add', uuid, img, '--name=server']);
  await ok(ne, ['app', 'start', uuid, '--app=server']);
  t.regex(await serverReport('127.0.0.1', hostPort, 30_000), /^hostname sbx$/m);
  await ok(ne, ['app', 'stop', uuid, '--app=server']);
  await ok(ne, ['app', 'rm', uuid, '--app=server']);
  await stopSandbox(ne, uuid, proc);
  assertNoLeftovers(t, ne, uuid);
});
