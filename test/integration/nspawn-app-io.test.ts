import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { resizeAndCheck, spawnTerm, type Term } from '../helpers/term.js';
import { assertNoLeftovers, buildStage1, runInBackground, setup, type NspawnEnv } from './nspawn-common.js';

// The apps' own streams on nspawn as a user meets them: apps run (or added
// to a sandbox) with --stdin/--stdout/--stderr in stream or tty mode, and
// `rkt attach` to them: the endpoints it lists, input and its end, output
// (also what was written while nobody was attached), a terminal whose size
// follows the user's, and the one-line refusals. Run as root.

let stage1: { aci: string; dir: string };
test.before(async () => {
  stage1 = await buildStage1();
});
test.after.always(() => fs.rmSync(stage1.dir, { recursive: true, force: true }));

const STREAMS = ['--stdin=stream', '--stdout=stream', '--stderr=stream'];
const TTY = ['--stdin=tty', '--stdout=tty', '--stderr=tty'];

function term(ne: NspawnEnv, args: string[], size = { cols: 90, rows: 25 }): Term {
  return spawnTerm(RKT, [...ne.env.globals(), ...args], { cwd: ne.env.root, size, waitMs: 60_000 });
}

/** rkt attach at a terminal to a shell on a tty: it answers, Ctrl-] detaches. */
async function echoAndDetach(t: ExecutionContext, ne: NspawnEnv, args: string[], word: string): Promise<void> {
  const tty = term(ne, ['attach', ...args]);
  t.teardown(() => tty.kill());
  await tty.waitFor(/Ctrl-\]/);
  tty.write(`[ -t 0 ] && [ -t 1 ] && echo "${word}-$((6 * 7))"\r`);
  await tty.waitFor(new RegExp(`${word}-42`));
  tty.write('\x1d');
  t.is(await tty.exited, 0);
  t.regex(tty.output(), /Detached; the app keeps running/);
}

function attachInBackground(t: ExecutionContext, ne: NspawnEnv, args: string[], input?: string): { proc: ResultPromise; out: () => string } {
  const proc = execa(RKT, [...ne.env.globals(), 'attach', ...args], { reject: false, ...(input === undefined ? { stdin: 'ignore' as const } : { input }) });
  t.teardown(() => void proc.kill('SIGKILL'));
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  return { proc, out: () => out };
}

function podDir(ne: NspawnEnv, uuid: string): string {
  return path.join(ne.env.dir, 'pods/run', uuid);
}

/** What a pod keeps of its apps' streams: the relay's sockets and the apps' ends. */
function ioFiles(ne: NspawnEnv, uuid: string): string[] {
  const dirs = [path.join(podDir(ne, uuid), 'iottymux'), path.join(podDir(ne, uuid), 'stage1/rootfs/rkt/iottymux')];
  return dirs.flatMap((d) => {
    try {
      return fs.readdirSync(d, { recursive: true }).map((f) => path.join(d, String(f)));
    } catch {
      return [];
    }
  });
}

async function refused(t: ExecutionContext, ne: NspawnEnv, args: string[], re: RegExp): Promise<void> {
  const r = await ne.env.run(['attach', ...args]);
  t.is(r.exitCode, 254, `rkt attach ${args.join(' ')}: ${r.stderr}`);
  const lines = String(r.stderr).trim().split('\n');
  t.is(lines.length, 1, `one line: ${r.stderr}`);
  t.regex(lines[0]!, re);
}

async function okRun(ne: NspawnEnv, args: string[]): Promise<void> {
  const r = await ne.env.run(args);
  if (r.exitCode !== 0) throw new Error(`rkt ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
}

/** Once `rkt app status` says the app has exited (its exit is reported a moment after app/stop returns). */
async function appExited(ne: NspawnEnv, uuid: string, app: string): Promise<{ state: string; exit_code?: number }> {
  let st = { state: '' };
  await waitFor(`app ${app} to exit`, async () => {
    st = JSON.parse(String((await ne.env.run(['app', 'status', uuid, `--app=${app}`, '--format=json'])).stdout));
    return st.state === 'exited';
  });
  return st;
}

/** rkt app sandbox in the background, once it is ready. */
async function startSandbox(t: ExecutionContext, ne: NspawnEnv): Promise<{ sandbox: ResultPromise; uuid: string }> {
  fs.rmSync(ne.uuidFile, { force: true });
  const sandbox = execa(RKT, [...ne.env.globals(), 'app', 'sandbox', ...ne.flags, '--net=host'], { reject: false, stdin: 'ignore' });
  t.teardown(() => void sandbox.kill('SIGKILL'));
  await waitFor('the sandbox to be ready', async () => {
    if (sandbox.exitCode !== null) throw new Error(`rkt app sandbox exited early: ${String((await sandbox).stderr)}`);
    return fs.existsSync(ne.uuidFile) && fs.existsSync(path.join(podDir(ne, ne.uuid()), 'ready'));
  }, 60_000);
  return { sandbox, uuid: ne.uuid() };
}

async function stop(ne: NspawnEnv, uuid: string, proc: ResultPromise): Promise<void> {
  await ne.env.run(['stop', '--force', uuid]);
  await proc;
}

test.serial('stream mode: rkt attach lists the endpoints, gets what was written before it came, sends input and its end, and a second attach is refused', async (t) => {
  const ne = await setup(t, stage1.aci);
  const script = 'echo "early bird"; while read line; do echo "out:$line"; echo "err:$line" >&2; done; echo "input ended"; sleep 600';
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--exec=/bin/sh', ...STREAMS, '--', '-c', script]);

  const list = await ne.env.run(['attach', '--mode=list', uuid]);
  t.is(list.exitCode, 0, String(list.stderr));
  t.deepEqual(JSON.parse(String(list.stdout)), { version: 1, targets: [{ name: 'stdin' }, { name: 'stdout' }, { name: 'stderr' }] });

  // stdout only, without input: the output written while nobody was attached comes first
  const watcher = attachInBackground(t, ne, ['--mode=stdout', uuid]);
  await waitFor('the output kept from before the attach', async () => watcher.out().includes('early bird'), 30_000);
  // one attach at a time
  await refused(t, ne, ['--mode=stderr', uuid], /app "busybox" is attached to by another session; one at a time/);
  watcher.proc.kill('SIGINT');
  const watched = await watcher.proc;
  t.is(watched.exitCode, 0, String(watched.stderr));
  t.is(String(watched.stdout), 'early bird');

  // the round trip: input, its end (which ends the app's loop), the output on both streams
  const feed = attachInBackground(t, ne, ['--mode=stdin,stdout,stderr', uuid], 'one\ntwo\n');
  await waitFor('the app to answer the input', async () => feed.out().includes('input ended'), 30_000);
  feed.proc.kill('SIGTERM');
  const fed = await feed.proc;
  t.is(fed.exitCode, 0);
  t.is(String(fed.stdout), 'out:one\nout:two\ninput ended');
  t.is(String(fed.stderr), 'err:one\nerr:two');

  await refused(t, ne, ['--mode=tty', uuid], /offers stdin, stdout, stderr, not tty-in, tty-out/);
  await refused(t, ne, ['--mode=console', uuid], /an nspawn pod has no serial console/);
  t.is((await podStatus(ne.env, uuid)).state, 'running');
  await stop(ne, uuid, proc);
});

test.serial('tty mode: rkt attach gives the terminal, its size follows the user\'s, Ctrl-] detaches, and a second attach is refused', async (t) => {
  const ne = await setup(t, stage1.aci);
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--exec=/bin/sh', ...TTY]);
  const list = await ne.env.run(['attach', '--mode=list', uuid]);
  t.deepEqual(JSON.parse(String(list.stdout)), { version: 1, targets: [{ name: 'tty' }] });

  // the default mode, auto, takes the terminal
  const first = term(ne, ['attach', uuid], { cols: 90, rows: 25 });
  t.teardown(() => first.kill());
  await first.waitFor(/Attached to the terminal of app busybox; press Ctrl-\] to detach/);
  first.write('[ -t 0 ] && [ -t 2 ] && echo "tty-$((6 * 7))"; stty size\r');
  await first.waitFor(/tty-42[\s\S]*25 90/);
  await refused(t, ne, ['--mode=tty', uuid], /app "busybox" is attached to by another session; one at a time/);
  await resizeAndCheck(first, 110, 33);
  first.write('\x1d');
  t.is(await first.exited, 0);
  t.regex(first.output(), /Detached; the app keeps running/);

  // the same shell, for the next one
  await echoAndDetach(t, ne, ['--mode=tty', uuid], 'again');
  await refused(t, ne, ['--mode=stdin,stdout', uuid], /offers tty, not stdin, stdout/);
  t.is((await podStatus(ne.env, uuid)).state, 'running');
  await stop(ne, uuid, proc);
});

test.serial('two apps with different modes in one pod: each lists and attaches to its own, a log app writes to rkt run, a null app has nothing to attach to', async (t) => {
  const ne = await setup(t, stage1.aci);
  const args = [
    ne.image, '--name=streamer', '--exec=/bin/sh', '--stdout=stream', '--', '-c', '[ -e /rkt/iottymux ] && echo "relay-visible" || echo "relay-invisible"; while true; do echo "streamer-out"; sleep 1; done', '---',
    ne.image, '--name=talker', '--exec=/bin/sh', ...TTY, '---',
    ne.image, '--name=logger', '--exec=/bin/sh', '--', '-c', 'echo "logger-says-hi"; sleep 600', '---',
    ne.image, '--name=mute', '--exec=/bin/sh', '--stdout=null', '--stderr=null', '--', '-c', 'echo "mute-says-hi"; sleep 600',
  ];
  const { proc, uuid } = await runInBackground(ne, args);
  const list = async (app: string): Promise<unknown> => JSON.parse(String((await ne.env.run(['attach', '--mode=list', `--app=${app}`, uuid])).stdout));
  t.deepEqual(await list('streamer'), { version: 1, targets: [{ name: 'stdout' }] });
  t.deepEqual(await list('talker'), { version: 1, targets: [{ name: 'tty' }] });
  t.deepEqual(await list('logger'), { version: 1, targets: [] });

  // auto on a stream app: what it has, here its stdout
  const watcher = attachInBackground(t, ne, ['--app=streamer', uuid]);
  await waitFor('the streamer output', async () => watcher.out().includes('streamer-out'), 30_000);
  t.regex(watcher.out(), /^relay-invisible\n/, "an app sees none of the relay's files, its own or other apps'");
  watcher.proc.kill('SIGINT');
  t.is((await watcher.proc).exitCode, 0);
  await refused(t, ne, ['--app=streamer', '--mode=stdin', uuid], /offers stdout, not stdin/);

  await echoAndDetach(t, ne, ['--app=talker', uuid], 'talker');

  await refused(t, ne, ['--app=logger', uuid], /app "logger" has no attachable streams: run it with --stdin, --stdout or --stderr set to tty or stream/);
  await refused(t, ne, ['--app=mute', '--mode=stdout', uuid], /app "mute" has no attachable streams/);
  await refused(t, ne, [uuid], /pod .* has 4 apps \(streamer, talker, logger, mute\); choose one with --app/);
  await stop(ne, uuid, proc);
  const out = String((await proc).stdout);
  t.regex(out, /logger-says-hi/, 'a log app writes to rkt run');
  t.notRegex(out, /mute-says-hi|streamer-out/, 'a null or stream app does not');
});

test.serial('an app added to a sandbox with stream modes: attach, its input ends with the attach\'s, and rkt app rm leaves nothing of its streams', async (t) => {
  const ne = await setup(t, stage1.aci);
  const { sandbox, uuid } = await startSandbox(t, ne);
  const ok = (args: string[]): Promise<void> => okRun(ne, args);
  const catter = await buildAci(ne.env.root, { name: 'example.com/catter', app: { exec: ['/bin/sh', '-c', 'cat; echo "cat saw the end" >&2'], user: '0', group: '0' } });
  await ok(['--insecure-options=image', 'app', 'add', uuid, catter, '--name=cat', ...STREAMS]);
  await ok(['--insecure-options=image', 'app', 'add', uuid, ne.image, '--name=shell', '--exec=/bin/sh', ...TTY]);
  const list = await ne.env.run(['attach', '--mode=list', '--app=cat', uuid]);
  t.deepEqual(JSON.parse(String(list.stdout)), { version: 1, targets: [{ name: 'stdin' }, { name: 'stdout' }, { name: 'stderr' }] });
  // attached before the app starts (as a container runtime connects a container's stdio): the
  // input waits for the app; auto is every stream; the attach ends on its own once the app has
  // exited, with all of its output
  const early = execa(RKT, [...ne.env.globals(), 'attach', '--app=cat', uuid], { reject: false, input: 'through the relay' });
  t.teardown(() => void early.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 1000));
  await ok(['app', 'start', uuid, '--app=cat']);
  await ok(['app', 'start', uuid, '--app=shell']);
  const r = await early;
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(String(r.stdout), 'through the relay');
  t.is(String(r.stderr), 'cat saw the end');
  const exited = (app: string): Promise<{ state: string; exit_code?: number }> => appExited(ne, uuid, app);
  t.is((await exited('cat')).exit_code, 0);

  await echoAndDetach(t, ne, ['--app=shell', uuid], 'added');

  // the terminal is bound in the run entrypoint's mount namespace, where the pod's mounts are
  const runPid = fs.readFileSync(path.join(podDir(ne, uuid), 'nspawn-run.pid'), 'utf8').trim();
  const relayMounts = (): string[] => fs.readFileSync(`/proc/${runPid}/mountinfo`, 'utf8').split('\n').filter((l) => l.includes('/rkt/iottymux/'));
  t.true(ioFiles(ne, uuid).some((f) => f.includes('/shell/')), 'the tty app has its relay');
  t.is(relayMounts().length, 1, 'the tty app has its terminal bound');
  await ok(['app', 'rm', uuid, '--app=cat']);
  await ok(['app', 'stop', uuid, '--app=shell']);
  await exited('shell');
  await ok(['app', 'rm', uuid, '--app=shell']);
  t.deepEqual(ioFiles(ne, uuid), [], 'no socket, FIFO or terminal of a removed app is left');
  t.deepEqual(relayMounts(), [], 'no terminal stays bound');
  await refused(t, ne, ['--app=cat', uuid], /has no app "cat"/);

  await ne.env.run(['stop', uuid]);
  await sandbox;
  assertNoLeftovers(t, ne, uuid);
});

test.serial('a pod that has ended leaves nothing of its relays, and cannot be attached to', async (t) => {
  const ne = await setup(t, stage1.aci);
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--name=streamer', '--exec=/bin/sh', ...STREAMS, '--', '-c', 'sleep 600', '---', ne.image, '--name=talker', '--exec=/bin/sh', ...TTY]);
  t.true(ioFiles(ne, uuid).length > 0, 'the running pod has its relays');
  await stop(ne, uuid, proc);
  t.deepEqual(ioFiles(ne, uuid).filter((f) => fs.existsSync(f)), []);
  t.deepEqual(await processesWith(uuid), [], 'no process of the pod is left');
  assertNoLeftovers(t, ne, uuid);
  await refused(t, ne, ['--app=streamer', uuid], /is exited; only running pods can be attached to/);
});

test.serial('a symlink the running container puts where an added app\'s streams go does not lead the relay out of the container', async (t) => {
  const ne = await setup(t, stage1.aci);
  const { sandbox, uuid } = await startSandbox(t, ne);
  const victim = fs.mkdtempSync(path.join(ne.env.root, 'victim-'));
  // the container root is the pod's to change: its /rkt/iottymux/<app> points at a host directory
  fs.symlinkSync(victim, path.join(podDir(ne, uuid), 'stage1/rootfs/rkt/iottymux/evil'));
  await okRun(ne, ['--insecure-options=image', 'app', 'add', uuid, ne.image, '--name=evil', '--exec=/bin/sh', ...STREAMS, '--', '-c', 'echo "still-relayed"; sleep 600']);
  // the link is followed inside the container root only: the relay's ends are made there, out of
  // the app's reach (systemd fails the app, 208/STDIN; a pod that breaks its own root breaks its app)
  await ne.env.run(['app', 'start', uuid, '--app=evil']);
  t.deepEqual(fs.readdirSync(victim), [], 'nothing was made in the host directory');

  // and the pod's other apps are relayed as ever
  await okRun(ne, ['--insecure-options=image', 'app', 'add', uuid, ne.image, '--name=fine', '--exec=/bin/sh', ...STREAMS, '--', '-c', 'echo "still-relayed"; sleep 600']);
  await okRun(ne, ['app', 'start', uuid, '--app=fine']);
  const watcher = attachInBackground(t, ne, ['--app=fine', '--mode=stdout', uuid]);
  await waitFor('the app output', async () => watcher.out().includes('still-relayed'), 30_000);
  watcher.proc.kill('SIGINT');
  t.is((await watcher.proc).exitCode, 0);
  await ne.env.run(['stop', uuid]);
  await sandbox;
  t.true(fs.statSync(victim).isDirectory(), 'the host directory is still there once the pod has ended');
  t.deepEqual(fs.readdirSync(victim), []);
});
