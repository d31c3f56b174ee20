import test from 'ava';
import { containerdForFile, CTR_NAMESPACE as NS, handlerBinary, handlersUnderTest, type Containerd } from '../helpers/containerd.js';
import { IDLE, SERVER_IMAGE } from '../helpers/cri-images.js';
import { waitFor } from '../helpers/cri-pod.js';

// `ctr` driving this runtime through containerd 1.6's runc v2 shim, the
// runtime given as the shim's runc binary: run, exec, kill, delete, and the
// errors a user gets for the wrong order.

const handlers = handlersUnderTest();
const daemon = containerdForFile(test, handlers, (cd) => cd.importImages(NS));

for (const h of handlers) {
  const runtime = (c: Containerd) => ['--runc-binary', handlerBinary(h), '--runc-root', c.handlerRoot(h), '--fifo-dir', c.fifoDir];

  test.serial(`${h}: ctr run: the container prints and exits with its status`, async (t) => {
    t.timeout(20 * 60_000);
    const c = daemon();
    const id = `ctr-run-${h}`;
    const r = await c.ctr(NS, ['run', '--rm', ...runtime(c), '--env', `GREETING=hello ${id}`, '--cwd', '/www', SERVER_IMAGE, id, '/bin/sh', '-c', 'echo $GREETING from $(pwd); echo to stderr >&2; exit 7'], { timeout: 600_000 });
    t.is(r.exitCode, 7, String(r.stderr));
    t.is(String(r.stdout), `hello ${id} from /www`);
    t.regex(String(r.stderr), /^to stderr$/m);
    t.deepEqual(await c.leftovers([id]), []);
  });

  test.serial(`${h}: ctr task exec, kill and delete on a detached container; errors for the wrong order`, async (t) => {
    t.timeout(20 * 60_000);
    const c = daemon();
    const id = `ctr-task-${h}`;
    const run = await c.ctr(NS, ['run', '--detach', ...runtime(c), '--env', `MARK=${id}`, '--cwd', '/www', SERVER_IMAGE, id, '/bin/sh', '-c', IDLE], { timeout: 600_000 });
    t.is(run.exitCode, 0, String(run.stderr));
    const state = async () => /\s(\w+)\s*$/.exec(String((await c.ctr(NS, ['tasks', 'list'])).stdout).split('\n').find((l) => l.startsWith(`${id} `)) ?? '')?.[1];
    t.is(await state(), 'RUNNING');

    const ex = await c.ctr(NS, ['tasks', 'exec', '--exec-id', 'probe', '--fifo-dir', c.fifoDir, id, '/bin/sh', '-c', 'echo exec in $(pwd) with $MARK; echo err >&2; exit 4'], { timeout: 300_000 });
    t.is(ex.exitCode, 4, String(ex.stderr));
    t.is(String(ex.stdout).trim(), `exec in /www with ${id}`, 'the exec runs in the container, with its environment');
    t.regex(String(ex.stderr), /^err$/m);

    const unknown = await c.ctr(NS, ['tasks', 'exec', '--exec-id', 'x', 'no-such-task', '/bin/true']);
    t.not(unknown.exitCode, 0);
    t.regex(String(unknown.stderr), /not found/);
    const running = await c.ctr(NS, ['tasks', 'delete', id]);
    t.not(running.exitCode, 0, 'no delete of a running task without --force');
    t.regex(String(running.stderr), /running|stopped/i);
    t.is(await state(), 'RUNNING', 'the refused delete left it running');

    // an exec with a cwd of its own (ctr task exec --cwd), honoured as runc does
    const cwd = await c.ctr(NS, ['tasks', 'exec', '--exec-id', 'cwd', '--fifo-dir', c.fifoDir, '--cwd', '/bin', id, '/bin/sh', '-c', 'pwd; echo $MARK'], { timeout: 300_000 });
    t.is(`${cwd.exitCode} ${String(cwd.stdout).trim()}`, `0 /bin\n${id}`, String(cwd.stderr));
    t.is(await state(), 'RUNNING', 'the container runs on after the execs');

    const kill = await c.ctr(NS, ['tasks', 'kill', '--signal', 'SIGTERM', id]);
    t.is(kill.exitCode, 0, String(kill.stderr));
    t.is(await waitFor('the task to stop', 300_000, async () => ((await state()) === 'STOPPED' ? 'STOPPED' : undefined)), 'STOPPED');
    const del = await c.ctr(NS, ['tasks', 'delete', id], { timeout: 300_000 });
    // ctr exits with the task's status: the shell traps SIGTERM to exit 0
    t.is(del.exitCode, 0, String(del.stderr));
    const rm = await c.ctr(NS, ['containers', 'delete', id]);
    t.is(rm.exitCode, 0, String(rm.stderr));
    t.deepEqual(await c.leftovers([id]), []);
  });
}
