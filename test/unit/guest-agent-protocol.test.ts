import test from 'ava';
import { fakeAgent } from '../helpers/fake-agent.js';
import { PassThrough, Readable } from 'node:stream';
import {
  AgentConnectionError,
  AgentExecError,
  AgentProtocolError,
  FRAME_MAX_PAYLOAD,
  FrameDecoder,
  FrameType,
  decodeExec,
  encodeExec,
  encodeFrame,
  findSessionStart,
  runInGuest,
  sessionFrame,
  type ExecRequest,
  type Frame,
} from '../../stage1-kvm/agent-client.js';

test('a frame is type byte, u32 big-endian length, payload', (t) => {
  t.deepEqual([...encodeFrame(FrameType.Stdin, Buffer.from('hi'))], [0x02, 0, 0, 0, 2, 0x68, 0x69]);
  t.deepEqual([...encodeFrame(FrameType.StdinEof)], [0x03, 0, 0, 0, 0]);
  t.throws(() => encodeFrame(FrameType.Stdin, Buffer.alloc(FRAME_MAX_PAYLOAD + 1)), { instanceOf: RangeError });
});

// Byte layouts of every frame are the golden vectors' business (guest-agent-vectors.test.ts).

test('EXEC defaults: root, /, no tty, empty environment; decodeExec inverts encodeExec', (t) => {
  const req: ExecRequest = { app: 'web', argv: ['sh', '-c', 'echo é'] };
  t.deepEqual(decodeExec(encodeExec(req, 42)), {
    request: { app: 'web', argv: ['sh', '-c', 'echo é'], env: [], uid: 0, gid: 0, supplementaryGids: [], cwd: '/', tty: false, rows: 0, cols: 0 },
    session: 42,
  });
});

test('EXEC requests the guest could not honour are refused before sending', (t) => {
  t.throws(() => encodeExec({ app: 'a', argv: [] }, 1), { instanceOf: RangeError });
  t.throws(() => encodeExec({ app: 'a', argv: [''] }, 1), { instanceOf: RangeError });
  t.throws(() => encodeExec({ app: 'a', argv: ['/bin/x\0y'] }, 1), { instanceOf: RangeError, message: /NUL/ });
  t.throws(() => encodeExec({ app: '../etc', argv: ['/bin/sh'] }, 1), { instanceOf: RangeError });
  t.throws(() => encodeExec({ app: 'a', argv: ['/bin/sh'], uid: -1 }, 1), { instanceOf: RangeError });
  t.throws(() => encodeExec({ app: 'a', argv: ['/bin/sh'], gid: 2 ** 32 }, 1), { instanceOf: RangeError });
});

test('decodeExec rejects another protocol version and stray bytes', (t) => {
  const p = encodeExec({ app: 'a', argv: ['/x'] }, 1);
  t.throws(() => encodeExec({ app: 'a', argv: ['/x'] }, 2 ** 32), { instanceOf: RangeError });
  const v2 = Buffer.from(p);
  v2[0] = 2;
  t.throws(() => decodeExec(v2), { instanceOf: AgentProtocolError, message: /version 2/ });
  t.throws(() => decodeExec(Buffer.concat([p, Buffer.from([0])])), { instanceOf: AgentProtocolError });
  t.throws(() => decodeExec(p.subarray(0, p.length - 1)), { instanceOf: AgentProtocolError });
});

test('FrameDecoder reassembles frames from any chunking', (t) => {
  const stream = Buffer.concat([
    encodeFrame(FrameType.Stdout, Buffer.from('out')),
    encodeFrame(FrameType.Stderr, Buffer.alloc(0)),
    encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 3])),
  ]);
  const whole = new FrameDecoder().push(stream);
  t.deepEqual(whole.map((f) => f.type), [FrameType.Stdout, FrameType.Stderr, FrameType.Exit]);
  t.is(whole[0].payload.toString(), 'out');

  const d = new FrameDecoder();
  const byByte: Frame[] = [];
  for (const b of stream) byByte.push(...d.push(Buffer.from([b])));
  t.deepEqual(byByte, whole);
  t.is(d.buffered, 0);
});

test('findSessionStart skips what a previous session left, even cut mid-frame', (t) => {
  const stale = encodeFrame(FrameType.Stdout, Buffer.from('old output'));
  const bytes = Buffer.concat([stale.subarray(3), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 9])), sessionFrame(7), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 0]))]);
  const start = findSessionStart(bytes, 7);
  t.deepEqual(new FrameDecoder().push(bytes.subarray(start)).map((f) => f.type), [FrameType.Exit]);
  t.is(findSessionStart(bytes, 8), -1);
  t.deepEqual([...sessionFrame(0x01020304)], [0x80, 0, 0, 0, 4, 1, 2, 3, 4]);
});

// --- runInGuest against a fake agent speaking the guest side ----------------------

/** The SESSION frame answering the EXEC among `frames`: what a real agent sends first. */
function hello(frames: Frame[]): Buffer {
  const exec = frames.find((f) => f.type === FrameType.Exec);
  if (exec === undefined) throw new Error('no EXEC yet');
  return sessionFrame(decodeExec(exec.payload).session);
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

test('runInGuest sends EXEC and stdin, writes stdout/stderr, resolves with the exit status', async (t) => {
  let answered = false;
  const agent = await fakeAgent((frames, sock) => {
    // answer once the whole of stdin has arrived: uppercase it to stdout
    if (answered || !frames.some((f) => f.type === FrameType.StdinEof)) return;
    answered = true;
    const input = Buffer.concat(frames.filter((f) => f.type === FrameType.Stdin).map((f) => f.payload)).toString();
    // what a session whose host went away left, cut mid-frame, is skipped
    sock.write(encodeFrame(FrameType.Stdout, Buffer.from('stale output')).subarray(2));
    sock.write(encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 99])));
    sock.write(hello(frames));
    sock.write(encodeFrame(FrameType.Stdout, Buffer.from(input.toUpperCase())));
    sock.write(encodeFrame(FrameType.Stderr, Buffer.from('warning\n')));
    sock.write(encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 3])));
  });
  const out = collect();
  const err = collect();
  const req: ExecRequest = { app: 'hello', argv: ['/bin/cat'], env: ['PATH=/bin'], uid: 5, gid: 6, supplementaryGids: [7, 8], cwd: '/tmp' };
  const status = await runInGuest(agent.socketPath, req, { stdin: Readable.from([Buffer.from('hello '), Buffer.from('world')]), stdout: out.stream, stderr: err.stream });
  t.is(status, 3);
  t.is(out.text(), 'HELLO WORLD');
  t.is(err.text(), 'warning\n');
  t.is(agent.received[0].type, FrameType.Exec);
  t.deepEqual(decodeExec(agent.received[0].payload).request, { ...req, tty: false, rows: 0, cols: 0 });
  t.is(agent.received.at(-1)?.type, FrameType.StdinEof);
  await agent.close();
});

test('runInGuest with no stdin sends EOF at once', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length === 2) sock.write(Buffer.concat([hello(frames), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 0]))]));
  });
  const status = await runInGuest(agent.socketPath, { app: 'a', argv: ['/bin/true'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream });
  t.is(status, 0);
  t.deepEqual(agent.received.map((f) => f.type), [FrameType.Exec, FrameType.StdinEof]);
  await agent.close();
});

test('runInGuest finds its SESSION frame even when it arrives in pieces', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    if (frames.length !== 2) return;
    const marker = hello(frames);
    sock.write(Buffer.concat([Buffer.from([0x81, 0, 0]), marker.subarray(0, 4)]));
    setTimeout(() => sock.write(Buffer.concat([marker.subarray(4), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 5]))])), 30);
  });
  t.is(await runInGuest(agent.socketPath, { app: 'a', argv: ['/x'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream }), 5);
  await agent.close();
});

test('an ERROR frame rejects with AgentExecError carrying the status', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    const p = Buffer.concat([Buffer.from([0, 0, 0, 127]), Buffer.from('exec /bin/nope: No such file or directory')]);
    sock.write(Buffer.concat([hello(frames), encodeFrame(FrameType.Error, p)]));
  });
  const err = await t.throwsAsync(runInGuest(agent.socketPath, { app: 'a', argv: ['/bin/nope'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream }), { instanceOf: AgentExecError });
  t.is(err?.exitCode, 127);
  t.regex(err?.message ?? '', /No such file/);
  await agent.close();
});

test('the agent going away before EXIT rejects with AgentConnectionError', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    sock.write(Buffer.concat([hello(frames), encodeFrame(FrameType.Stdout, Buffer.from('partial'))]));
    sock.end();
  });
  await t.throwsAsync(runInGuest(agent.socketPath, { app: 'a', argv: ['/bin/sleep', '9'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream }), {
    instanceOf: AgentConnectionError,
  });
  await agent.close();
});

test('garbage from the agent rejects with AgentProtocolError', async (t) => {
  const agent = await fakeAgent((frames, sock) => {
    sock.write(Buffer.concat([hello(frames), Buffer.from([0x42, 0, 0, 0, 0])]));
  });
  await t.throwsAsync(runInGuest(agent.socketPath, { app: 'a', argv: ['/x'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream }), {
    instanceOf: AgentProtocolError,
  });
  await agent.close();
});

test('a missing agent socket says the pod is not running', async (t) => {
  const err = await t.throwsAsync(
    runInGuest('/nonexistent/agent.sock', { app: 'a', argv: ['/x'] }, { stdin: null, stdout: collect().stream, stderr: collect().stream }),
    { instanceOf: AgentConnectionError },
  );
  t.regex(err?.message ?? '', /is the pod running/);
});
