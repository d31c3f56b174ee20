import test from 'ava';
import fc from 'fast-check';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AppStreams } from '../../src/appc/app-streams.js';
import { attachRefusal, Backlog } from '../../stage1-nspawn/attach-rules.js';
import { AppSession, type SessionHooks } from '../../stage1-nspawn/app-io-session.js';
import { decodeGuestFrame, encodeAttach, encodeFrame, encodeResize, FrameType, type GuestMessage } from '../../stage1-kvm/agent-protocol.js';
import { FrameDecoder } from '../../stage1-kvm/frame-decoder.js';
import { fuzz, fuzzParams } from '../helpers/fuzz.js';

// The nspawn relay's decisions (which attach it takes, what it keeps of
// output nobody reads) and its side of the attach framing, held to what
// the kvm guest agent answers, with hostile and malformed clients.

const STREAM: AppStreams = { stdin: 'stream', stdout: 'stream', stderr: 'stream' };
const TTY: AppStreams = { stdin: 'tty', stdout: 'tty', stderr: 'log' };
const req = (over: Partial<{ app: string; stdin: boolean; stdout: boolean; stderr: boolean }> = {}) => ({ app: 'web', stdin: false, stdout: true, stderr: false, ...over });

test('attachRefusal: what the app offers is taken, anything else is refused in the agent\'s words', (t) => {
  t.is(attachRefusal('web', STREAM, req({ stdin: true, stderr: true }), false), undefined);
  t.is(attachRefusal('web', TTY, req({ stdin: true }), false), undefined);
  t.is(attachRefusal('web', TTY, req({ stderr: true }), false), 'the stderr of app "web" is not attachable (its mode is neither tty nor stream)');
  t.is(attachRefusal('web', { stdin: 'null', stdout: 'stream', stderr: 'log' }, req({ stdin: true }), false), 'the stdin of app "web" is not attachable (its mode is neither tty nor stream)');
  t.is(attachRefusal('web', { stdin: 'null', stdout: 'log', stderr: 'log' }, req(), false), 'app "web" has no attachable streams (run it with --stdin, --stdout or --stderr set to tty or stream)');
  t.is(attachRefusal('web', STREAM, req({ app: 'db' }), false), 'app "db" has no attachable streams (run it with --stdin, --stdout or --stderr set to tty or stream)');
  t.is(attachRefusal('web', STREAM, req(), true), 'app "web" is attached to by another session; one at a time');
});

test('Backlog keeps the newest bytes up to its size, in order, and counts what it dropped', (t) => {
  const b = new Backlog(8);
  b.push(Buffer.from('abc'));
  b.push(Buffer.from('defgh'));
  b.push(Buffer.from('ij'));
  t.is(b.length, 8);
  t.is(b.take().toString(), 'cdefghij');
  t.is(b.droppedBytes, 2);
  t.is(b.take().length, 0);
  b.push(Buffer.from('0123456789abcdef'));
  t.is(b.take().toString(), '89abcdef');
  t.throws(() => new Backlog(0), { instanceOf: RangeError });
});

test('Backlog, any pushes: what it gives is the tail of everything pushed, never more than its size', (t) => {
  fuzz(
    t,
    fc.property(fc.integer({ min: 1, max: 64 }), fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 30 }), (max, chunks) => {
      const b = new Backlog(max);
      for (const c of chunks) b.push(Buffer.from(c));
      const all = Buffer.concat(chunks.map((c) => Buffer.from(c)));
      const kept = b.take();
      return kept.length === Math.min(max, all.length) && kept.equals(all.subarray(all.length - kept.length)) && b.droppedBytes === all.length - kept.length;
    }),
    fuzzParams(),
  );
});

/** A relay session on a real socket pair, and what the relay's side saw. */
async function session(t: import('ava').ExecutionContext, streams: AppStreams, opts: { busy?: boolean; attachWaitMs?: number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-attach-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const seen = { input: [] as string[], ended: 0, resized: [] as [number, number][], attached: 0, detached: 0 };
  let current: AppSession | undefined;
  const hooks: SessionHooks = {
    busy: () => opts.busy === true,
    attached: () => void seen.attached++,
    detached: () => void seen.detached++,
    input: (d) => (seen.input.push(d.toString()), true),
    inputDrain: (cb) => cb(),
    inputEnd: () => void seen.ended++,
    resize: (c, r) => void seen.resized.push([c, r]),
  };
  const server = net.createServer((c) => {
    c.on('error', () => undefined);
    current = new AppSession(c, 'web', streams, hooks, opts.attachWaitMs);
    current.start();
  });
  await new Promise<void>((r) => server.listen(path.join(dir, 's'), r));
  t.teardown(() => server.close());
  const client = net.createConnection(path.join(dir, 's'));
  t.teardown(() => client.destroy());
  await new Promise((r) => client.once('connect', r));
  const decoder = new FrameDecoder();
  const got: GuestMessage[] = [];
  client.on('data', (d: Buffer) => got.push(...decoder.push(d).map(decodeGuestFrame)));
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  client.on('error', () => undefined);
  return { client, got, seen, closed, relay: () => current! };
}

const attachFrame = (r: ReturnType<typeof req>, sessionId = 7) => encodeFrame(FrameType.Attach, encodeAttach(r, sessionId));
const settle = () => new Promise((r) => setTimeout(r, 100));

test('a session answers SESSION, passes input, its end and resizes, and sends output only of the streams asked for', async (t) => {
  const s = await session(t, STREAM);
  s.client.write(Buffer.concat([attachFrame(req({ stdin: true, stdout: true }), 42), encodeFrame(FrameType.Stdin, Buffer.from('hi\n')), encodeFrame(FrameType.StdinEof), encodeFrame(FrameType.Resize, encodeResize(30, 100)), encodeFrame(FrameType.Signal, Buffer.from([15]))]));
  await settle();
  t.deepEqual(s.got, [{ type: 'SESSION', session: 42 }]);
  t.deepEqual(s.seen.input, ['hi\n']);
  t.is(s.seen.ended, 1);
  t.deepEqual(s.seen.resized, [[100, 30]]);
  const relay = s.relay();
  t.true(relay.wants('stdout'));
  t.false(relay.wants('stderr'));
  relay.send('stdout', Buffer.alloc(200_000, 0x61));
  await settle();
  const out = Buffer.concat(s.got.flatMap((m) => (m.type === 'STDOUT' ? [m.data] : [])));
  t.is(out.length, 200_000, 'large output comes whole, in frames under the limit');
  relay.end();
  await s.closed;
  t.is(s.seen.detached, 1);
});

test('input for a stream the session did not ask for is dropped', async (t) => {
  const s = await session(t, STREAM);
  s.client.write(Buffer.concat([attachFrame(req({ stdin: false })), encodeFrame(FrameType.Stdin, Buffer.from('sneaky')), encodeFrame(FrameType.StdinEof)]));
  await settle();
  t.deepEqual(s.seen.input, []);
  t.is(s.seen.ended, 0);
});

for (const [what, streams, r, busy, message] of [
  ['a stream the app does not offer', TTY, req({ stderr: true }), false, 'the stderr of app "web" is not attachable (its mode is neither tty nor stream)'],
  ['another app', STREAM, req({ app: 'other' }), false, 'app "other" has no attachable streams (run it with --stdin, --stdout or --stderr set to tty or stream)'],
  ['a second session', STREAM, req(), true, 'app "web" is attached to by another session; one at a time'],
] as const) {
  test(`an attach to ${what} gets SESSION, ERROR 125 and the end of the connection`, async (t) => {
    const s = await session(t, streams, { busy });
    s.client.write(attachFrame(r, 9));
    await s.closed;
    t.deepEqual(s.got, [{ type: 'SESSION', session: 9 }, { type: 'ERROR', status: 125, message }]);
    t.is(s.seen.attached, 0);
  });
}

test('a client that sends anything but ATTACH first is refused; one that sends nothing is let go', async (t) => {
  const s = await session(t, STREAM);
  s.client.write(encodeFrame(FrameType.Stdin, Buffer.from('x')));
  await s.closed;
  t.deepEqual(s.got, [{ type: 'ERROR', status: 125, message: 'the relay of an app serves rkt attach only' }]);
  t.deepEqual(s.seen.input, []);

  const idle = await session(t, STREAM, { attachWaitMs: 200 });
  await idle.closed;
  t.deepEqual(idle.got, []);
});

for (const [what, bytes] of [
  ['an unknown frame type', Buffer.from([0x7f, 0, 0, 0, 0])],
  ['a frame longer than the limit', Buffer.from([FrameType.Stdin, 0x01, 0, 0, 1])],
  ['a guest-to-host frame', encodeFrame(FrameType.Stdout, Buffer.from('x'))],
  ['a RESIZE of the wrong size', encodeFrame(FrameType.Resize, Buffer.from([1, 2, 3]))],
  ['an ATTACH with a bad version', encodeFrame(FrameType.Attach, Buffer.concat([Buffer.from([9]), encodeAttach(req(), 1).subarray(1)]))],
] as const) {
  test(`a client that sends ${what} is disconnected and changes nothing`, async (t) => {
    const s = await session(t, STREAM);
    s.client.write(Buffer.concat([attachFrame(req({ stdin: true })), bytes, encodeFrame(FrameType.Stdin, Buffer.from('after'))]));
    await s.closed;
    t.deepEqual(s.seen.input, []);
    t.is(s.seen.detached, s.seen.attached, 'a session that began has ended');
  });
}

test('garbage from a client never crashes the relay: any bytes end in a closed connection', async (t) => {
  let closedRuns = 0;
  const params = fuzzParams<[Uint8Array]>(0.3);
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), async (bytes) => {
      const s = await session(t, STREAM, { attachWaitMs: 100 });
      s.client.end(Buffer.from(bytes));
      await s.closed;
      closedRuns++;
      return s.seen.input.length === 0 || s.seen.attached === 1;
    }),
    params,
  );
  t.is(closedRuns, params.numRuns ?? -1);
});
