import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { REPO, RktEnv } from '../helpers/rkt.js';
import { BUSYBOX } from '../helpers/aci.js';
import { processesWith, reapPods, waitFor } from '../helpers/pods.js';
import { mountsMentioning } from './nspawn-common.js';

// bin/rkt-oci-FLAVOR driven as containerd's runc v2 shim drives runc:
// global --root/--log/--log-format json, create --bundle --pid-file
// [--console-socket], start, state, kill, delete, exec --process --detach
// --pid-file, with a subreaper in the shim's place that reaps the pid-file
// process and reports its status. Bundles hold a busybox rootfs; the network
// namespace is the test's own. Shared by the nspawn and kvm test files.

const SUBREAPER = path.join(REPO, 'test/helpers/subreaper.py');
const CONSOLE = path.join(REPO, 'test/helpers/console-socket.py');

export async function needPython(): Promise<void> {
  const py = await execa('python3', ['-c', 'import ctypes, os, socket; os.waitstatus_to_exitcode; socket.recv_fds'], { reject: false });
  if (py.exitCode !== 0) throw new Error('these tests need python3 (3.9 or later) as the stand-in for the containerd shim: apt-get install python3');
}

let OCI = '';
let SANDBOX_ARGS: () => string[] = () => [];

export interface World {
  env: RktEnv;
  root: string;
  log: string;
  netns: string;
  envVars: Record<string, string>;
  oci(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

export async function world(t: ExecutionContext): Promise<World> {
  // a kvm pod boots a VM, under tcg here: minutes, not seconds
  t.timeout(30 * 60_000);
  const env = new RktEnv('rkt-oci-');
  t.teardown(() => env.cleanup());
  const nsName = `rkt-oci-test-${process.pid}-${Math.random().toString(36).slice(2, 7)}`;
  t.teardown(async () => void (await execa('ip', ['netns', 'delete', nsName], { reject: false })));
  await execa('ip', ['netns', 'add', nsName]);
  await execa('ip', ['-n', nsName, 'link', 'set', 'lo', 'up']);
  // an interface with an address, as CNI would leave one (both ends of the pair inside: nothing on the host)
  await execa('ip', ['-n', nsName, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
  await execa('ip', ['-n', nsName, 'addr', 'add', '10.99.0.2/24', 'dev', 'eth0']);
  await execa('ip', ['-n', nsName, 'link', 'set', 'eth0', 'up']);
  await execa('ip', ['-n', nsName, 'link', 'set', 'peer0', 'up']);
  const config = env.file('oci-runtime.json');
  fs.writeFileSync(config, JSON.stringify({ rktArgs: [...env.globals(), '--insecure-options=image'], sandboxArgs: SANDBOX_ARGS() }));
  const root = env.file('oci-root');
  const w: World = {
    env,
    root,
    log: env.file('oci-log.json'),
    netns: `/run/netns/${nsName}`,
    envVars: { RKT_OCI_CONFIG: config },
    async oci(args) {
      const r = await execa(OCI, ['--root', root, '--log', w.log, '--log-format', 'json', ...args], { reject: false, env: w.envVars, stdin: 'ignore', timeout: 900_000 });
      return { code: r.exitCode ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr) };
    },
  };
  t.teardown(async () => {
    for (const id of fs.existsSync(root) ? fs.readdirSync(root) : []) await w.oci(['delete', '--force', id]);
    await reapPods(env);
    env.cleanup();
  });
  return w;
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

/** Resident memory of a process and its descendants (which all live while the app runs). */
function treeRssKiB(pid: number): number {
  const children = (p: number): number[] => {
    try {
      return fs.readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...children(all[i]!));
  return all.reduce((sum, p) => sum + (fs.existsSync(`/proc/${p}`) ? rssKiB(p) : 0), 0);
}

/** A bundle: config.json and a busybox rootfs, built by hand as an image unpacker would. */
export function bundle(w: World, name: string, config: (rootfs: string) => Record<string, unknown>): string {
  const dir = w.env.file(`bundle-${name}`);
  const rootfs = path.join(dir, 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
  fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const a of ['sh', 'echo', 'cat', 'sleep', 'id', 'hostname', 'ip', 'env', 'pwd']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  fs.mkdirSync(path.join(rootfs, 'etc'));
  fs.writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config(rootfs)));
  return dir;
}

/** What the runc shim's default spec (containerd 1.6) holds, around the process and annotations a test gives. */
export function spec(w: World, proc: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'];
  return {
    ociVersion: '1.0.2-dev',
    process: {
      user: { uid: 0, gid: 0 },
      args: ['/bin/sh'],
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
      ...proc,
    },
    root: { path: 'rootfs' },
    hostname: 'oci-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }], memory: { limit: 64 * 1024 * 1024 }, cpu: { quota: 50000, period: 100000, shares: 512 } },
      cgroupsPath: '/default/test',
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: w.netns }],
      maskedPaths: ['/proc/kcore'],
      readonlyPaths: ['/proc/sys'],
    },
    ...extra,
  };
}

/** create under a subreaper, as the shim runs it; resolves once create has returned, with the subreaper still reaping. */
export async function createLikeShim(w: World, id: string, dir: string, out: string, input = '-', extra: string[] = []): Promise<{ reaper: ResultPromise; pid: number }> {
  const pidFile = path.join(dir, 'init.pid');
  const reaper = execa('python3', [SUBREAPER, pidFile, out, input, OCI, '--root', w.root, '--log', w.log, '--log-format', 'json', 'create', '--bundle', dir, '--pid-file', pidFile, ...extra, id], { env: w.envVars, stdin: 'ignore', reject: false });
  let text = '';
  reaper.stdout!.on('data', (b: Buffer) => (text += b.toString()));
  await waitFor(`create of ${id}`, async () => /create \d+/.test(text) || reaper.exitCode !== null, 900_000);
  const m = /create (\d+)/.exec(text);
  if (m?.[1] !== '0') throw new Error(`create failed (${m?.[1]}): ${fs.existsSync(w.log) ? fs.readFileSync(w.log, 'utf8') : ''}`);
  await waitFor('the pid line', async () => /pid \d+/.test(text), 10_000);
  return { reaper, pid: Number(/pid (\d+)/.exec(text)![1]) };
}

async function stateOf(w: World, id: string): Promise<{ status: string; pid: number; id: string; bundle: string; annotations?: Record<string, string> }> {
  const r = await w.oci(['state', id]);
  if (r.code !== 0) throw new Error(`state ${id}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export async function nothingLeft(t: ExecutionContext, w: World, uuidText: string, marker: string): Promise<void> {
  t.deepEqual(mountsMentioning(marker), [], 'no mount of the bundle is left');
  t.deepEqual(mountsMentioning(uuidText), [], 'no mount of the pod is left');
  // the stand-ins and their attaches name the pod; the sandbox's rkt names the state dir
  await waitFor('the processes of the container to end', async () => (await processesWith(uuidText)).length === 0 && (await processesWith(w.root)).length === 0, 10_000).catch(() => undefined);
  t.deepEqual(await processesWith(uuidText), [], 'no process of the pod is left');
  t.deepEqual(await processesWith(w.root), [], 'no process of the runtime is left');
  if (uuidText !== '') t.false(fs.existsSync(path.join(w.env.dir, 'pods/run', uuidText)), 'the pod is gone');
  t.true(fs.existsSync(w.netns), 'the network namespace, not the runtime\'s, is still there');
}

/** A CRI sandbox and a container in it running `script`, both created as the shim does and started. */
async function sandboxAndContainer(t: ExecutionContext, w: World, sbId: string, cId: string, script: string) {
  const sbDir = bundle(w, 'sandbox', () => spec(w, { args: ['/pause'] }, { annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': sbId } }));
  const out = w.env.file(`${sbId}-output`);
  const sb = await createLikeShim(w, sbId, sbDir, out);
  t.is((await w.oci(['start', sbId])).code, 0);
  t.is((await stateOf(w, sbId)).status, 'running');
  const cDir = bundle(w, 'ctr', () => spec(w, { args: ['/bin/sh', '-c', script] }, { annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': sbId, 'io.kubernetes.cri.container-name': 'worker' } }));
  const c = await createLikeShim(w, cId, cDir, out);
  t.is((await w.oci(['start', cId])).code, 0);
  t.is((await stateOf(w, cId)).status, 'running');
  return { sb, c, cDir };
}

/** The runtime's tests, for the flavor whose launcher is `launcher`, its stage1 given by `sandboxArgs` (called once the test files' before hooks ran). */
export function ociRuntimeTests(launcher: string, sandboxArgs: () => string[], opts: { terminal: boolean }): void {
  OCI = launcher;
  SANDBOX_ARGS = sandboxArgs;
  test('a plain container (ctr run): create, start, state, its pid-file process exits with the app status, delete leaves nothing', async (t) => {
    const w = await world(t);
    const host = w.env.file('shared');
    fs.mkdirSync(host);
    // writable by anyone: a kvm guest's root is not the host's, and writes to a root-owned volume only where "other" may
    fs.chmodSync(host, 0o777);
    const script = 'echo hello from $(hostname) > /shared/out; ip -4 addr show eth0 >> /shared/out; cat /proc/self/limits | grep "open files" >> /shared/out; echo "$GREETING on stdout"; echo on stderr >&2; read line; echo "read: $line"; exit 7';
    const dir = bundle(w, 'plain', () => spec(w, { args: ['/bin/sh', '-c', script], env: ['PATH=/bin', 'GREETING=hi'] }, { mounts: [...(spec(w, {}).mounts as unknown[]), { destination: '/shared', type: 'bind', source: host, options: ['rbind', 'rw'] }] }));
    const out = w.env.file('container-output');
    const input = w.env.file('container-input');
    fs.writeFileSync(input, 'a line for the app\n');
    const { reaper, pid } = await createLikeShim(w, 'plain1', dir, out, input);
    t.true(Number.isInteger(pid) && pid > 0, 'the pid file names a process');
    let st = await stateOf(w, 'plain1');
    t.is(st.status, 'created');
    t.is(st.pid, pid);
    t.is(st.bundle, dir);
    const again = await w.oci(['create', '--bundle', dir, '--pid-file', w.env.file('x.pid'), 'plain1']);
    t.not(again.code, 0, 'a second create of the same id is refused');
    t.regex(again.stderr, /already exists/);

    t.is((await w.oci(['start', 'plain1'])).code, 0);
    const twice = await w.oci(['start', 'plain1']);
    t.not(twice.code, 0);
    t.regex(twice.stderr.trim(), /^cannot start (an already running container|a container that has stopped)$/);
    const end = await reaper;
    const reaped = new RegExp(`reaped ${pid} (\\d+)`).exec(String(end.stdout));
    t.is(reaped?.[1], '7', 'the pid-file process exits with the app\'s status, reaped by the subreaper');
    st = await stateOf(w, 'plain1');
    t.is(st.status, 'stopped');
    const written = fs.readFileSync(path.join(host, 'out'), 'utf8');
    t.regex(written, /hello from oci-test/, 'hostname and the bind mount reach the app');
    t.regex(written, /10\.99\.0\.2/, 'the app is in the network namespace of the config');
    t.regex(written, /open files\s+1024\s+1024/, 'process.rlimits reach the app');
    const output = fs.readFileSync(out, 'utf8');
    t.regex(output, /hi on stdout/, "the app's stdout reaches the shim's");
    t.regex(output, /on stderr/, "the app's stderr reaches the shim's");
    t.regex(output, /read: a line for the app/, "the shim's stdin reaches the app");
    const uuid = fs.readFileSync(path.join(w.root, 'plain1', 'pod-uuid'), 'utf8').trim();
    const del = await w.oci(['delete', 'plain1']);
    t.is(del.code, 0, del.stderr);
    t.false(fs.existsSync(path.join(w.root, 'plain1')), 'the state is gone');
    await nothingLeft(t, w, uuid, dir);
    const gone = await w.oci(['state', 'plain1']);
    t.not(gone.code, 0);
    t.regex(gone.stderr, /container plain1 does not exist/);
    t.regex(fs.readFileSync(w.log, 'utf8'), /"level":"error","msg":"container plain1 does not exist"/, 'errors reach --log as JSON, where the shim reads them');
  });

  test('a CRI sandbox and a container in it: exec, kill, delete without --force refused while running, nothing left', async (t) => {
    const w = await world(t);
    const { sb, c, cDir } = await sandboxAndContainer(t, w, 'sb1', 'c1', 'trap "exit 143" TERM; while true; do sleep 0.2; done');
    const ps = await w.oci(['ps', '--format', 'json', 'c1']);
    t.deepEqual(JSON.parse(ps.stdout), [c.pid]);
    t.log(`resident memory of the stand-in: ${rssKiB(c.pid)} KiB; with the processes it started (the attach): ${treeRssKiB(c.pid)} KiB`);

    const proc = w.env.file('process.json');
    const config = JSON.parse(fs.readFileSync(path.join(cDir, 'config.json'), 'utf8'));
    fs.writeFileSync(proc, JSON.stringify({ ...config.process, args: ['/bin/sh', '-c', 'echo exec ran as $(id -u) in $(pwd); exit 3'] }));
    const ex = await w.oci(['exec', '--process', proc, 'c1']);
    t.is(ex.code, 3, `exec exits with the command's status: ${ex.stderr}`);
    t.regex(ex.stdout, /exec ran as 0 in \//);
    const pidFile = w.env.file('exec.pid');
    const det = await w.oci(['exec', '--detach', '--process', proc, '--pid-file', pidFile, 'c1']);
    t.is(det.code, 0, det.stderr);
    t.true(Number(fs.readFileSync(pidFile, 'utf8')) > 0, 'a detached exec writes its pid file');
    // a process of its own: its env (only), cwd and user, not the app's
    const own = { ...config.process, env: ['PATH=/bin', 'ONLY=this'], cwd: '/bin', user: { uid: 1000, gid: 1001, additionalGids: [1234] }, args: ['/bin/sh', '-c', 'echo $(id -u) $(id -g) $(id -G) $(pwd) $PATH ${ONLY} ${HOME:-nohome}'] };
    fs.writeFileSync(proc, JSON.stringify(own));
    const ownExec = await w.oci(['exec', '--process', proc, 'c1']);
    t.is(ownExec.code, 0, ownExec.stderr);
    t.is(ownExec.stdout.trim(), '1000 1001 1001 1234 /bin /bin this nohome', "the exec runs with its process's env, cwd and user");
    fs.writeFileSync(proc, JSON.stringify({ ...own, cwd: '/no/such/dir' }));
    t.not((await w.oci(['exec', '--process', proc, 'c1'])).code, 0, 'an exec in a directory that is not there fails');

    const busy = await w.oci(['delete', 'c1']);
    t.not(busy.code, 0);
    t.regex(busy.stderr, /cannot delete container c1 that is not stopped: running/);
    t.is((await w.oci(['kill', 'c1', '15'])).code, 0);
    const end = await c.reaper;
    t.regex(String(end.stdout), new RegExp(`reaped ${c.pid} 143`), 'the stand-in exits with the status the app had when stopped');
    t.is((await stateOf(w, 'c1')).status, 'stopped');
    const dead = await w.oci(['kill', 'c1', 'KILL']);
    t.regex(dead.stderr, /container not running/);
    t.is((await w.oci(['delete', 'c1'])).code, 0);
    const uuid = fs.readFileSync(path.join(w.root, 'sb1', 'pod-uuid'), 'utf8').trim();
    t.is((await w.oci(['kill', 'sb1', 'TERM'])).code, 0);
    const sbEnd = await sb.reaper;
    t.regex(String(sbEnd.stdout), new RegExp(`reaped ${sb.pid} \\d+`), 'the sandbox process ends with its pod');
    const del = await w.oci(['delete', '--force', 'sb1']);
    t.is(del.code, 0, del.stderr);
    await nothingLeft(t, w, uuid, cDir);
  });

  test('the pod ended from outside (its shim gone): delete --force of the sandbox and its container at once succeeds and leaves nothing', async (t) => {
    const w = await world(t);
    const { sb, c, cDir } = await sandboxAndContainer(t, w, 'sb2', 'c2', 'while true; do sleep 0.2; done');
    const uuid = fs.readFileSync(path.join(w.root, 'sb2', 'pod-uuid'), 'utf8').trim();
    // as after the shim was killed: nobody asked the runtime; the pod just went
    t.is((await w.env.run(['stop', '--force', uuid])).exitCode, 0);
    await c.reaper;
    await sb.reaper;
    // containerd cleans up after a dead shim with a forced delete of each id, at the same time
    const [dc, ds] = await Promise.all([w.oci(['delete', '--force', 'c2']), w.oci(['delete', '--force', 'sb2'])]);
    t.is(dc.code, 0, dc.stderr);
    t.is(ds.code, 0, ds.stderr);
    t.deepEqual(fs.readdirSync(w.root).filter((d) => d === 'c2' || d === 'sb2'), [], 'no record is left');
    t.regex((await w.oci(['delete', '--force', 'c2'])).stderr, /does not exist/);
    await w.env.run(['gc', '--grace-period=0s']);
    await nothingLeft(t, w, uuid, cDir);
  });

  if (opts.terminal) test('a container with a terminal: the pty master goes over --console-socket, the app runs on it, the pid-file process exits with its status', async (t) => {
    const w = await world(t);
    const dir = bundle(w, 'tty', () => spec(w, { args: ['/bin/sh'], terminal: true, env: ['PATH=/bin', 'TERM=xterm'] }));
    const socketPath = w.env.file('console.sock');
    const go = w.env.file('go');
    const term = execa('python3', [CONSOLE, socketPath, go, 'if [ -t 0 ]; then echo "on a terminal: $TERM"; fi; exit 5\n'], { stdin: 'ignore', reject: false });
    t.teardown(() => void term.kill());
    let said = '';
    term.stdout!.on('data', (b: Buffer) => (said += b.toString()));
    await waitFor('the console socket', async () => said.includes('listening') || term.exitCode !== null, 10_000);
    const { reaper, pid } = await createLikeShim(w, 'tty1', dir, w.env.file('tty-output'), '-', ['--console-socket', socketPath]);
    await waitFor('the terminal to arrive', async () => said.includes('name /dev/pts/'), 30_000);
    t.is((await w.oci(['start', 'tty1'])).code, 0);

    // exec -t, as ctr task exec -t runs it: detached, its terminal over a console socket of its own
    const execSocket = w.env.file('exec.sock');
    const execGo = w.env.file('exec-go');
    fs.writeFileSync(execGo, '');
    const execTerm = execa('python3', [CONSOLE, execSocket, execGo, ''], { stdin: 'ignore', reject: false });
    t.teardown(() => void execTerm.kill());
    let execSaid = '';
    execTerm.stdout!.on('data', (b: Buffer) => (execSaid += b.toString()));
    await waitFor('the exec console socket', async () => execSaid.includes('listening'), 10_000);
    const proc = w.env.file('tty-process.json');
    fs.writeFileSync(proc, JSON.stringify({ ...(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).process as object), terminal: true, args: ['/bin/sh', '-c', 'if [ -t 1 ]; then echo exec on a terminal; fi'] }));
    const ex = await w.oci(['exec', '--detach', '--tty', '--console-socket', execSocket, '--pid-file', w.env.file('exec.pid'), '--process', proc, 'tty1']);
    t.is(ex.code, 0, ex.stderr);
    await execTerm;
    t.regex(execSaid, /exec on a terminal/, 'exec -t runs the command on the terminal sent to its console socket');

    fs.writeFileSync(go, '');
    const end = await reaper;
    t.regex(String(end.stdout), new RegExp(`reaped ${pid} 5`), "the pid-file process exits with the shell's status");
    await term;
    t.regex(said, /on a terminal: xterm/, 'the app runs on the terminal the shim got, and reads what is typed there');
    const uuid = fs.readFileSync(path.join(w.root, 'tty1', 'pod-uuid'), 'utf8').trim();
    t.is((await w.oci(['delete', 'tty1'])).code, 0);
    await nothingLeft(t, w, uuid, dir);
  });

  test('bad input: unknown ids, unsupported fields and malformed configs are one-line errors that leave nothing behind', async (t) => {
    const w = await world(t);
    for (const args of [['start', 'nope'], ['state', 'nope'], ['kill', 'nope', 'TERM'], ['delete', 'nope'], ['exec', '--process', '/dev/null', 'nope']]) {
      const r = await w.oci(args);
      t.is(r.code, 1, args.join(' '));
      t.is(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}`);
      t.regex(r.stderr, /container nope does not exist/);
    }
    const seccomp = bundle(w, 'seccomp', () => spec(w, { args: ['/bin/true'] }, { linux: { ...(spec(w, {}).linux as object), seccomp: { defaultAction: 'SCMP_ACT_ERRNO' } } }));
    const r = await w.oci(['create', '--bundle', seccomp, '--pid-file', w.env.file('p'), 'bad1']);
    t.is(r.code, 1);
    t.regex(r.stderr.trim(), /^linux\.seccomp is not supported by this runtime/);
    t.false(fs.existsSync(path.join(w.root, 'bad1')), 'no state for a refused create');
    const tty = bundle(w, 'tty', () => spec(w, { args: ['/bin/sh'], terminal: true }));
    const r2 = await w.oci(['create', '--bundle', tty, 'bad2']);
    t.regex(r2.stderr, /process\.terminal needs --console-socket/);
    const orphan = bundle(w, 'orphan', () => spec(w, { args: ['/bin/true'] }, { annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'missing' } }));
    const r3 = await w.oci(['create', '--bundle', orphan, 'bad3']);
    t.regex(r3.stderr, /sandbox missing of container bad3/);
    fs.writeFileSync(path.join(orphan, 'config.json'), '{"ociVersion": ');
    const r4 = await w.oci(['create', '--bundle', orphan, 'bad4']);
    t.regex(r4.stderr, /is not JSON/);
    t.deepEqual(fs.existsSync(w.root) ? fs.readdirSync(w.root) : [], [], 'nothing recorded');
    t.deepEqual(fs.existsSync(path.join(w.env.dir, 'pods/run')) ? fs.readdirSync(path.join(w.env.dir, 'pods/run')) : [], [], 'no pod made');
  });
}
