import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { RKT } from '../helpers/rkt.js';
import { listPods, podStatus, waitFor } from '../helpers/pods.js';
import { assertNoLeftovers, buildStage1, setup } from './nspawn-common.js';

// rkt run with the nspawn stage1, through the real CLI: output, statuses,
// the app's view of itself, volumes, several apps, stdin, refusals.

let aci = '';
let buildDir = '';
test.before(async () => {
  ({ aci, dir: buildDir } = await buildStage1());
});
test.after.always(() => fs.rmSync(buildDir, { recursive: true, force: true }));

test('run prints app output on stdout and stderr, exits with its status, which status reports', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/sh', '--', '-c', 'echo out; echo err >&2; exit 3']);
  t.is(r.exitCode, 3, String(r.stderr));
  t.is(String(r.stdout), 'out', 'stdout has the app output and nothing else');
  t.regex(String(r.stderr), /^err$/m);
  t.notRegex(String(r.stderr), /systemd|Spawning|Welcome/, 'no boot messages without --debug');
  const uuid = ne.uuid();
  const st = await ne.env.run(['status', uuid]);
  t.regex(String(st.stdout), /^state=exited$/m);
  t.regex(String(st.stdout), /^app-busybox=3$/m);
  t.is((await podStatus(ne.env, uuid)).apps[0]!.exit_code, 3);
  assertNoLeftovers(t, ne, uuid);
});

test('--debug shows systemd booting the pod on stderr, never on stdout', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', '--debug', ...ne.flags, ne.image, '--exec=/bin/echo', '--', 'hello']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(String(r.stdout), 'hello');
  t.regex(String(r.stderr), /systemd 252/);
});

test('the app sees its user, groups, environment, working directory and hostname', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run([
    'run',
    ...ne.flags,
    '--hostname=podhost',
    '--set-env=FOO=bar',
    ne.image,
    '--user=1000',
    '--group=50',
    '--supplementary-gids=65534',
    '--working-dir=/etc',
    '--environment=BAZ=100% $HOME',
    '--exec=/bin/sh',
    '--',
    '-c',
    'echo "$(id -u) $(id -g) $(id -G | tr " " ,) $(pwd) $(hostname) $AC_APP_NAME $FOO"; echo "$BAZ"; echo "$(env | grep -c -E "^(INVOCATION_ID|MANAGERPID|NOTIFY_SOCKET)=")"',
  ]);
  t.is(r.exitCode, 0, String(r.stderr));
  const [first, baz, leaked] = String(r.stdout).trim().split('\n');
  t.is(first, '1000 50 50,65534 /etc podhost busybox bar');
  t.is(baz, '100% $HOME', 'values reach the app literally');
  t.is(leaked, '0', "systemd's own variables are not passed on");
});

test('the default hostname is rkt-UUID', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/hostname']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(String(r.stdout).trim(), `rkt-${ne.uuid()}`);
});

test('volumes are mounted read-write or read-only; a read-only rootfs cannot be written', async (t) => {
  const ne = await setup(t, aci);
  const host = ne.env.file('hostdir');
  fs.mkdirSync(host);
  fs.writeFileSync(path.join(host, 'in'), 'from host\n');
  const rw = await ne.env.run(['run', ...ne.flags, `--volume=data,kind=host,source=${host}`, ne.image, '--mount=volume=data,target=/data', '--exec=/bin/sh', '--', '-c', 'cat /data/in && echo written > /data/out']);
  t.is(rw.exitCode, 0, String(rw.stderr));
  t.regex(String(rw.stdout), /from host/);
  t.is(fs.readFileSync(path.join(host, 'out'), 'utf8'), 'written\n');
  const ro = await ne.env.run([
    'run',
    ...ne.flags,
    `--volume=data,kind=host,source=${host},readOnly=true`,
    '--volume=scratch,kind=empty',
    ne.image,
    '--readonly-rootfs=true',
    '--mount=volume=data,target=/data',
    '--mount=volume=scratch,target=/scratch',
    '--exec=/bin/sh',
    '--',
    '-c',
    'touch /scratch/ok && echo scratch-ok; echo nope > /data/out2 || echo data-ro; touch /newfile || echo rootfs-ro',
  ]);
  t.is(ro.exitCode, 0, String(ro.stderr));
  t.deepEqual(String(ro.stdout).trim().split('\n'), ['scratch-ok', 'data-ro', 'rootfs-ro']);
  t.false(fs.existsSync(path.join(host, 'out2')));
  assertNoLeftovers(t, ne, ne.uuid());
});

test('a multi-app pod runs every app and reports each exit status; run exits with the first failure', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--name=first', '--exec=/bin/sh', '--', '-c', 'echo one', '---', ne.image, '--name=second', '--exec=/bin/sh', '--', '-c', 'sleep 0.3; echo two; exit 4']);
  t.is(r.exitCode, 4, String(r.stderr));
  t.regex(String(r.stdout), /one/);
  t.regex(String(r.stdout), /two/);
  const st = await podStatus(ne.env, ne.uuid());
  t.deepEqual(Object.fromEntries(st.apps.map((a) => [a.name, a.exit_code])), { first: 0, second: 4 });
});

test('--interactive hands the app rkt run stdin', async (t) => {
  const ne = await setup(t, aci);
  const r = await execa(RKT, [...ne.env.globals(), 'run', ...ne.flags, '--interactive', ne.image, '--exec=/bin/sh', '--', '-c', 'read line; echo "got $line"; cat'], {
    reject: false,
    input: 'hello\nworld\n',
    timeout: 60_000,
  });
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(String(r.stdout), 'got hello\nworld');
});

// A pod is root in its own rootfs: it can replace the FIFO the host feeds
// its stdin through with a symlink to a host file. The host kept reopening
// that path by name; now it only ever reaches the FIFO it made.
test('--interactive: a symlink the pod plants at its stdin FIFO does not lead the host to the target', async (t) => {
  const ne = await setup(t, aci);
  // A host FIFO with a blocked open for reading: that open returns only if someone opens the FIFO for writing.
  const trap = ne.env.file('trap.fifo');
  await execa('mkfifo', [trap]);
  let followed = false;
  const trapOpen = fs.promises.open(trap, 'r').then((h) => {
    followed = true;
    return h.close();
  });
  t.teardown(async () => {
    const fd = fs.openSync(trap, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    await trapOpen;
    fs.closeSync(fd);
  });

  const run = execa(RKT, [...ne.env.globals(), 'run', ...ne.flags, '--interactive', ne.image, '--exec=/bin/sh', '--', '-c', 'cat; echo fed; sleep 3'], {
    reject: false,
    input: 'hello\n',
    timeout: 60_000,
  });
  let out = '';
  run.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor('the app to read its stdin to the end', async () => out.includes('fed') || run.exitCode !== null);
  t.is(out, 'hello\nfed\n');
  const uuid = ne.uuid();
  const pid = fs.readFileSync(path.join(ne.env.dir, 'pods/run', uuid, 'pid'), 'utf8').trim();
  // planted from inside the container: its namespaces, its root, its busybox
  const plant = await execa('nsenter', [`--target=${pid}`, '--all', '--root', '--', '/rkt/bin/busybox', 'ln', '-sfn', trap, '/rkt/io/stdin'], { reject: false });
  t.is(plant.exitCode, 0, String(plant.stderr));
  t.true(fs.lstatSync(path.join(ne.env.dir, 'pods/run', uuid, 'stage1/rootfs/rkt/io/stdin')).isSymbolicLink());
  await new Promise((r) => setTimeout(r, 1000)); // twenty of the feeder's 50 ms pulses
  t.false(followed, 'the host opened the target of the symlink the pod planted');
  // Its unit's exit hook no longer finds its stdin, so the pod cannot end by itself: a harm to itself only.
  const stop = await ne.env.run(['stop', '--force', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  const r = await run;
  t.false(r.timedOut, 'rkt run ended once the pod was stopped');
});

test('an unknown pod network is refused with a clear error and no pod left running', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, '--net=no-such-net', ne.image]);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /no-such-net/);
  // refused before the pod exists (issue 15 item 9): no UUID, no pod
  t.false(fs.existsSync(ne.uuidFile));
  t.deepEqual(await listPods(ne.env), []);
  const host = await ne.env.run(['run', ...ne.flags, '--net=host', ne.image, '--exec=/bin/true']);
  t.is(host.exitCode, 0, String(host.stderr));
});

test('a missing executable is a clear error and no pod is left running', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/nosuchprogram']);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /\/bin\/nosuchprogram does not exist in image example.com\/busybox/);
  t.false((await listPods(ne.env)).some((p) => p.state === 'running'));
});
