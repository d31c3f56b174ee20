import test from 'ava';
import net from 'node:net';
import os from 'node:os';
import { PassThrough } from 'node:stream';
import { fakeAgent } from '../helpers/fake-agent.js';
import {
  AgentConnectionError,
  AgentExecError,
  AgentInterruptedError,
  AgentProtocolError,
  FrameType,
  attachToApp,
  decodeAttach,
  decodeExec,
  encodeFrame,
  guestText,
  runInGuest,
  sessionFrame,
  type Frame,
  type RunInGuestOptions,
} from '../../stage1-kvm/agent-client.js';

// runInGuest against a guest that does not play by the rules: whatever
// holds the agent's port may be hostile (a root app can kill the agent and,
// having taken the guest over, answer in its place). The host must fail
// cleanly and in bounded time, and hold bounded memory, whatever it sends.

function hello(frames: Frame[]): Buffer {
  const exec = frames.find((f) => f.type === FrameType.Exec);
  if (exec === undefined) throw new Error('no EXEC yet');
  return sessionFrame(decodeExec(exec.payload).session);
}

const sink = (): PassThrough => new PassThrough().resume();
const REQ = { app: 'a', argv: ['/bin/x'] };
const FAST: RunInGuestOptions = { answerTimeoutMs: 300, frameTimeoutMs: 300 };

async function timed<T>(p: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const t0 = Date.now();
  const [result] = await Promise.allSettled([p]);
  return { ms: Date.now() - t0, result: result! };
}

function rejection(r: PromiseSettledResult<unknown>): Error {
  if (r.status !== 'rejected') throw new Error(`expected a rejection, got ${JSON.stringify(r)}`);
  return r.reason as Error;
}

test('a guest that never answers: AgentConnectionError once the answer deadline passes', async (t) => {
  const agent = await fakeAgent(() => {});
  const { ms, result } = await timed(runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST));
  const err = rejection(result);
  t.true(err instanceof AgentConnectionError, String(err));
  t.regex(err.message, /did not answer within 0\.3 s; it is not running/);
  t.true(ms >= 250 && ms < 2000, `${ms} ms`);
  await agent.close();
});

test('garbage without our SESSION frame, however much, ends at the answer deadline', async (t) => {
  let flood: NodeJS.Timeout | undefined;
  const agent = await fakeAgent((_frames, sock) => {
    if (flood) return;
    // frames of another session and noise, 64 KiB every few ms
    const junk = Buffer.concat([sessionFrame(1), encodeFrame(FrameType.Stdout, Buffer.alloc(60_000, 0x41)), Buffer.alloc(4000, 0xff)]);
    flood = setInterval(() => sock.write(junk), 2);
  });
  const { ms, result } = await timed(runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST));
  clearInterval(flood);
  t.regex(rejection(result).message, /did not answer within/);
  t.true(ms < 2000, `${ms} ms`);
  await agent.close();
});

test('a frame cut short and then silence: AgentConnectionError at the frame deadline', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length !== 2) return;
    // a STDOUT frame announcing 1000 bytes, 10 of which come
    sock.write(Buffer.concat([hello(frames), Buffer.from([FrameType.Stdout, 0, 0, 0x03, 0xe8]), Buffer.alloc(10, 0x42)]));
  });
  const { ms, result } = await timed(runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST));
  const err = rejection(result);
  t.true(err instanceof AgentConnectionError, String(err));
  t.regex(err.message, /sent part of a frame and nothing for 0\.3 s/);
  t.true(ms < 2000, `${ms} ms`);
  await agent.close();
});

test('a silent but well-framed session is not cut: only an incomplete frame has a deadline', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length !== 2) return;
    sock.write(hello(frames));
    setTimeout(() => sock.write(encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 4]))), 800);
  });
  t.is(await runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST), 4);
  await agent.close();
});

for (const [name, bytes, re] of [
  ['an oversized frame', Buffer.from([FrameType.Stdout, 0x00, 0x10, 0x00, 0x01]), /exceeds/],
  ['an unknown frame type', Buffer.from([0x42, 0, 0, 0, 0]), /unknown frame type/],
  ['a host-to-guest frame', encodeFrame(FrameType.Exec, Buffer.alloc(3)), /host-to-guest frame/],
  ['an EXIT status no process can exit with', encodeFrame(FrameType.Exit, Buffer.from([0, 0, 1, 0])), /not an exit status/],
  ['an ERROR status that is not 125-127', encodeFrame(FrameType.Error, Buffer.from([0, 0, 0, 0, 0x68, 0x69])), /not one of 125, 126, 127/],
  ['a short EXIT', encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0])), /expected 4/],
] as const) {
  test(`${name} from the guest is a protocol error, at once`, async (t) => {
    const agent = await fakeAgent((frames, sock) => {
      if (frames.length === 2) sock.write(Buffer.concat([hello(frames), bytes]));
    });
    const slow = { answerTimeoutMs: 10_000, frameTimeoutMs: 10_000 };
    const { ms, result } = await timed(runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, slow));
    const err = rejection(result);
    t.true(err instanceof AgentProtocolError, String(err));
    t.regex(err.message, re);
    t.true(ms < 5000, `${ms} ms: at once, not at a deadline`);
    await agent.close();
  });
}

test('an ERROR message reaches the user as one line of at most 1 KiB, control characters escaped', async (t) => {
  const evil = `fake\n\x1b[2J\x1b]0;title\x07stage1: everything is fine\r${'x'.repeat(5000)}`;
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length === 2) sock.write(Buffer.concat([hello(frames), encodeFrame(FrameType.Error, Buffer.concat([Buffer.from([0, 0, 0, 126]), Buffer.from(evil)]))]));
  });
  const err = rejection((await timed(runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST))).result);
  t.true(err instanceof AgentExecError);
  t.is((err as AgentExecError).exitCode, 126);
  // eslint-disable-next-line no-control-regex
  t.notRegex(err.message, /[\x00-\x1f\x7f]/);
  t.true(err.message.startsWith('rkt enter: fake\\x0a\\x1b[2J\\x1b]0;title\\x07stage1: everything is fine\\x0dxxx'));
  t.true(err.message.length < 1024 + 200, `${err.message.length} characters`);
  t.is(guestText('\u009b31m'), '\\x9b31m', 'C1 controls too (CSI)');
  await agent.close();
});

test('a flood of output is read no faster than the caller takes it', async (t) => {
  const chunk = encodeFrame(FrameType.Stdout, Buffer.alloc(256 * 1024, 0x61));
  let offered = 0;
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length !== 2) return;
    sock.write(hello(frames));
    const pump = (): void => {
      // keep writing while the host takes it; stop at 64 MiB
      while (offered < 64 * 1024 * 1024 && sock.write(chunk)) offered += chunk.length;
      if (offered < 64 * 1024 * 1024) sock.once('drain', pump);
    };
    pump();
  });
  const out = new PassThrough({ highWaterMark: 64 * 1024 }); // nobody reads it
  const ac = new AbortController();
  const run = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: out, stderr: sink() }, { ...FAST, signal: ac.signal });
  await new Promise((r) => setTimeout(r, 1000));
  const held = out.writableLength + out.readableLength;
  t.true(held < 4 * 1024 * 1024, `the host holds ${held} bytes of output`);
  t.true(offered < 32 * 1024 * 1024, `the guest could write ${offered} bytes`);
  ac.abort();
  t.true(rejection((await timed(run)).result) instanceof AgentConnectionError);
  await agent.close();
});

test('signals: the first is passed on, a second a second later disconnects; before the answer, the first does', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length === 2) sock.write(hello(frames));
  });
  const run = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, { forwardSignals: ['SIGUSR2'] });
  await new Promise((r) => setTimeout(r, 200));
  process.emit('SIGUSR2', 'SIGUSR2');
  process.emit('SIGUSR2', 'SIGUSR2'); // the same one twice (terminal and stage0)
  await new Promise((r) => setTimeout(r, 1100));
  t.deepEqual(agent.received.filter((f) => f.type === FrameType.Signal).map((f) => f.payload[0]), [os.constants.signals.SIGUSR2, os.constants.signals.SIGUSR2]);
  process.emit('SIGUSR2', 'SIGUSR2');
  const err = rejection((await timed(run)).result);
  t.true(err instanceof AgentInterruptedError, String(err));
  t.is((err as AgentInterruptedError).exitCode, 128 + os.constants.signals.SIGUSR2);
  t.is(process.listenerCount('SIGUSR2'), 0, 'handlers removed');

  const silent = await fakeAgent(() => {});
  const early = runInGuest(silent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, { forwardSignals: ['SIGUSR2'] });
  await new Promise((r) => setTimeout(r, 100));
  process.emit('SIGUSR2', 'SIGUSR2');
  const { ms, result } = await timed(early);
  t.regex(rejection(result).message, /SIGUSR2 before the command started/);
  t.true(ms < 500, `${ms} ms`);
  await agent.close();
  await silent.close();
});

test('host clients take turns: the second waits for the first session to end, then runs; waiting can be aborted', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    const execs = frames.filter((f) => f.type === FrameType.Exec);
    const mine = execs.at(-1)!;
    if (frames.at(-1)?.type !== FrameType.StdinEof) return;
    const status = execs.length; // the session's number: 1, 2, 3
    sock.write(sessionFrame(decodeExec(mine.payload).session));
    const holdMs = [0, 600, 0, 500][status] ?? 0;
    setTimeout(() => sock.write(encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, status]))), holdMs);
  });
  const order: string[] = [];
  const first = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }).then((s) => (order.push('first'), s));
  await new Promise((r) => setTimeout(r, 100));
  let waited = 0;
  const second = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, { onWait: () => waited++ }).then((s) => (order.push('second'), s));
  await new Promise((r) => setTimeout(r, 200));
  t.is(agent.sockets.length, 1, 'the second has not connected while the first runs');
  t.deepEqual(await Promise.all([first, second]), [1, 2]);
  t.deepEqual(order, ['first', 'second']);
  t.is(waited, 1);

  const holder = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, FAST).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 50));
  const ac = new AbortController();
  const waiting = runInGuest(agent.socketPath, REQ, { stdin: null, stdout: sink(), stderr: sink() }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  const { ms, result } = await timed(waiting);
  t.regex(rejection(result).message, /aborted/);
  t.true(ms < 1000, `${ms} ms`);
  await holder;
  await agent.close();
});

// ATTACH sessions (rkt attach, --interactive) meet the same guest.

function attachHello(frames: Frame[]): Buffer {
  const a = frames.find((f) => f.type === FrameType.Attach);
  if (a === undefined) throw new Error('no ATTACH yet');
  return sessionFrame(decodeAttach(a.payload).session);
}

const ATTACH = { app: 'a', stdin: false, stdout: true, stderr: true };

test('attach: a guest that breaks the framing after answering fails the attach with one line', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    const h = Buffer.alloc(5);
    h[0] = FrameType.Stdout;
    h.writeUInt32BE(0xffffffff, 1);
    sock.write(Buffer.concat([attachHello(frames), h]));
  });
  const { ms, result } = await timed(attachToApp(agent.socketPath, ATTACH, false, { stdin: null, stdout: sink(), stderr: sink() }, { ...FAST, who: 'rkt attach' }));
  const err = rejection(result);
  t.true(err instanceof AgentProtocolError, String(err));
  t.is(err.message, "rkt attach: the pod's guest agent broke the protocol: frame of 4294967295 bytes exceeds 1048576");
  t.true(ms < 2000, `${ms} ms`);
  await agent.close();
});

test('attach: a refusal is one printable line; a session without stdin never sends input or its end', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    sock.write(Buffer.concat([attachHello(frames), encodeFrame(FrameType.Error, Buffer.concat([Buffer.from([0, 0, 0, 125]), Buffer.from('no\x1b[2J streams\n')]))]));
  });
  const err = rejection((await timed(attachToApp(agent.socketPath, ATTACH, false, { stdin: null, stdout: sink(), stderr: sink() }, { ...FAST, who: 'rkt attach' }))).result);
  t.true(err instanceof AgentExecError);
  t.is(err.message, `rkt attach: ${guestText('no\x1b[2J streams\n')}`);
  t.deepEqual(
    agent.received.map((f) => f.type),
    [FrameType.Attach],
  );
  await agent.close();
});

test('attach: output flows until the pod goes away ("closed") or the user lets go ("detached"), which never kills anything', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length === 1) sock.write(Buffer.concat([attachHello(frames), encodeFrame(FrameType.Stdout, Buffer.from('hello\n'))]));
  });
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const abort = new AbortController();
  const p = attachToApp(agent.socketPath, ATTACH, false, { stdin: null, stdout: out, stderr: sink() }, { ...FAST, signal: abort.signal });
  while (!text.includes('hello')) await new Promise((r) => setTimeout(r, 10));
  abort.abort();
  t.is(await p, 'detached');
  t.false(agent.received.some((f) => f.type === FrameType.Signal), 'no signal for the app');

  const closing = await fakeAgent((frames, sock) => sock.end(attachHello(frames)));
  t.is(await attachToApp(closing.socketPath, ATTACH, false, { stdin: null, stdout: sink(), stderr: sink() }, FAST), 'closed');
  await closing.close();
  await agent.close();
});

test('sessions take the first free port: a second client does not wait for the first', async (t) => {
  const held: net.Socket[] = [];
  const one = await fakeAgent((frames, sock) => {
    held.push(sock); // answers nothing: the first session stays open
    void frames;
  });
  const two = await fakeAgent((frames, sock) => sock.write(Buffer.concat([hello(frames), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 7]))])));
  const abort = new AbortController();
  const first = runInGuest([one.socketPath, two.socketPath], REQ, { stdin: null, stdout: sink(), stderr: sink() }, { signal: abort.signal });
  first.catch(() => {});
  while (one.received.length === 0) await new Promise((r) => setTimeout(r, 10));
  let waited = false;
  t.is(await runInGuest([one.socketPath, two.socketPath], REQ, { stdin: null, stdout: sink(), stderr: sink() }, { ...FAST, onWait: () => (waited = true) }), 7);
  t.false(waited);
  abort.abort();
  await t.throwsAsync(first, { instanceOf: AgentConnectionError });
  await one.close();
  await two.close();
});
