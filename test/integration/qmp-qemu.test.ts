// The QMP client against a real qemu: a paused microvm with no kernel, which is
// enough for the monitor, run-state changes and their events.

import test, { type ExecutionContext } from 'ava';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { QmpClient, QmpClosedError, QmpCommandError, QmpConnectError, QmpTimeoutError } from '../../stage1-kvm/qmp.js';

const QEMU = 'qemu-system-x86_64';

interface Vm {
  child: ChildProcess;
  sock: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

async function startQemu(t: ExecutionContext): Promise<Vm> {
  const dir = await mkdtemp(join(tmpdir(), 'rkt-qmp-it-'));
  const sock = join(dir, 'qmp.sock');
  const args = ['-M', 'microvm', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-S'];
  const child = spawn(QEMU, [...args, '-qmp', `unix:${sock},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null })); // spawn failed: nothing to reap
  });
  // Registered before anything can fail, so qemu never outlives the test.
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });
  return { child, sock, exited, stderr: () => stderr };
}

async function connect(t: ExecutionContext, vm: Vm): Promise<QmpClient> {
  const client = await QmpClient.connect(vm.sock, { retryUntilMs: 10_000, timeoutMs: 10_000 });
  t.teardown(() => client.close());
  return client;
}

async function boot(t: ExecutionContext): Promise<{ vm: Vm; client: QmpClient }> {
  const vm = await startQemu(t);
  return { vm, client: await connect(t, vm) };
}

test('greets with the installed qemu version and starts in prelaunch', async (t) => {
  const { client } = await boot(t);
  const { stdout } = await promisify(execFile)(QEMU, ['--version']);
  t.is(client.qemuVersion, /version (\d+\.\d+\.\d+)/.exec(stdout)?.[1] ?? `unparsed: ${stdout}`);
  t.true(client.greeting.capabilities.includes('oob'));
  t.deepEqual(await client.queryStatus(), { running: false, status: 'prelaunch' });
});

test('cont and stop change the run state and emit RESUME and STOP', async (t) => {
  const { client } = await boot(t);
  const resumed = client.waitForEvent('RESUME', { timeoutMs: 5000 });
  await client.cont();
  t.is((await resumed).event, 'RESUME');
  t.deepEqual(await client.queryStatus(), { running: true, status: 'running' });
  const mark = client.eventMark();
  await client.stop();
  const stopped = await client.waitForEvent('STOP', { timeoutMs: 5000, since: mark });
  t.true(stopped.timestamp.seconds > 0);
  t.deepEqual(await client.queryStatus(), { running: false, status: 'paused' });
});

test('an unknown command is refused with CommandNotFound and the monitor stays usable', async (t) => {
  const { client } = await boot(t);
  const err = await t.throwsAsync(client.execute('no-such-command'), { instanceOf: QmpCommandError });
  t.is(err?.errorClass, 'CommandNotFound');
  t.is(err?.command, 'no-such-command');
  const bad = await t.throwsAsync(client.execute('query-status', { bogus: 1 }), { instanceOf: QmpCommandError });
  t.is(bad?.errorClass, 'GenericError');
  t.is((await client.queryStatus()).status, 'prelaunch');
});

test('a request qemu cannot read fails at once with its id-less error; commands around it get their own answers', async (t) => {
  const { client } = await boot(t);
  // Deeper than qemu's JSON nesting limit (1024): qemu answers without an id,
  // then once per token while it resynchronises.
  let deep: unknown[] = [];
  for (let i = 0; i < 1100; i++) deep = [deep];
  const [before, unreadable, after] = await Promise.allSettled([
    client.queryStatus({ timeoutMs: 10_000 }),
    client.execute('query-status', { deep }, { timeoutMs: 10_000 }),
    client.queryStatus({ timeoutMs: 10_000 }),
  ]);
  t.deepEqual(before, { status: 'fulfilled', value: { running: false, status: 'prelaunch' } });
  t.is(unreadable.status, 'rejected');
  const err = unreadable.status === 'rejected' ? unreadable.reason : undefined;
  t.true(err instanceof QmpCommandError, String(err));
  t.regex((err as Error).message, /nesting depth limit/);
  t.deepEqual(after, { status: 'fulfilled', value: { running: false, status: 'prelaunch' } });
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('system_reset emits RESET caused by the host', async (t) => {
  const { client } = await boot(t);
  const reset = client.waitForEvent('RESET', { timeoutMs: 5000 });
  await client.execute('system_reset');
  t.deepEqual((await reset).data, { guest: false, reason: 'host-qmp-system-reset' });
});

test('system_powerdown emits POWERDOWN; with no guest OS to obey it, no SHUTDOWN follows', async (t) => {
  const { client } = await boot(t);
  await client.cont();
  const powerdown = client.waitForEvent('POWERDOWN', { timeoutMs: 5000 });
  await client.systemPowerdown();
  t.is((await powerdown).data, undefined);
  await t.throwsAsync(client.waitForEvent('SHUTDOWN', { timeoutMs: 500 }), { instanceOf: QmpTimeoutError });
  t.true((await client.queryStatus()).running);
});

test('quit emits SHUTDOWN, closes the socket, removes it, and qemu exits 0', async (t) => {
  const { vm, client } = await boot(t);
  const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
  await client.quit({ timeoutMs: 5000 });
  t.deepEqual((await shutdown).data, { guest: false, reason: 'host-qmp-quit' });
  t.true(client.isClosed);
  t.deepEqual(await vm.exited, { code: 0, signal: null });
  t.false(existsSync(vm.sock), 'qemu unlinks its socket on a clean exit');
});

test('SIGTERM makes qemu report SHUTDOWN from a host signal before closing', async (t) => {
  const { vm, client } = await boot(t);
  const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
  const closed = client.waitForClose({ timeoutMs: 5000 });
  vm.child.kill('SIGTERM');
  t.deepEqual((await shutdown).data, { guest: false, reason: 'host-signal' });
  const reason = await closed;
  t.true(reason instanceof QmpClosedError && reason.byPeer);
  t.is((await vm.exited).code, 0);
});

test('SIGKILL while waiting rejects pending work with QmpClosedError and leaves a stale socket', async (t) => {
  const { vm, client } = await boot(t);
  // Freeze qemu so the command is certainly still unanswered when it dies.
  vm.child.kill('SIGSTOP');
  const status = client.queryStatus({ timeoutMs: 10_000 });
  const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 10_000 });
  vm.child.kill('SIGKILL');
  const err = await t.throwsAsync(status, { instanceOf: QmpClosedError });
  t.true(err?.byPeer);
  await t.throwsAsync(shutdown, { instanceOf: QmpClosedError });
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
  t.is((await vm.exited).signal, 'SIGKILL');
  t.true(existsSync(vm.sock), 'a killed qemu cannot unlink its socket');
  const stale = await t.throwsAsync(QmpClient.connect(vm.sock, { retryUntilMs: 100 }), { instanceOf: QmpConnectError });
  t.is(stale?.code, 'ECONNREFUSED');
});

test('qemu serves one QMP client at a time: a second one gets no greeting until the first leaves', async (t) => {
  const { vm, client } = await boot(t);
  const second = await t.throwsAsync(QmpClient.connect(vm.sock, { timeoutMs: 500 }), { instanceOf: QmpTimeoutError });
  t.is(second?.waitingFor, 'greeting');
  await client.close();
  const next = await connect(t, vm);
  t.is((await next.queryStatus()).status, 'prelaunch');
});
