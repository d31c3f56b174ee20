import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RktError } from '../../src/errors.js';
import {
  QmpClient,
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpProtocolError,
  QmpTimeoutError,
  type QmpEvent,
} from '../../stage1-kvm/qmp.js';
import { LineSplitter } from '../../stage1-kvm/qmp/framing.js';

const GREETING = {
  QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'fake' }, capabilities: ['oob'] },
};
const TS = { seconds: 1700000000, microseconds: 5 };

interface Cmd {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: number;
}

interface FakeTiming {
  /** Delay before the greeting. */
  greetDelayMs?: number;
  /** Delay before answering qmp_capabilities. */
  capsDelayMs?: number;
}

/** A scripted QMP server on a unix socket: greets, negotiates, then queues commands for the test to answer. */
class FakeQmp {
  readonly received: Cmd[] = [];
  conn: net.Socket | undefined;
  private readonly server: net.Server;
  private readonly queue: Cmd[] = [];
  private wake: (() => void) | undefined;

  constructor(
    readonly path: string,
    private readonly greet: boolean | object,
    private readonly timing: FakeTiming = {},
  ) {
    this.server = net.createServer((conn) => {
      this.conn = conn;
      conn.setEncoding('utf8');
      let buf = '';
      conn.on('error', () => {});
      conn.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const cmd = JSON.parse(buf.slice(0, nl)) as Cmd;
          buf = buf.slice(nl + 1);
          this.received.push(cmd);
          if (cmd.execute === 'qmp_capabilities') this.later(this.timing.capsDelayMs, () => this.send({ return: {}, id: cmd.id }));
          else this.queue.push(cmd);
          this.wake?.();
        }
      });
      const greeting = this.greet === true ? GREETING : this.greet;
      if (greeting !== false) this.later(this.timing.greetDelayMs, () => this.send(greeting));
    });
  }

  private later(ms: number | undefined, fn: () => void): void {
    if (ms === undefined) fn();
    else setTimeout(fn, ms);
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.path, resolve));
  }

  /** Next command other than qmp_capabilities. */
  async next(): Promise<Cmd> {
    while (this.queue.length === 0) await new Promise<void>((r) => (this.wake = r));
    return this.queue.shift() as Cmd;
  }

  /** Objects are sent as CRLF-terminated JSON; strings are sent raw. */
  send(...msgs: Array<object | string>): void {
    this.conn?.write(msgs.map((m) => (typeof m === 'string' ? m : `${JSON.stringify(m)}\r\n`)).join(''));
  }

  stop(): void {
    this.conn?.destroy();
    this.server.close();
  }
}

async function tempSocket(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rkt-qmp-unit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'qmp.sock');
}

async function setup(
  t: ExecutionContext,
  opts: { greet?: boolean | object; timeoutMs?: number } = {},
): Promise<{ fake: FakeQmp; client: QmpClient }> {
  const fake = new FakeQmp(await tempSocket(t), opts.greet ?? true);
  await fake.listen();
  t.teardown(() => fake.stop());
  const client = await QmpClient.connect(fake.path, { timeoutMs: opts.timeoutMs ?? 2000 });
  t.teardown(() => client.close());
  return { fake, client };
}

test('reads the greeting and negotiates capabilities before anything else', async (t) => {
  const { fake, client } = await setup(t);
  t.is(client.greeting.version.qemu.major, 7);
  t.is(client.qemuVersion, '7.2.22');
  t.deepEqual(client.greeting.capabilities, ['oob']);
  t.is(fake.received[0]?.execute, 'qmp_capabilities');
  t.is(typeof fake.received[0]?.id, 'number');
  t.is(fake.received[0]?.arguments, undefined, 'no capability (oob) is enabled');
});

test('matches responses by id even when they come back out of order', async (t) => {
  const { fake, client } = await setup(t);
  const a = client.execute('query-a');
  const b = client.execute('query-b', { x: 1 });
  const c = client.execute('query-c');
  const cmds = [await fake.next(), await fake.next(), await fake.next()];
  t.deepEqual(cmds[1]?.arguments, { x: 1 });
  t.is(new Set(fake.received.map((m) => m.id)).size, fake.received.length, 'ids are unique');
  for (const cmd of [...cmds].reverse()) fake.send({ return: `answer-${cmd.execute}`, id: cmd.id });
  t.deepEqual(await Promise.all([a, b, c]), ['answer-query-a', 'answer-query-b', 'answer-query-c']);
});

test('an error response rejects with a one-line QmpCommandError', async (t) => {
  const { fake, client } = await setup(t);
  const p = client.execute('nope');
  const cmd = await fake.next();
  fake.send({ id: cmd.id, error: { class: 'CommandNotFound', desc: 'The command nope has not been found' } });
  const err = await t.throwsAsync(p, { instanceOf: QmpCommandError });
  t.true(err instanceof RktError);
  t.is(err?.errorClass, 'CommandNotFound');
  t.is(err?.desc, 'The command nope has not been found');
  t.is(err?.command, 'nope');
  t.false(err?.message.includes('\n'));
  // The connection stays usable after a refused command.
  const q = client.queryStatus();
  fake.send({ return: { status: 'running', running: true, singlestep: false }, id: (await fake.next()).id });
  t.deepEqual(await q, { status: 'running', running: true });
});

test('a timed-out command rejects and its late answer is ignored', async (t) => {
  const { fake, client } = await setup(t);
  const slow = client.execute('slow', undefined, { timeoutMs: 50 });
  const slowCmd = await fake.next();
  const err = await t.throwsAsync(slow, { instanceOf: QmpTimeoutError });
  t.is(err?.waitingFor, 'slow');
  t.regex(err?.message ?? '', /did not answer 'slow' on .*qmp\.sock within 50ms; is the VM still running\?/);
  const next = client.execute('fast');
  const fastCmd = await fake.next();
  fake.send({ return: 'late', id: slowCmd.id }, { return: 'fast', id: fastCmd.id });
  t.is(await next, 'fast');
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('events interleaved with responses reach listeners in arrival order', async (t) => {
  const { fake, client } = await setup(t);
  const seen: string[] = [];
  client.on('event', (e) => seen.push(`any:${e.event}`));
  client.on('SHUTDOWN', (e) => seen.push(`shutdown:${e.data.reason}:${e.data.guest}`));
  client.once('STOP', (e) => seen.push(`stop:${e.timestamp.seconds}`));
  const p = client.execute('cmd');
  const cmd = await fake.next();
  fake.send(
    { event: 'STOP', timestamp: TS },
    { return: 42, id: cmd.id },
    { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: TS },
    { event: 'STOP', timestamp: TS },
  );
  t.is(await p, 42);
  await sleep(20);
  t.deepEqual(seen, ['any:STOP', `stop:${TS.seconds}`, 'any:SHUTDOWN', 'shutdown:guest-shutdown:true', 'any:STOP']);
  t.is(client.listenerCount('STOP'), 0, 'once listeners are removed after firing');
});

test('messages split across chunks and several per chunk are framed correctly', async (t) => {
  const { fake, client } = await setup(t);
  const events: QmpEvent[] = [];
  client.on('event', (e) => events.push(e));
  const a = client.execute('a');
  const b = client.execute('b');
  const c = client.execute('c');
  const [ca, cb, cc] = [await fake.next(), await fake.next(), await fake.next()];
  // One message byte by byte, the CR and LF in separate writes.
  const raw = `${JSON.stringify({ return: { text: 'split \u00e9' }, id: ca?.id })}\r\n`;
  for (const ch of raw) {
    fake.send(ch);
    await sleep(1);
  }
  // Two responses and an event in one write, the last one cut in half.
  const tail = `${JSON.stringify({ event: 'RESUME', timestamp: TS })}\r\n${JSON.stringify({ return: 'c', id: cc?.id })}\r\n`;
  fake.send(`${JSON.stringify({ return: 'b', id: cb?.id })}\r\n${tail.slice(0, 30)}`);
  await sleep(10);
  fake.send(tail.slice(30));
  t.deepEqual(await Promise.all([a, b, c]), [{ text: 'split \u00e9' }, 'b', 'c']);
  t.deepEqual(
    events.map((e) => e.event),
    ['RESUME'],
  );
});

test('qemu closing the socket mid-command rejects all pending work with QmpClosedError', async (t) => {
  const { fake, client } = await setup(t);
  const reasons: Error[] = [];
  client.on('close', (r) => reasons.push(r));
  const cmd = client.execute('query-status');
  const wait = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
  await fake.next();
  fake.conn?.destroy();
  const err = await t.throwsAsync(cmd, { instanceOf: QmpClosedError });
  t.true(err?.byPeer);
  t.regex(err?.message ?? '', /qemu closed its QMP socket .* while waiting for 'query-status'/);
  await t.throwsAsync(wait, { instanceOf: QmpClosedError });
  t.is(reasons.length, 1);
  t.true(client.isClosed);
  await t.throwsAsync(client.execute('cont'), { instanceOf: QmpClosedError });
  t.is(client.listenerCount(), 0);
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('malformed JSON closes the connection with QmpProtocolError', async (t) => {
  const { fake, client } = await setup(t);
  const closed = new Promise<Error>((resolve) => client.on('close', resolve));
  const p = client.execute('query-status');
  await fake.next();
  fake.send('{"return": {}, "id": \r\n');
  await t.throwsAsync(p, { instanceOf: QmpProtocolError });
  t.true((await closed) instanceof QmpProtocolError);
  await t.throwsAsync(client.execute('cont'), { instanceOf: QmpProtocolError });
});

test('a first message that is not a greeting is a protocol error', async (t) => {
  const fake = new FakeQmp(await tempSocket(t), { hello: 'this is the serial console' });
  await fake.listen();
  t.teardown(() => fake.stop());
  const err = await t.throwsAsync(QmpClient.connect(fake.path), { instanceOf: QmpProtocolError });
  t.regex(err?.message ?? '', /expected the QMP greeting/);
});

test('connect retries while the socket does not exist yet', async (t) => {
  const fake = new FakeQmp(await tempSocket(t), true);
  t.teardown(() => fake.stop());
  const started = Date.now();
  const connecting = QmpClient.connect(fake.path, { retryUntilMs: 5000 });
  await sleep(300);
  await fake.listen();
  const client = await connecting;
  t.teardown(() => client.close());
  t.true(Date.now() - started >= 300);
  t.is(client.qemuVersion, '7.2.22');
});

test('connect fails with QmpConnectError when the socket never appears', async (t) => {
  const path = await tempSocket(t);
  const now = await t.throwsAsync(QmpClient.connect(path), { instanceOf: QmpConnectError });
  t.is(now?.code, 'ENOENT');
  const started = Date.now();
  const later = await t.throwsAsync(QmpClient.connect(path, { retryUntilMs: 200 }), { instanceOf: QmpConnectError });
  t.true(Date.now() - started >= 200);
  t.regex(later?.message ?? '', /does not exist after retrying for 200ms; is qemu running/);
});

test('a server that never greets times out (another client holds the monitor)', async (t) => {
  const fake = new FakeQmp(await tempSocket(t), false);
  await fake.listen();
  t.teardown(() => fake.stop());
  const err = await t.throwsAsync(QmpClient.connect(fake.path, { timeoutMs: 150 }), { instanceOf: QmpTimeoutError });
  t.is(err?.waitingFor, 'greeting');
});

test('waitForEvent does not miss an event that precedes the command response', async (t) => {
  const { fake, client } = await setup(t);
  const answerWithEvent = async (name: string): Promise<void> => {
    const cmd = await fake.next();
    fake.send({ event: name, timestamp: TS }, { return: {}, id: cmd.id }); // qemu's real order
  };
  // Armed first, awaited after.
  const resumed = client.waitForEvent('RESUME', { timeoutMs: 1000 });
  await Promise.all([client.cont(), answerWithEvent('RESUME')]);
  t.is((await resumed).event, 'RESUME');
  // Or with a mark taken before the command.
  const mark = client.eventMark();
  await Promise.all([client.stop(), answerWithEvent('STOP')]);
  t.is((await client.waitForEvent(['STOP', 'SHUTDOWN'], { timeoutMs: 1000, since: mark })).event, 'STOP');
  // Waiting only after the fact, without a mark, cannot see it.
  await t.throwsAsync(client.waitForEvent('STOP', { timeoutMs: 50 }), { instanceOf: QmpTimeoutError });
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('waitForEvent filters, and can be aborted', async (t) => {
  const { fake, client } = await setup(t);
  const guestOnly = client.waitForEvent('SHUTDOWN', { timeoutMs: 1000, filter: (e) => e.data.guest });
  fake.send(
    { event: 'SHUTDOWN', data: { guest: false, reason: 'host-signal' }, timestamp: TS },
    { event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' }, timestamp: TS },
  );
  t.is((await guestOnly).data.reason, 'guest-shutdown');
  const ac = new AbortController();
  const aborted = client.waitForEvent('GUEST_PANICKED', { timeoutMs: Infinity, signal: ac.signal });
  ac.abort(new Error('pod stopped'));
  await t.throwsAsync(aborted, { message: 'pod stopped' });
  t.is(client.outstanding.eventWaiters, 0);
});

test('quit resolves only once qemu has closed the socket, not when it answers', async (t) => {
  const { fake, client } = await setup(t);
  let resolved = false;
  const quitting = client.quit({ timeoutMs: 2000 }).then(() => (resolved = true));
  const cmd = await fake.next();
  t.is(cmd.execute, 'quit');
  fake.send({ event: 'SHUTDOWN', data: { guest: false, reason: 'host-qmp-quit' }, timestamp: TS }, { return: {}, id: cmd.id });
  await sleep(100);
  t.false(resolved, 'answered, but the socket is still open');
  fake.conn?.end();
  await quitting;
  t.true(client.isClosed);
});

test('quit times out if qemu answers but keeps the socket open', async (t) => {
  const { fake, client } = await setup(t);
  const quitting = client.quit({ timeoutMs: 400 });
  fake.send({ return: {}, id: (await fake.next()).id });
  const err = await t.throwsAsync(quitting, { instanceOf: QmpTimeoutError });
  t.is(err?.waitingFor, 'close');
});

test('close is idempotent and rejects outstanding work as closed by rkt', async (t) => {
  const { fake, client } = await setup(t);
  const p = client.execute('query-status');
  await fake.next();
  await Promise.all([client.close(), client.close()]);
  await client.close();
  const err = await t.throwsAsync(p, { instanceOf: QmpClosedError });
  t.false(err?.byPeer);
  t.regex(err?.message ?? '', /closed by rkt while waiting for 'query-status'/);
});

test('convenience methods send the documented commands', async (t) => {
  const { fake, client } = await setup(t);
  const calls: Array<[() => Promise<unknown>, string]> = [
    [() => client.systemPowerdown(), 'system_powerdown'],
    [() => client.cont(), 'cont'],
    [() => client.stop(), 'stop'],
  ];
  for (const [call, name] of calls) {
    const p = call();
    const cmd = await fake.next();
    t.is(cmd.execute, name);
    fake.send({ return: {}, id: cmd.id });
    await p;
  }
});

test('an answer without an id fails the oldest waiting command at once, not at its timeout', async (t) => {
  const { fake, client } = await setup(t, { timeoutMs: 10_000 });
  const started = Date.now();
  const first = client.execute('first');
  const second = client.execute('second');
  const [, secondCmd] = [await fake.next(), await fake.next()];
  // What qemu sends for a request it cannot read (here: as if 'first' was unparsable).
  fake.send({ error: { class: 'GenericError', desc: 'JSON parse error, invalid keyword' } });
  const err = await t.throwsAsync(first, { instanceOf: QmpCommandError });
  t.is(err?.command, 'first');
  t.is(err?.errorClass, 'GenericError');
  t.true(Date.now() - started < 2000, 'failed at once, not after the 10s timeout');
  // The next command is still matched by its own id.
  fake.send({ return: 'two', id: secondCmd?.id });
  t.is(await second, 'two');
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('an answer without an id that belongs to a timed-out command is not given to the next one', async (t) => {
  const { fake, client } = await setup(t);
  const slow = client.execute('slow', undefined, { timeoutMs: 50 });
  await fake.next();
  await t.throwsAsync(slow, { instanceOf: QmpTimeoutError });
  const next = client.execute('next');
  const nextCmd = await fake.next();
  // qemu answers in order: this error is the (late) answer to 'slow'.
  fake.send({ error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } }, { return: 'ok', id: nextCmd.id });
  t.is(await next, 'ok');
  // With nothing in flight, one is dropped (and logged) without harm.
  fake.send({ error: { class: 'GenericError', desc: 'stray' } });
  await sleep(50);
  t.is(await queryAfter(fake, client), 'still fine');
});

test('the many errors without an id one unreadable request can cost fail only that command', async (t) => {
  const { fake, client } = await setup(t, { timeoutMs: 10_000 });
  const deep = client.execute('deep');
  const next = client.execute('next');
  const [, nextCmd] = [await fake.next(), await fake.next()];
  // What qemu 7.2 answers to a request nested deeper than its limit: one error, then one per token while it resynchronises.
  const resync = Array.from({ length: 50 }, () => ({ error: { class: 'GenericError', desc: 'JSON parse error, expecting value' } }));
  fake.send({ error: { class: 'GenericError', desc: 'JSON nesting depth limit exceeded' } }, ...resync);
  const err = await t.throwsAsync(deep, { instanceOf: QmpCommandError });
  t.is(err?.desc, 'JSON nesting depth limit exceeded');
  fake.send({ return: 'mine', id: nextCmd?.id });
  t.is(await next, 'mine');
  // The run ends with that answer: a later unreadable request fails at once again.
  const later = client.execute('later');
  await fake.next();
  fake.send({ error: { class: 'GenericError', desc: 'QMP input must be a JSON object' } });
  await t.throwsAsync(later, { instanceOf: QmpCommandError, message: /'later': QMP input must be a JSON object/ });
  t.deepEqual(client.outstanding, { commands: 0, eventWaiters: 0 });
});

test('of two unreadable requests in a row, the second fails once a later answer shows it was passed over', async (t) => {
  const { fake, client } = await setup(t, { timeoutMs: 10_000 });
  const started = Date.now();
  const a = client.execute('a');
  const b = client.execute('b');
  const c = client.execute('c');
  const [, , cc] = [await fake.next(), await fake.next(), await fake.next()];
  fake.send({ error: { class: 'GenericError', desc: 'bad a' } }, { error: { class: 'GenericError', desc: 'bad b' } }, { return: 'c', id: cc?.id });
  await t.throwsAsync(a, { instanceOf: QmpCommandError, message: /'a': bad a/ });
  await t.throwsAsync(b, { instanceOf: QmpCommandError, message: /'b': bad b/ });
  t.is(await c, 'c');
  t.true(Date.now() - started < 2000, 'nobody waited for the 10s timeout');
});

async function queryAfter(fake: FakeQmp, client: QmpClient): Promise<unknown> {
  const p = client.execute('after');
  fake.send({ return: 'still fine', id: (await fake.next()).id });
  return p;
}

test("a 'close' listener added after the connection closed gets the reason once, asynchronously", async (t) => {
  const { fake, client } = await setup(t);
  fake.conn?.destroy();
  const reason = await client.waitForClose({ timeoutMs: 2000 });
  const calls: Error[] = [];
  client.on('close', (r) => calls.push(r));
  client.once('close', (r) => calls.push(r));
  const withdrawn = (): void => t.fail('a withdrawn listener was called');
  client.on('close', withdrawn);
  client.off('close', withdrawn);
  t.is(calls.length, 0, 'not called from inside on()');
  await sleep(10);
  t.deepEqual(calls, [reason, reason]);
  await sleep(10);
  t.is(calls.length, 2, 'once each');
  t.is(client.listenerCount(), 0);
  // Other names can never fire again and are not kept.
  client.on('SHUTDOWN', () => t.fail('event after close'));
  t.is(client.listenerCount(), 0);
});

test('a message cut off by qemu exiting is reported in the close reason, bounded', async (t) => {
  const { fake, client } = await setup(t);
  const p = client.execute('query-status');
  await fake.next();
  const partial = `{"return": {"status": "running", "junk": "${'x'.repeat(5000)}`;
  fake.send(partial);
  await sleep(20);
  fake.conn?.destroy();
  const err = await t.throwsAsync(p, { instanceOf: QmpClosedError });
  t.true(err?.byPeer);
  t.is(err?.truncated?.chars, partial.length);
  t.true(partial.startsWith(err?.truncated?.excerpt ?? 'none'));
  t.regex(err?.message ?? '', /while waiting for 'query-status', in the middle of a message \(5\d{3} characters without a line end: "\{\\"return\\": \{\\"status/);
  t.true((err?.message.length ?? Infinity) < 400, 'the message keeps only an excerpt');
  t.false(err?.message.includes('\n'));
  const reason = await client.waitForClose({ timeoutMs: 1000 });
  t.is((reason as QmpClosedError).truncated?.chars, partial.length);
});

test('a clean end of the connection reports no truncated message', async (t) => {
  const { fake, client } = await setup(t);
  fake.conn?.end();
  const reason = await client.waitForClose({ timeoutMs: 1000 });
  t.true(reason instanceof QmpClosedError);
  t.is((reason as QmpClosedError).truncated, undefined);
  t.notRegex(reason.message, /middle of a message/);
});

test('LineSplitter caps a line, complete or still buffered, at its limit', (t) => {
  const s = new LineSplitter(10);
  t.deepEqual(s.push('012345678\r\n{"a"'), ['012345678'], 'ten characters with the CR');
  t.is(s.remainder, '{"a"');
  t.deepEqual(s.push(':1}\n\n'), ['{"a":1}'], 'blank lines dropped');
  t.throws(() => new LineSplitter(10).push('0123456789a'), { instanceOf: RangeError }, 'no line end yet');
  t.throws(() => new LineSplitter(10).push('0123456789a\n'), { instanceOf: RangeError }, 'complete but too long');
  const grown = new LineSplitter(10);
  grown.push('012345');
  t.throws(() => grown.push('6789ab'), { instanceOf: RangeError }, 'too long across reads');
});

test('connect: timeoutMs is one budget for the greeting and qmp_capabilities together', async (t) => {
  // Each step alone fits in 250ms, both together do not.
  const fake = new FakeQmp(await tempSocket(t), true, { greetDelayMs: 150, capsDelayMs: 150 });
  await fake.listen();
  t.teardown(() => fake.stop());
  const err = await t.throwsAsync(QmpClient.connect(fake.path, { timeoutMs: 250 }), { instanceOf: QmpTimeoutError });
  t.is(err?.waitingFor, 'qmp_capabilities');
  t.regex(err?.message ?? '', /did not answer 'qmp_capabilities' on .* within 250ms of connecting/);
});

test('connect: the time spent retrying for the socket is not part of timeoutMs', async (t) => {
  const fake = new FakeQmp(await tempSocket(t), true, { greetDelayMs: 100 });
  t.teardown(() => fake.stop());
  const connecting = QmpClient.connect(fake.path, { retryUntilMs: 3000, timeoutMs: 250 });
  await sleep(300);
  await fake.listen();
  const client = await connecting;
  t.teardown(() => client.close());
  t.is(client.qemuVersion, '7.2.22');
});
