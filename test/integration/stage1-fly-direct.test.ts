import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { FileLock } from '../../src/util/lock.js';
import { PodPaths } from '../../src/stage1/contract.js';
import { REPO } from '../helpers/rkt.js';
import { BUSYBOX } from '../helpers/aci.js';

// The fly stage1 driven exactly as stage0 drives it, without stage0: a pod
// directory laid out by hand per src/stage1/contract.ts, fd 3 the locked pod
// directory, and the run entrypoint under setpriv + unshare --mount.

const APPLETS = ['sh', 'id', 'env', 'pwd', 'echo', 'cat', 'sleep', 'touch', 'stat', 'readlink', 'ls', 'head', 'kill', 'mkdir', 'true'];
const IMAGE_ID = 'sha512-' + '0'.repeat(64);

let aci = '';
const buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-aci-'));

test.before(async () => {
  aci = path.join(buildDir, 'stage1-fly.aci');
  const r = await execa('node', [path.join(REPO, 'dist/stage1-fly/build.js'), aci]);
  if (String(r.stdout).trim() !== aci) throw new Error(`build printed ${r.stdout}`);
});
test.after.always(() => fs.rmSync(buildDir, { recursive: true, force: true }));

interface AppDef {
  name: string;
  /** The image's app section. */
  app: Record<string, unknown>;
  /** The pod manifest's fields for this app (app override, mounts, readOnlyRootFS). */
  pod?: Record<string, unknown>;
}

interface Pod {
  root: string;
  dir: string;
  paths: PodPaths;
  uuid: string;
  trees: Map<string, string>;
  /** Kill the run process if it is still alive and wait for it. */
  kill?: () => Promise<void>;
}

function makeTree(dir: string): string {
  const tree = path.join(dir, 'tree');
  for (const d of ['bin', 'etc', 'work', 'home/user']) fs.mkdirSync(path.join(tree, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(tree, 'bin/busybox'));
  fs.chmodSync(path.join(tree, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(tree, 'bin', a));
  fs.writeFileSync(path.join(tree, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n');
  fs.writeFileSync(path.join(tree, 'etc/group'), 'root:x:0:\nuser:x:1000:\nstaff:x:50:user\n');
  return tree;
}

function hostMountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(dir));
}

/** Lay out a pod directory as stage0 would, cleaned up whatever happens. */
function makePod(t: ExecutionContext, apps: AppDef[], volumes: Record<string, unknown>[] = []): Pod {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-pod-'));
  const dir = path.join(root, 'pod');
  const pod: Pod = { root, dir, paths: new PodPaths(dir), uuid: crypto.randomUUID(), trees: new Map() };
  t.teardown(async () => {
    await pod.kill?.();
    for (const m of hostMountsUnder(root).map((l) => l.split(' ')[4]!).reverse()) await execa('umount', ['-l', m], { reject: false });
    fs.rmSync(root, { recursive: true, force: true });
  });
  fs.mkdirSync(path.join(dir, 'stage1'), { recursive: true });
  execFileSync('tar', ['-xf', aci, '-C', path.join(dir, 'stage1')]);
  for (const a of apps) {
    // each app its own image tree, so tests can check it is never written
    const tree = makeTree(path.join(root, 'image-' + a.name));
    pod.trees.set(a.name, tree);
    fs.mkdirSync(pod.paths.appInfo(a.name), { recursive: true });
    fs.writeFileSync(pod.paths.appImageManifest(a.name), JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: `example.com/${a.name}`, app: a.app }));
    fs.writeFileSync(pod.paths.appTreeStoreId(a.name), 'deps-' + a.name);
    fs.writeFileSync(pod.paths.appTreeRootfs(a.name), tree);
    fs.mkdirSync(pod.paths.appRootfs(a.name), { recursive: true });
  }
  const manifest = {
    acKind: 'PodManifest',
    acVersion: '0.8.11',
    apps: apps.map((a) => ({ name: a.name, image: { name: `example.com/${a.name}`, id: IMAGE_ID }, ...a.pod })),
    volumes,
  };
  fs.writeFileSync(pod.paths.manifest, JSON.stringify(manifest));
  fs.writeFileSync(pod.paths.runOptions, JSON.stringify({ uuid: pod.uuid, net: ['host'], debug: false, interactive: false, dataDir: root, localConfig: '/etc/rkt', insecureOptions: [] }));
  return pod;
}

/** Start the run entrypoint exactly as stage0 does. */
function startRun(pod: Pod, flags: string[] = ['--net=host'], input?: string) {
  const lock = FileLock.acquire(pod.dir, 'exclusive');
  const argv = ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'slave', '--', path.join(pod.paths.stage1Rootfs, 'run'), ...flags, pod.uuid];
  // execa's types know only literal descriptors 3..9; any open descriptor works.
  const lockFd = lock.fd as 3;
  const proc = execa('setpriv', argv, { cwd: pod.dir, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe', lockFd], env: { RKT_LOCK_FD: '3' }, reject: false });
  if (input !== undefined) proc.stdin?.end(input);
  // From here on only the run process holds the pod lock, as after stage0's exec.
  lock.release();
  pod.kill = async () => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
    await proc.catch(() => undefined);
  };
  return proc;
}

async function waitFor(what: string, fn: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function pgrep(marker: string): Promise<string[]> {
  const r = await execa('pgrep', ['-f', marker], { reject: false });
  return String(r.stdout).split('\n').filter((l) => l.trim() !== '');
}

function status(pod: Pod, app: string): string {
  return fs.readFileSync(pod.paths.appStatus(app), 'utf8');
}

function entrypoint(pod: Pod, name: string, args: string[]): Promise<{ exitCode?: number; stdout: string; stderr: string }> {
  return execa(path.join(pod.paths.stage1Rootfs, name), args, { cwd: pod.dir, reject: false, stdin: 'ignore' });
}

function noHostMounts(t: ExecutionContext, pod: Pod): void {
  t.deepEqual(hostMountsUnder(pod.root), [], 'nothing of the pod stays mounted on the host');
}

const USER_APP = { user: 'user', group: 'staff', supplementaryGIDs: [60, 70], workingDirectory: '/work', environment: [{ name: 'FOO', value: 'bar' }] };

test('one app: its output, identity, environment, working directory and exit status', async (t) => {
  const script = 'id; pwd; env | sort; readlink /proc/self/fd/3; test -e /dev/null && echo has-dev; exit 3';
  const pod = makePod(t, [{ name: 'hello', app: { ...USER_APP, exec: ['/bin/sh', '-c', script] } }]);
  const proc = startRun(pod);
  const r = await proc;
  t.is(r.exitCode, 3, String(r.stderr));
  const out = String(r.stdout).split('\n');
  t.is(out[0], 'uid=1000(user) gid=50(staff) groups=60,70');
  t.is(out[1], '/work');
  t.true(out.includes('FOO=bar'));
  t.true(out.includes('AC_APP_NAME=hello'));
  t.true(out.includes('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'));
  t.true(out.includes('HOME=/home/user'));
  t.false(out.some((l) => l.startsWith('RKT_LOCK_FD=')), 'stage1 variables do not leak into the app');
  t.true(out.includes('/dev/null'), 'fd 3 of the app is /dev/null, not the pod lock');
  t.true(out.includes('has-dev'));
  t.is(status(pod, 'hello'), '3');
  t.true(fs.existsSync(pod.paths.ready));
  t.is(fs.readFileSync(pod.paths.pid, 'utf8'), String(proc.pid), 'the pid file holds the run process, which stage0 started');
  t.is(String(r.stderr), '');
  t.false(FileLock.isHeld(pod.dir), 'the pod lock dies with the run process');
  t.false(fs.existsSync(path.join(pod.trees.get('hello')!, 'etc/hosts')), 'the image tree is never written');
  noHostMounts(t, pod);
});

test('volumes: read-only and read-write host volumes, an empty volume, symlinks kept inside, read-only rootfs', async (t) => {
  const hostRo = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-ro-'));
  const hostRw = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-rw-'));
  const decoy = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-decoy-'));
  t.teardown(() => [hostRo, hostRw, decoy].forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  fs.writeFileSync(path.join(hostRo, 'given'), 'from-host\n');
  const script = [
    'cat /ro/given',
    'touch /ro/new 2>/dev/null && echo ro-writable || echo ro-refused',
    'echo written > /rw/file && echo rw-ok',
    'stat -c %a /scratch',
    'ls /evil',
    'touch /rootfile 2>/dev/null && echo root-writable || echo root-refused',
    'touch /tmp/t && echo tmp-ok',
  ].join('; ');
  const pod = makePod(
    t,
    [
      {
        name: 'vols',
        app: { exec: ['/bin/sh', '-c', script], user: '0', group: '0', mountPoints: [{ name: 'ro', path: '/ro', readOnly: true }] },
        pod: {
          readOnlyRootFS: true,
          mounts: [
            { volume: 'ro', path: '/ro' },
            { volume: 'rw', path: '/rw' },
            { volume: 'scratch', path: '/scratch' },
            { volume: 'rw', path: '/evil/inside' },
          ],
        },
      },
    ],
    [
      { name: 'ro', kind: 'host', source: hostRo },
      { name: 'rw', kind: 'host', source: hostRw, readOnly: false },
      { name: 'scratch', kind: 'empty', mode: '0750' },
    ],
  );
  // a symlink in the image pointing at a host directory must not carry a mount there
  fs.symlinkSync(decoy, path.join(pod.trees.get('vols')!, 'evil'));
  const r = await startRun(pod);
  t.is(r.exitCode, 0, String(r.stderr));
  t.deepEqual(String(r.stdout).split('\n'), ['from-host', 'ro-refused', 'rw-ok', '750', 'inside', 'root-refused', 'tmp-ok']);
  t.is(fs.readFileSync(path.join(hostRw, 'file'), 'utf8'), 'written\n');
  t.false(fs.existsSync(path.join(hostRo, 'new')));
  t.deepEqual(fs.readdirSync(decoy), [], 'nothing was created or mounted on the host through the symlink');
  t.is(fs.statSync(pod.paths.emptyVolume('scratch')).mode & 0o7777, 0o750);
  t.false(fs.existsSync(path.join(pod.trees.get('vols')!, 'rw')), 'mount targets are made in the overlay, not the image');
  noHostMounts(t, pod);
});

test('two apps: both run, each status is written, the pod exits with the failed one', async (t) => {
  const pod = makePod(t, [
    { name: 'first', app: { exec: ['/bin/sh', '-c', 'echo from-first'], user: '0', group: '0' } },
    { name: 'second', app: { exec: ['/bin/sh', '-c', 'sleep 0.2; echo from-second; exit 5'], user: 'user', group: 'user' } },
  ]);
  // every flag stage0 may pass; "default" is what stage0 says when the user chose no network
  const r = await startRun(pod, ['--net=default', '--local-config=/etc/rkt', '--hostname=ignored', '--mds-token=t']);
  t.is(r.exitCode, 5, String(r.stderr));
  t.deepEqual(String(r.stdout).split('\n').sort(), ['from-first', 'from-second']);
  t.is(status(pod, 'first'), '0');
  t.is(status(pod, 'second'), '5');
  noHostMounts(t, pod);
});

test('SIGTERM to the run process is forwarded to every app', async (t) => {
  // b takes longer to exit, so a is the first app to fail
  const trap = (code: number, delay: number) => ['/bin/sh', '-c', `trap "sleep ${delay}; echo term-${code}; exit ${code}" TERM; while :; do sleep 0.1; done`];
  const pod = makePod(t, [
    { name: 'a', app: { exec: trap(7, 0), user: '0', group: '0' } },
    { name: 'b', app: { exec: trap(9, 0.5), user: 'user', group: 'user' } },
  ]);
  const proc = startRun(pod);
  await waitFor('ready', () => fs.existsSync(pod.paths.ready));
  await new Promise((r) => setTimeout(r, 300));
  proc.kill('SIGTERM');
  const r = await proc;
  t.deepEqual(String(r.stdout).split('\n').sort(), ['term-7', 'term-9']);
  t.is(status(pod, 'a'), '7');
  t.is(status(pod, 'b'), '9');
  t.is(r.exitCode, 7, 'several apps: the status of the first that failed');
  noHostMounts(t, pod);
});

test('SIGKILL of the run process kills every app, root or not, and what they started', async (t) => {
  const marker = `${Math.floor(Math.random() * 1e6) + 1000000}`;
  const pod = makePod(t, [
    { name: 'rootapp', app: { exec: ['/bin/sleep', `${marker}1`], user: '0', group: '0' } },
    { name: 'userapp', app: { exec: ['/bin/sh', '-c', `sleep ${marker}2 & sleep ${marker}3`], user: 'user', group: 'user' } },
  ]);
  const proc = startRun(pod);
  await waitFor('apps', async () => (await pgrep(`(^|/)sleep ${marker}`)).length === 3);
  proc.kill('SIGKILL');
  await proc;
  await waitFor('no orphans', async () => (await pgrep(`sleep ${marker}`)).length === 0, 5000);
  t.deepEqual(await pgrep(`sleep ${marker}`), []);
  t.false(FileLock.isHeld(pod.dir), 'no app kept the pod lock: the pod reads as exited');
  noHostMounts(t, pod);
});

test('enter runs a command in a running app: its rootfs, mounts, user, environment and working dir', async (t) => {
  const pod = makePod(t, [{ name: 'svc', app: { ...USER_APP, exec: ['/bin/sh', '-c', 'echo inside > /tmp/mark; exec sleep 100000'] } }]);
  const proc = startRun(pod);
  await waitFor('ready', () => fs.existsSync(pod.paths.ready) && fs.existsSync(pod.paths.pid));
  await waitFor('app', async () => (await entrypoint(pod, 'enter', [`--pid=${proc.pid}`, '--appname=svc', '--', '/bin/cat', '/tmp/mark'])).exitCode === 0);
  const pid = fs.readFileSync(pod.paths.pid, 'utf8');
  t.true(FileLock.isHeld(pod.dir), 'a running pod holds its lock');
  const r = await entrypoint(pod, 'enter', [`--pid=${pid}`, '--appname=svc', '--', '/bin/sh', '-c', 'id -u; id -G; pwd; cat /tmp/mark; echo $FOO; exit 4']);
  t.is(r.exitCode, 4, String(r.stderr));
  t.deepEqual(String(r.stdout).split('\n'), ['1000', '50 60 70', '/work', 'inside', 'bar']);
  const wrong = await entrypoint(pod, 'enter', [`--pid=${process.pid}`, '--', '/bin/true']);
  t.not(wrong.exitCode, 0);
  t.regex(wrong.stderr, /^stage1: .*not running$/);
  t.is((await entrypoint(pod, 'stop', ['--force', pod.uuid])).exitCode, 0);
  await proc;
  noHostMounts(t, pod);
});

test('stop sends SIGTERM; stop --force kills an app that ignores it; stopping a gone pod succeeds', async (t) => {
  const marker = `${Math.floor(Math.random() * 1e6) + 2000000}`;
  const pod = makePod(t, [{ name: 'stubborn', app: { exec: ['/bin/sh', '-c', `trap "echo ignoring" TERM; while :; do sleep ${marker}; done`], user: '0', group: '0' } }]);
  const proc = startRun(pod);
  await waitFor('app', async () => (await pgrep(`(^|/)sleep ${marker}`)).length === 1);
  t.is((await entrypoint(pod, 'stop', [pod.uuid])).exitCode, 0);
  // the group's sleep died of the SIGTERM, the shell ignored it and loops on
  await waitFor('restart', async () => (await pgrep(`(^|/)sleep ${marker}`)).length === 1);
  t.is(proc.exitCode, null);
  t.is((await entrypoint(pod, 'stop', ['--force', pod.uuid])).exitCode, 0);
  const r = await proc;
  t.is(r.signal, 'SIGKILL');
  t.true(String(r.stdout).includes('ignoring'));
  await waitFor('no orphans', async () => (await pgrep(`sleep ${marker}`)).length === 0, 5000);
  t.is((await entrypoint(pod, 'stop', [pod.uuid])).exitCode, 0);
  t.is((await entrypoint(pod, 'stop', ['--force', pod.uuid])).exitCode, 0);

  const calm = makePod(t, [{ name: 'calm', app: { exec: ['/bin/sleep', '100000'], user: '0', group: '0' } }]);
  const p2 = startRun(calm);
  await waitFor('ready', () => fs.existsSync(calm.paths.ready));
  t.is((await entrypoint(calm, 'stop', [calm.uuid])).exitCode, 0);
  const r2 = await p2;
  t.is(r2.exitCode, 143);
  t.is(status(calm, 'calm'), '143');
  noHostMounts(t, pod);
  noHostMounts(t, calm);
});

test('gc leaves nothing mounted under the pod, even mounts leaked into the host namespace', async (t) => {
  const pod = makePod(t, [{ name: 'a', app: { exec: ['/bin/true'], user: '0', group: '0' } }]);
  t.is((await startRun(pod)).exitCode, 0);
  const gc = await entrypoint(pod, 'gc', [pod.uuid]);
  t.is(gc.exitCode, 0, gc.stderr);
  noHostMounts(t, pod);
  // a mount made on the host (not in the pod namespace): gc must remove it, nested ones first
  const target = pod.paths.appRootfs('a');
  await execa('mount', ['-t', 'tmpfs', 'tmpfs', target]);
  fs.mkdirSync(path.join(target, 'sub'));
  await execa('mount', ['-t', 'tmpfs', 'tmpfs', path.join(target, 'sub')]);
  t.is(hostMountsUnder(pod.root).length, 2);
  const gc2 = await entrypoint(pod, 'gc', ['--debug', pod.uuid]);
  t.is(gc2.exitCode, 0, gc2.stderr);
  noHostMounts(t, pod);
});

test('--interactive passes stdin to the only app', async (t) => {
  const pod = makePod(t, [{ name: 'cat', app: { exec: ['/bin/head', '-n', '1'], user: '0', group: '0' } }]);
  const r = await startRun(pod, ['--net=host', '--interactive'], 'typed line\nmore\n');
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(String(r.stdout), 'typed line');
});

test('networks other than the host are refused with one line, before any app starts', async (t) => {
  const pod = makePod(t, [{ name: 'a', app: { exec: ['/bin/sh', '-c', 'echo started'], user: '0', group: '0' } }]);
  const r = await startRun(pod, ['--net=mynet']);
  t.not(r.exitCode, 0);
  t.is(String(r.stdout), '');
  t.regex(String(r.stderr), /^stage1: the fly stage1 .* supports only --net=host, not --net=mynet\n?$/);
  t.false(fs.existsSync(pod.paths.ready));
});

test('an unknown user fails the pod with a one-line error naming it', async (t) => {
  const pod = makePod(t, [{ name: 'a', app: { exec: ['/bin/true'], user: 'ghost', group: '0' } }]);
  const r = await startRun(pod);
  t.is(r.exitCode, 254);
  t.is(String(r.stderr).trim(), 'stage1: user "ghost" not found in image of app "a"');
});

test('the stage1 image names its entrypoints and is reproducible', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fly-aci2-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const again = path.join(dir, 'again.aci');
  await execa('node', [path.join(REPO, 'dist/stage1-fly/build.js'), again]);
  t.true(fs.readFileSync(again).equals(fs.readFileSync(aci)), 'same sources, same bytes, same image ID');
  const manifest = JSON.parse((await execa('tar', ['-xOf', aci, 'manifest'])).stdout) as { name: string; labels: unknown[]; annotations: { name: string; value: string }[] };
  t.is(manifest.name, 'coreos.com/rkt/stage1-fly');
  const ann = Object.fromEntries(manifest.annotations.map((a) => [a.name, a.value]));
  t.like(ann, {
    'coreos.com/rkt/stage1/run': '/run',
    'coreos.com/rkt/stage1/enter': '/enter',
    'coreos.com/rkt/stage1/stop': '/stop',
    'coreos.com/rkt/stage1/gc': '/gc',
    'coreos.com/rkt/stage1/interface-version': '5',
  });
  const listing = (await execa('tar', ['-tvf', aci])).stdout.split('\n');
  t.true(listing.every((l) => l.includes(' 0/0 ')), 'every entry is owned by root');
});
