import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { REPO, RKT, type RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { spawnTerm } from '../helpers/term.js';
import { KVM, runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';

// rkt's app commands on the kvm stage1, as a user runs them: a sandbox VM in
// the background, apps added, started, stopped and removed one by one
// (their root filesystems shared into the running VM, their units written
// and started through the guest agent), and what the commands refuse. Run
// as root. Each test boots one VM (tcg here: slow), so one sandbox carries
// many cases.

const AGENT_CLI = path.join(REPO, 'dist/stage1-kvm/agent-cli.js');

interface Sandbox {
  proc: ResultPromise;
  uuid: string;
  dir: string;
}

/** rkt app sandbox in the background; resolves once the (empty) VM is running and ready. */
async function sandbox(t: ExecutionContext, env: RktEnv, extra: string[] = []): Promise<Sandbox> {
  const uuidFile = env.file(`uuid-${Math.random().toString(36).slice(2)}`);
  const proc = execa(RKT, [...env.globals(), 'app', 'sandbox', ...KVM, '--net=none', `--uuid-file-save=${uuidFile}`, ...extra], { reject: false, stdin: 'ignore' });
  t.teardown(() => void proc.kill('SIGKILL'));
  await waitFor('the sandbox UUID', async () => (fs.existsSync(uuidFile) && fs.readFileSync(uuidFile, 'utf8').trim() !== '') || proc.exitCode !== null, 60_000);
  if (proc.exitCode !== null) throw new Error(`rkt app sandbox exited early: ${String((await proc).stderr)}`);
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  await waitReady(t, env, uuid);
  return { proc, uuid, dir: path.join(env.dir, 'pods/run', uuid) };
}

async function ok(env: RktEnv, args: string[]) {
  const r = await env.run(args);
  if (r.exitCode !== 0) throw new Error(`rkt ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
  return r;
}

async function appStatus(env: RktEnv, uuid: string, app: string): Promise<{ name: string; state: string; exit_code?: number; image_id: string; started_at?: number; finished_at?: number }> {
  return JSON.parse(String((await ok(env, ['app', 'status', uuid, `--app=${app}`, '--format=json'])).stdout));
}

async function stopSandbox(env: RktEnv, sb: Sandbox): Promise<{ status: number; stdout: string }> {
  await ok(env, ['stop', sb.uuid]);
  const end = await sb.proc;
  return { status: end.exitCode ?? -1, stdout: String(end.stdout) };
}

/** The guest as its agent sees it (rkt-app-ctl's state): mounts of apps, loaded units, processes. */
async function guestState(sb: Sandbox): Promise<{ mounts: number; units: number; processes: number }> {
  const r = await execa('node', [AGENT_CLI, path.join(sb.dir, 'qemu/agent.sock'), '--guest-state'], { reject: false });
  const m = /^mounts=(\d+) units=(\d+) processes=(\d+)$/.exec(String(r.stdout).trim());
  if (!m) throw new Error(`no guest state: ${r.stdout}${r.stderr}`);
  return { mounts: Number(m[1]), units: Number(m[2]), processes: Number(m[3]) };
}

/** The mount table of a process, as lines mentioning the pod or the guest's root. */
function mountsOf(pid: number, uuid: string): string[] {
  return fs
    .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .filter((l) => l.includes(uuid) || l.includes('/run/rkt/guest') || l.includes('/opt/stage2/'))
    .map((l) => l.split(' ').slice(4, 5).join(' '))
    .sort();
}

/** virtiofsd's process in its own sandbox: the deepest descendant of the one the pod recorded. */
function virtiofsdSandbox(dir: string): number {
  let pid = Number(fs.readFileSync(path.join(dir, 'virtiofsd.pid'), 'utf8'));
  for (;;) {
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    if (kids.length === 0) return pid;
    pid = kids[0]!;
  }
}

async function assertNothingLeft(t: ExecutionContext, env: RktEnv, uuid: string): Promise<void> {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(uuid));
  t.deepEqual(mounts, [], 'the host has no mount of the pod');
  t.is((await podStatus(env, uuid)).state, 'exited');
  await waitFor('no process of the pod', async () => (await processesWith(uuid)).length === 0, 15_000);
}

test.serial('a kvm sandbox takes apps: add, start, enter, attach, a read-only volume, stop, rm; it stays up with no app running until rkt stop', async (t) => {
  const { env } = await setup(t);
  const worker = await buildAci(env.root, { name: 'example.com/worker', app: { exec: ['/bin/sh', '-c', 'echo worker says hi; trap "exit 7" TERM; while true; do sleep 0.1; done'], user: '0', group: '0' } });
  // with the app flags and event handlers of a boot-time app
  const quick = await buildAci(env.root, {
    name: 'example.com/quick',
    app: {
      exec: ['/bin/sh', '-c', 'echo quick says $GREETING; grep CapBnd /proc/self/status; exit 3'],
      user: '0',
      group: '0',
      eventHandlers: [
        { name: 'pre-start', exec: ['/bin/sh', '-c', 'echo pre-start of quick'] },
        { name: 'post-stop', exec: ['/bin/sh', '-c', 'echo post-stop of quick'] },
      ],
    },
  });
  // an image mount point gets an empty volume of its own, read-only as the image asks
  const ro = await buildAci(env.root, {
    name: 'example.com/ro',
    app: {
      exec: ['/bin/sh', '-c', 'grep " /data " /proc/self/mounts; if touch /data/x 2>/dev/null; then echo data is writable; else echo data is read-only; fi; echo root is $(id -u)'],
      user: '0',
      group: '0',
      mountPoints: [{ name: 'data', path: '/data', readOnly: true }],
    },
  });
  // the same app name, removed and added again with other files: the guest must not serve the old ones from its cache
  const which = await Promise.all(['one', 'two'].map((w) => buildAci(env.root, { name: `example.com/which-${w}`, files: { '/etc/which': `which ${w}\n` }, app: { exec: ['/bin/cat', '/etc/which'], user: '0', group: '0' } })));
  // users the guest has never seen, one after the other: their passwd entries reach the running guest
  const users = await Promise.all(['4242', '4343'].map((u) => buildAci(env.root, { name: `example.com/user-${u}`, app: { exec: ['/bin/sh', '-c', 'echo uid $(id -u) gid $(id -g)'], user: u, group: u } })));
  const streamer = await buildAci(env.root, { name: 'example.com/streamer', app: { exec: ['/bin/sh', '-c', 'i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done'], user: '0', group: '0' } });
  const sb = await sandbox(t, env, ['--annotation=example.com/owner=tests', '--hosts-entry=10.9.8.7=sandbox-peer']);
  const { uuid } = sb;

  t.is(String((await ok(env, ['app', 'list', uuid])).stdout).trim(), 'NAME\tSTATE', 'an empty sandbox lists no app');
  const manifest = JSON.parse(String((await ok(env, ['cat-manifest', uuid])).stdout));
  t.true(manifest.annotations.some((a: { name: string; value: string }) => a.name === 'coreos.com/rkt/stage1/mutable' && a.value === 'true'), 'the sandbox is marked mutable');

  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, worker, '--name=worker']);
  t.is((await appStatus(env, uuid, 'worker')).state, 'created');
  await ok(env, ['app', 'start', uuid, '--app=worker']);
  let st = await appStatus(env, uuid, 'worker');
  t.is(st.state, 'running');
  // the added app's rendered image is held while the app is in the pod
  const gc = await ok(env, ['image', 'gc', '--grace-period=0s']);
  t.regex(String(gc.stderr), new RegExp(`kept ${st.image_id}`), 'rkt image gc keeps the added app\'s image');
  await waitFor('the worker to run', async () => (await env.run(['enter', '--app=worker', uuid, '/bin/true'])).exitCode === 0, 60_000);
  const hosts = await ok(env, ['enter', '--app=worker', uuid, '/bin/cat', '/etc/hosts']);
  t.regex(String(hosts.stdout), /10\.9\.8\.7\s+sandbox-peer/, "the sandbox's --hosts-entry reaches an added app");

  await ok(env, ['app', 'stop', uuid, '--app=worker']);
  st = await appStatus(env, uuid, 'worker');
  t.is(st.state, 'exited');
  t.is(st.exit_code, 7, 'the exit status of the stopped app is recorded');
  t.is(fs.readFileSync(path.join(sb.dir, 'exit-status/worker'), 'utf8').trim(), '7', 'by the host, in exit-status/');
  t.is((await podStatus(env, uuid)).state, 'running', 'the sandbox stays up with no app running');
  t.regex(String((await ok(env, ['status', uuid])).stdout), /app-worker=7/);
  const listed = (await listPods(env)).find((p) => p.name === uuid);
  t.deepEqual(listed?.apps.map((a) => [a.name, a.exit_code]), [['worker', 7]], 'rkt list shows the app and its exit status');

  // an app that exits by itself
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, quick, '--name=quick', '--environment=GREETING=hello', '--caps-retain=CAP_CHOWN,CAP_KILL']);
  await ok(env, ['app', 'start', uuid, '--app=quick']);
  // generous: under tcg, with the rest of the suite's VMs on two cores, the guest's systemd can take minutes
  await waitFor('the quick app to exit', async () => (await appStatus(env, uuid, 'quick')).state === 'exited', 180_000);
  t.is((await appStatus(env, uuid, 'quick')).exit_code, 3);
  t.is((await podStatus(env, uuid)).state, 'running', 'every app has exited, and the sandbox is still up');

  // a read-only volume: a mount of its own in the guest, read-only
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, ro, '--name=ro']);
  await ok(env, ['app', 'start', uuid, '--app=ro']);
  await waitFor('the ro app to exit', async () => (await appStatus(env, uuid, 'ro')).state === 'exited', 60_000);
  t.is((await appStatus(env, uuid, 'ro')).exit_code, 0);

  for (const img of which) {
    await ok(env, ['--insecure-options=image', 'app', 'add', uuid, img, '--name=which']);
    await ok(env, ['app', 'start', uuid, '--app=which']);
    await waitFor('the which app to exit', async () => (await appStatus(env, uuid, 'which')).state === 'exited', 60_000);
    t.is((await appStatus(env, uuid, 'which')).exit_code, 0);
    await ok(env, ['app', 'rm', uuid, '--app=which']);
  }

  // (no rm in between: removing an app makes the guest drop its caches)
  for (const [i, img] of users.entries()) {
    await ok(env, ['--insecure-options=image', 'app', 'add', uuid, img, `--name=user${i}`]);
    await ok(env, ['app', 'start', uuid, `--app=user${i}`]);
    await waitFor(`user${i} to exit`, async () => (await appStatus(env, uuid, `user${i}`)).state === 'exited', 60_000);
    t.is((await appStatus(env, uuid, `user${i}`)).exit_code, 0, `user${i} ran`);
  }
  for (const i of users.keys()) await ok(env, ['app', 'rm', uuid, `--app=user${i}`]);

  // an app whose stdout is a stream, reached with rkt attach
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, streamer, '--name=streamer', '--stdout=stream']);
  await ok(env, ['app', 'start', uuid, '--app=streamer']);
  const watcher = execa(RKT, [...env.globals(), 'attach', '--app=streamer', '--mode=stdout', uuid], { reject: false, stdin: 'ignore' });
  t.teardown(() => void watcher.kill('SIGKILL'));
  let seen = '';
  watcher.stdout?.on('data', (c: Buffer) => (seen += c.toString()));
  await waitFor('the streamer\'s lines through rkt attach', async () => /line 3\n/.test(seen) || watcher.exitCode !== null, 60_000);
  t.regex(seen, /line 1\nline 2\nline 3\n/, `rkt attach gets the added app's stdout: ${String((await Promise.race([watcher, Promise.resolve({ stderr: '' })])).stderr ?? '')}`);
  watcher.kill('SIGTERM');
  await watcher;
  await ok(env, ['app', 'stop', uuid, '--app=streamer']);
  t.is((await appStatus(env, uuid, 'streamer')).state, 'exited');

  for (const app of ['worker', 'quick', 'ro', 'streamer']) await ok(env, ['app', 'rm', uuid, `--app=${app}`]);
  t.is(String((await ok(env, ['app', 'list', '--no-legend', uuid])).stdout).trim(), '');
  t.deepEqual(JSON.parse(String((await ok(env, ['cat-manifest', uuid])).stdout)).apps, [], 'the removed apps are gone from the pod manifest');
  t.false(fs.existsSync(path.join(sb.dir, 'exit-status', 'worker')));
  t.deepEqual(fs.readdirSync(path.join(sb.dir, 'stage1/rootfs/opt/stage2')), [], 'no app directory is left');

  // an app still running when the sandbox stops records its status too
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, worker, '--name=last']);
  await ok(env, ['app', 'start', uuid, '--app=last']);
  await waitFor('the last app to run', async () => (await env.run(['enter', '--app=last', uuid, '/bin/true'])).exitCode === 0, 60_000);
  const end = await stopSandbox(env, sb);
  t.is(end.status, 7, "rkt app sandbox exits with its apps' status");
  t.regex(end.stdout, /worker says hi/, "the apps' output comes out of rkt app sandbox");
  t.regex(end.stdout, /^\S+ \/data \S+ ro[, ]/m, 'the volume is a read-only mount of its own in the guest');
  t.regex(end.stdout, /^data is read-only\nroot is 0$/m, 'and the app, root as it is, could not write to it');
  t.regex(end.stdout, /^pre-start of quick\nquick says hello\nCapBnd:\s+0000000000000021\n(.*\n)*post-stop of quick$/m, "an added app's environment, capabilities and event handlers are as at boot");
  t.regex(end.stdout, /^which one\n(.*\n)*which two$/m, 'an app added again under its name sees its new files, not the old ones');
  // (with virtiofsd's cache=always the guest keeps reading the /etc/passwd it read first, and the second user's app never runs)
  t.regex(end.stdout, /^uid 4242 gid 4242\n(.*\n)*uid 4343 gid 4343$/m, 'each new user runs its app');
  const ended = await podStatus(env, uuid);
  t.is(ended.state, 'exited');
  t.deepEqual(ended.apps.map((a) => [a.name, a.exit_code]), [['last', 7]]);
  await assertNothingLeft(t, env, uuid);
});

test.serial('an added app with a terminal: rkt attach --mode=tty, attached before the app starts, types into its shell, and its exit status is recorded', async (t) => {
  const { env, image } = await setup(t, { exec: ['/bin/sh'], user: '0', group: '0' });
  const sb = await sandbox(t, env);
  const { uuid } = sb;
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, image, '--name=shell', '--stdin=tty', '--stdout=tty', '--stderr=tty', '--exec=/bin/sh']);
  // attached first, as the OCI front's stand-in is: systemd opening and closing the terminal as it starts the app must not hang the session up
  const term = spawnTerm(RKT, [...env.globals(), 'attach', '--app=shell', '--mode=tty', uuid], { cwd: env.root, waitMs: 180_000 });
  t.teardown(() => term.kill());
  await term.waitFor(/Ctrl-\]/);
  await ok(env, ['app', 'start', uuid, '--app=shell']);
  // (what is typed before the shell runs is flushed when systemd resets the terminal for it, as TTYReset= does)
  await term.waitFor(/\/ # /);
  term.write('[ -t 0 ] && echo "typed-$((6 * 7))"\r');
  await term.waitFor(/typed-42/);
  term.write('exit 3\r');
  await waitFor('the shell to exit', async () => (await appStatus(env, uuid, 'shell')).state === 'exited', 60_000);
  t.is((await appStatus(env, uuid, 'shell')).exit_code, 3, 'the status of the shell the user typed exit 3 into');
  // the session lasts until the user detaches or the pod stops (guest/agent/PROTOCOL.md, "An attach session")
  term.write('\x1d');
  t.is(await term.exited, 0, term.output());
  t.is((await stopSandbox(env, sb)).status, 3);
  await assertNothingLeft(t, env, uuid);
});

test.serial('adding, starting, stopping and removing 20 apps in turn leaves no mount (host, virtiofsd, guest), unit or process behind', async (t) => {
  const { env } = await setup(t);
  // the sleep's argument is the marker the guest's process list would show
  const img = await buildAci(env.root, { name: 'example.com/churn', app: { exec: ['/bin/sleep', '987654'], user: '0', group: '0' } });
  const sb = await sandbox(t, env);
  const { uuid } = sb;
  const run = Number(fs.readFileSync(path.join(sb.dir, 'pid'), 'utf8'));
  const vfs = virtiofsdSandbox(sb.dir);
  // the last mount at a path is the one on top, which virtiofsd serves (one below it would be the host's, inherited)
  const rootLine = fs.readFileSync(`/proc/${run}/mountinfo`, 'utf8').split('\n').filter((l) => l.split(' ')[4] === '/run/rkt/guest/root').pop()!;
  t.regex(rootLine, / shared:\d+ /, "the guest's root is a shared mount in the run entrypoint's namespace");
  const vfsRoot = fs.readFileSync(`/proc/${vfs}/mountinfo`, 'utf8').split('\n').filter((l) => l.split(' ')[4] === '/').pop()!;
  t.regex(vfsRoot, / master:\d+/, "virtiofsd's root is a slave: it receives the app mounts");
  const before = { host: mountsOf(run, uuid), virtiofsd: mountsOf(vfs, uuid), guest: await guestState(sb), processes: (await processesWith(uuid)).length };
  t.is(before.guest.mounts, 0);
  for (let i = 0; i < 20; i++) {
    const name = `app${i}`;
    await ok(env, ['--insecure-options=image', 'app', 'add', uuid, img, `--name=${name}`]);
    t.true(mountsOf(vfs, uuid).some((l) => l.endsWith(`/opt/stage2/${name}/rootfs`)), `${name}'s rootfs reached virtiofsd`);
    await ok(env, ['app', 'start', uuid, `--app=${name}`]);
    await waitFor(`${name} to run`, async () => (await env.run(['enter', `--app=${name}`, uuid, '/bin/true'])).exitCode === 0, 60_000);
    const during = await guestState(sb);
    // (its rootfs is mounted in the guest where it is reached: in its unit's own mount namespace)
    t.true(during.units > before.guest.units && during.processes > before.guest.processes, `${name} is loaded and runs in the guest (${JSON.stringify(during)})`);
    await ok(env, ['app', 'stop', uuid, `--app=${name}`]);
    t.is((await appStatus(env, uuid, name)).exit_code, 143, `${name}'s SIGTERM is its status`);
    await ok(env, ['app', 'rm', uuid, `--app=${name}`]);
    // the first app's default dependencies pull in sysinit.target once, for good: count from after it
    if (i === 0) before.guest = await guestState(sb);
  }
  // a stopped app's last processes, and short-lived helpers of the guest's systemd, take a moment to go
  let guest = await guestState(sb);
  const settle = Date.now() + 30_000;
  while ((guest.processes !== before.guest.processes || guest.units !== before.guest.units) && Date.now() < settle) {
    await new Promise((r) => setTimeout(r, 1000));
    guest = await guestState(sb);
  }
  const after = { host: mountsOf(run, uuid), virtiofsd: mountsOf(vfs, uuid), guest, processes: (await processesWith(uuid)).length };
  t.deepEqual(after.host, before.host, "the run entrypoint's mounts are as before");
  t.deepEqual(after.virtiofsd, before.virtiofsd, "virtiofsd's mounts are as before");
  t.is(after.guest.mounts, 0, 'the guest has no app mount left');
  t.is(after.guest.units, before.guest.units, "the guest's systemd has as many units loaded as after the first app");
  t.is(after.guest.processes, before.guest.processes, 'the guest runs as many processes as after the first app');
  t.is(after.processes, before.processes, 'the host runs as many processes of the pod as before');
  t.deepEqual(fs.readdirSync(path.join(sb.dir, 'stage1/rootfs/opt/stage2')), [], 'no app directory is left');
  t.deepEqual(fs.readdirSync(path.join(sb.dir, 'overlay')), [], 'no overlay is left');
  t.is((await stopSandbox(env, sb)).status, 0);
  await assertNothingLeft(t, env, uuid);
});

test.serial('what the app commands refuse on kvm, each with one line and status 254', async (t) => {
  const { env, image } = await setup(t, { exec: ['/bin/sh', '-c', 'while true; do sleep 0.1; done'], user: '0', group: '0' });
  const sb = await sandbox(t, env);
  const { uuid } = sb;
  const fails = async (args: string[], re: RegExp, what: string) => {
    const r = await env.run(args);
    t.is(r.exitCode, 254, `${what}: status`);
    t.regex(stderrOf(r), re, what);
    // one line, or for a refusal by the stage1 its line and stage0's "stage1 could not ..." (as on nspawn)
    const lines = stderrOf(r).split('\n');
    t.true(lines.length === 1 || (lines.length === 2 && lines[0]!.startsWith('stage1: ') && /^rkt: stage1 could not/.test(lines[1]!)), `${what}: one line: ${stderrOf(r)}`);
  };
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, image, '--name=svc']);
  await fails(['--insecure-options=image', 'app', 'add', uuid, image, '--name=svc'], /already has an app named "svc"/, 'the same app name twice');
  t.is(JSON.parse(String((await ok(env, ['cat-manifest', uuid])).stdout)).apps.length, 1, 'the refused add changed nothing');
  await fails(['--insecure-options=image', 'app', 'add', uuid, image, '--name=big', '--seccomp=mode=retain,@docker/default-whitelist'], /seccomp/, 'an isolator kvm cannot honour');
  t.is(JSON.parse(String((await ok(env, ['cat-manifest', uuid])).stdout)).apps.length, 1, 'the refused isolator changed nothing');
  t.deepEqual(fs.readdirSync(path.join(sb.dir, 'stage1/rootfs/opt/stage2')), ['svc'], 'and left no rootfs');
  await fails(['app', 'start', uuid, '--app=nosuch'], /has no app "nosuch"/, 'start of an unknown app');
  await ok(env, ['app', 'start', uuid, '--app=svc']);
  await fails(['app', 'start', uuid, '--app=svc'], /already running/, 'start of a running app');
  await fails(['app', 'rm', uuid, '--app=svc'], /is running; stop it first/, 'rm of a running app');
  t.is((await appStatus(env, uuid, 'svc')).state, 'running', 'the refused rm left the app running');
  await ok(env, ['app', 'stop', uuid, '--app=svc']);
  await ok(env, ['app', 'rm', uuid, '--app=svc']);
  // an app never started has nothing to stop, and goes away as it came
  await ok(env, ['--insecure-options=image', 'app', 'add', uuid, image, '--name=idle']);
  t.regex(String((await ok(env, ['app', 'stop', uuid, '--app=idle'])).stderr), /has not been started/);
  await ok(env, ['app', 'rm', uuid, '--app=idle']);
  await fails(['app', 'add', uuid, image, '--net=host'], /app flags only/, 'a pod flag given to app add');
  await fails(['app', 'sandbox', ...KVM, '--net=none', '--interactive'], /interactive/, 'an interactive sandbox');

  // a kvm pod started by rkt run is no sandbox
  const plain = await runInBackground(t, env, ['--net=none', image]);
  await waitReady(t, env, plain.uuid);
  await fails(['--insecure-options=image', 'app', 'add', plain.uuid, image, '--name=extra'], /is not a mutable pod/, 'adding to a pod that is not a sandbox');
  await ok(env, ['stop', plain.uuid]);
  await plain.child;

  t.is((await stopSandbox(env, sb)).status, 0);
  await fails(['--insecure-options=image', 'app', 'add', uuid, image, '--name=late'], /is exited/, 'adding to a sandbox that has ended');
  await assertNothingLeft(t, env, uuid);
});
