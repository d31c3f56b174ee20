import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { REPO, RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podWorld, waitFor } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// bin/rkt's launcher takes a pod over from the Node.js stage0
// (docs/architecture.md, "The launcher"): while the pod runs, `rkt run` is
// the small launcher, node is gone from above the entrypoint, and the pod
// lock is still held; without the launcher stage0 runs the pod itself.

const FLY = path.join(REPO, 'build', 'stage1-fly.aci');

/** The command name and parent of a process, from /proc. */
function proc(pid: number): { comm: string; ppid: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
  const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  return { comm, ppid };
}

/** Every process below pid, depth first. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    let kids = '';
    try {
      kids = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const c of kids.split(' ').filter((w) => w !== '')) out.push(Number(c), ...descendants(Number(c)));
  }
  return out;
}

async function sleeper(t: ExecutionContext, prefix: string) {
  needFile(FLY, 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, prefix);
  const image = await buildAci(env.root, { name: 'example.com/sleeper', app: { exec: ['/bin/sleep', '600'], user: '0', group: '0' } });
  return { env, image, uuidFile: env.file('uuid') };
}

test('while a pod runs, rkt run is the launcher, one node process remains (the entrypoint), and the pod lock is held', async (t) => {
  const { env, image, uuidFile } = await sleeper(t, 'rkt-launcher-');
  const child = execa(RKT, [...env.globals(), 'run', '--insecure-options=image', `--stage1-path=${FLY}`, `--uuid-file-save=${uuidFile}`, image], { reject: false, stdin: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('the pod to run', async () => fs.existsSync(uuidFile) && (await listPods(env)).some((p) => p.state === 'running'), 60_000);
  // bin/rkt is a shell script that execs the launcher: same pid
  const pid = child.pid!;
  const stage0 = (p: number) => fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('cli-bundle/rkt.js');
  await waitFor('stage0 to hand the pod over and exit', async () => !descendants(pid).some(stage0), 30_000);
  t.is(proc(pid).comm, 'rkt-launch');
  const kids = descendants(pid).filter((p) => proc(p).ppid === pid);
  t.is(kids.length, 1, 'one child: the run entrypoint');
  const nodes = descendants(pid).filter((p) => proc(p).comm === 'node');
  t.is(nodes.length, 1, 'one Node.js process in the pod: the entrypoint');
  t.is(nodes[0], kids[0]);
  t.is(fs.readlinkSync(`/proc/${kids[0]}/fd/3`), path.join(env.dir, 'pods', 'run', fs.readFileSync(uuidFile, 'utf8').trim()));
  // the lock is still held: gc leaves the running pod alone
  t.is((await env.run(['gc', '--grace-period=0s'])).exitCode, 0);
  t.deepEqual((await listPods(env)).map((p) => p.state), ['running']);
  // and a stop request to rkt run reaches the app through the launcher
  child.kill('SIGTERM');
  const res = await child;
  t.is(res.exitCode, 143, String(res.stderr));
  t.deepEqual((await listPods(env)).map((p) => p.state), ['exited']);
});

test('without the launcher, stage0 runs the pod itself with the same result', async (t) => {
  const { env, image } = await sleeper(t, 'rkt-nolauncher-');
  const r = await execa('node', [path.join(REPO, 'dist', 'cli-bundle', 'rkt.js'), ...env.globals(), 'run', '--insecure-options=image', `--stage1-path=${FLY}`, image, '--exec', '/bin/sh', '--', '-c', 'exit 7'], { reject: false, stdin: 'ignore' });
  t.is(r.exitCode, 7, String(r.stderr));
  const pods = await listPods(env);
  t.deepEqual(pods.map((p) => [p.state, p.apps[0]?.exit_code]), [['exited', 7]]);
});

test('the app exit status and an interactive app pass through the launcher', async (t) => {
  const { env, image } = await sleeper(t, 'rkt-launcher-io-');
  const r = await env.run(['run', '--insecure-options=image', `--stage1-path=${FLY}`, '--interactive', image, '--exec', '/bin/sh', '--', '-c', 'read line; echo "got $line"; exit 3'], { input: 'hello\n' });
  t.is(r.exitCode, 3, String(r.stderr));
  t.regex(String(r.stdout), /got hello/);
});
