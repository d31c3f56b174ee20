import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import fc from 'fast-check';
import { AgentConnectionError } from '../../stage1-kvm/agent-client.js';
import { AgentProtocolError, encodeFrame, FrameType, sessionFrame } from '../../stage1-kvm/agent-protocol.js';
import { appRequest, appRequestProblem, decodeApp, encodeApp, parseGuestState, type AppRequest } from '../../stage1-kvm/agent-app.js';
import { fakeAgent } from '../helpers/fake-agent.js';
import { assertTypedError, fuzz, fuzzParams, withinMs } from '../helpers/fuzz.js';
import { REPO } from '../helpers/rkt.js';

// The APP request of the guest agent protocol (a mutable kvm pod's apps):
// what the host refuses to send, what the agent refuses to take (its C
// judge, app-request.c, fuzzed under the sanitizers with the host's
// verdicts beside it), and the guest's answer as the host reads it.

const AGENT_DIR = path.join(REPO, 'guest', 'agent');

const add: AppRequest = {
  op: 'add',
  app: 'web',
  io: 'stream null log',
  units: [
    ['web.service', '[Service]\nExecStart=/bin/true\n'],
    ['web.pre-start.service', '[Service]\n'],
    ['web.service.d/rkt-network.conf', '[Unit]\n'],
  ],
  binds: [{ path: '/opt/stage2/web/rootfs/data', readOnly: true }],
};

test('an APP request round-trips; the host refuses, before sending, what the agent would refuse', (t) => {
  t.deepEqual(decodeApp(encodeApp(add, 42)), { request: add, session: 42 });
  const refused: [Partial<AppRequest>, RegExp][] = [
    [{ app: '../x' }, /invalid app name/],
    [{ app: 'Web' }, /invalid app name/],
    [{ app: 'a'.repeat(201) }, /invalid app name/],
    [{ io: 'stream stream' }, /stream modes/],
    [{ units: [['db.service', '']] }, /not one of app web's/],
    [{ units: [['web.service/../../x.conf', '']] }, /not one of app web's/],
    [{ units: [['web.service.d/a/b.conf', '']] }, /not one of app web's/],
    [{ units: [['web.socket', '']] }, /not one of app web's/],
    [{ binds: [{ path: '/opt/stage2/web/rootfs/../../db/rootfs', readOnly: false }] }, /not inside/],
    [{ binds: [{ path: '/opt/stage2/db/rootfs/x', readOnly: false }] }, /not inside/],
    [{ binds: [{ path: '/opt/stage2/web/rootfs//x', readOnly: false }] }, /not inside/],
    [{ binds: [{ path: '/opt/stage2/web/rootfs/x\ny', readOnly: false }] }, /not inside/],
    [{ units: Array.from({ length: 17 }, (_, i): [string, string] => [`web.h${i}.service`, '']) }, /at most 16/],
    [{ op: 'start' }, /only add carries/],
    [{ op: 'ping' }, /a ping names no app/],
  ];
  for (const [change, re] of refused) {
    const req = { ...add, ...change } as AppRequest;
    t.regex(appRequestProblem(req) ?? '', re, JSON.stringify(change));
    t.throws(() => encodeApp(req, 1), { instanceOf: RangeError, message: re });
  }
  t.is(appRequestProblem({ op: 'ping', app: '' }), undefined);
  t.is(appRequestProblem({ op: 'rm', app: 'web', units: [['web.service', ''], ['web.post-stop.service', '']] }), undefined);
});

test("the guest's state is read only in its bounded form", (t) => {
  t.deepEqual(parseGuestState('mounts=0 units=18 processes=36\n'), { mounts: 0, units: 18, processes: 36 });
  t.is(parseGuestState('mounts=0 units=18'), undefined);
  t.is(parseGuestState(`mounts=${'9'.repeat(20)} units=1 processes=1`), undefined);
  t.is(parseGuestState('mounts=-1 units=1 processes=1'), undefined);
});

/** Valid APP requests, of every operation. */
const name = fc.stringMatching(/^[a-z0-9]{1,6}([-._][a-z0-9]{1,4}){0,2}$/);
const request: fc.Arbitrary<AppRequest> = name.chain((app) =>
  fc.oneof(
    fc.constant<AppRequest>({ op: 'ping', app: '', io: '', units: [], binds: [] }),
    fc.record({
      op: fc.constantFrom<AppRequest['op']>('start', 'stop', 'rm'),
      app: fc.constant(app),
      io: fc.constant(''),
      units: fc.array(fc.stringMatching(/^[a-z]{0,5}$/).map((h): [string, string] => [h === '' ? `${app}.service` : `${app}.${h}.service`, '']), { maxLength: 3 }),
      binds: fc.constant([] as { path: string; readOnly: boolean }[]),
    }),
    fc.record({
      op: fc.constant<AppRequest['op']>('add'),
      app: fc.constant(app),
      io: fc.oneof(fc.constant(''), fc.tuple(...[0, 1, 2].map(() => fc.constantFrom('null', 'log', 'stream', 'tty'))).map((w) => w.join(' '))),
      units: fc.array(fc.tuple(fc.constantFrom(`${app}.service`, `${app}.service.d/rkt-network.conf`, `${app}.pre-start.service`), fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'))), { maxLength: 4 }),
      binds: fc.array(fc.record({ path: fc.stringMatching(/^[a-z0-9 ]{1,8}(\/[a-z0-9]{1,8}){0,2}$/).map((p) => `/opt/stage2/${app}/rootfs/${p}`), readOnly: fc.boolean() }), { maxLength: 3 }),
    }),
  ),
);

/** A payload with some bytes changed: reaches deeper than random bytes alone. */
const mutated = fc.tuple(request, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 })).map(([req, edits]) => {
  const p = encodeApp(req, 7);
  for (const [at, byte] of edits) p[at % p.length] = byte;
  return p;
});
const payloads = fc.oneof(request.map((r) => encodeApp(r, 9)), mutated, fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)));

test('decodeApp inverts encodeApp, and takes arbitrary payloads without anything but an AgentProtocolError, quickly', (t) => {
  fuzz(
    t,
    fc.property(request, fc.nat(), (req, session) => {
      const back = decodeApp(encodeApp(req, session));
      if (back.session !== session || JSON.stringify(back.request) !== JSON.stringify(req)) throw new Error(`round trip changed ${JSON.stringify(req)} into ${JSON.stringify(back.request)}`);
    }),
    fuzzParams(),
  );
  fuzz(
    t,
    fc.property(payloads, (p) => {
      try {
        withinMs(1000, 'decodeApp', () => decodeApp(p));
      } catch (err) {
        assertTypedError(err, AgentProtocolError, p);
      }
    }),
    fuzzParams(),
  );
});

test("the agent's judge of APP requests (app-request.c, under ASan and UBSan) takes exactly what the host's takes", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-app-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'test-app-request');
  const cc = await execa('gcc', ['-std=gnu11', '-Wall', '-Wextra', '-O1', '-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-o', bin, ...['test-app-request.c', 'app-request.c', 'request.c'].map((f) => path.join(AGENT_DIR, f))], { reject: false, all: true });
  if (cc.exitCode !== 0) {
    t.fail(`gcc failed (gcc, libc6-dev and the sanitizer runtimes libasan and libubsan are needed; scripts/setup.sh installs them):\n${cc.all}`);
    return;
  }
  const samples = fc.sample(payloads, { seed: fuzzParams().seed!, numRuns: Math.max(300, fuzzParams().numRuns! * 3) });
  // every operation accepted at least once, so that agreement is not only on refusals
  samples.push(...['ping', 'start', 'stop', 'rm'].map((op) => encodeApp({ op: op as AppRequest['op'], app: op === 'ping' ? '' : 'web' }, 3)), encodeApp(add, 3));
  const host = samples.map((p) => {
    try {
      decodeApp(p);
      return '1';
    } catch {
      return '0';
    }
  });
  const r = await execa(bin, [], { input: samples.map((p) => p.toString('hex')).join('\n') + '\n', reject: false, all: true });
  t.is(r.exitCode, 0, `the agent's parser crashed or a sanitizer fired:\n${r.all}`);
  const agent = String(r.stdout).split('\n');
  const differ = samples.map((p, i) => ({ p: p.toString('hex'), host: host[i], agent: agent[i] })).filter((x) => x.host !== x.agent);
  t.deepEqual(differ, [], 'host and agent agree on every payload');
  t.true(host.filter((v) => v === '1').length >= 5 && host.filter((v) => v === '0').length >= 5, 'both verdicts occur');
});

// The guest's answer to an APP request is hostile input like any other
// (a root app may have taken the agent's port): bounded, one printable line.

/** A fake agent that answers every APP request with `answer(session)`. */
async function answering(t: ExecutionContext, answer: (session: number) => Buffer[]): Promise<string> {
  const agent = await fakeAgent((frames, sock) => {
    const f = frames.find((x) => x.type === FrameType.App);
    if (f === undefined || (sock as net.Socket & { answered?: boolean }).answered) return;
    (sock as net.Socket & { answered?: boolean }).answered = true;
    for (const b of answer(f.payload.readUInt32BE(2))) sock.write(b);
  });
  t.teardown(agent.close);
  return agent.socketPath;
}

test('a flood of output from the guest is cut to a few KiB; its error is one printable line', async (t) => {
  const flood = await answering(t, (s) => [sessionFrame(s), ...Array.from({ length: 64 }, () => encodeFrame(FrameType.Stdout, Buffer.alloc(65536, 0x41))), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 0]))]);
  const out = await appRequest([flood], { op: 'ping', app: '' }, { what: 'ping' });
  t.true(out.length <= 4096, `kept ${out.length} bytes`);
  const liar = await answering(t, (s) => [sessionFrame(s), encodeFrame(FrameType.Stderr, Buffer.from(`fine\n\x1b[2J\x1b]0;owned\x07${'x'.repeat(100_000)}\r\nfake line\n`)), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 1]))]);
  const err = await t.throwsAsync(appRequest([liar], { op: 'start', app: 'web' }, { what: 'cannot start app web' }));
  t.regex(err!.message, /^cannot start app web: the guest says: /);
  t.false(/[\x00-\x1f\x7f-\x9f]/.test(err!.message), 'no control character reaches the user');
  t.true(err!.message.length < 1200, `bounded: ${err!.message.length} characters`);
});

test('a guest that answers and then never ends the request is cut off by the caller\'s deadline', async (t) => {
  const mute = await answering(t, (s) => [sessionFrame(s)]);
  const t0 = Date.now();
  await t.throwsAsync(appRequest([mute], { op: 'stop', app: 'web' }, { what: 'cannot stop app web', signal: AbortSignal.timeout(300) }), { instanceOf: AgentConnectionError });
  t.true(Date.now() - t0 < 5000);
  const none = await answering(t, () => []);
  await t.throwsAsync(appRequest([none], { op: 'ping', app: '' }, { what: 'ping', answerTimeoutMs: 300 }), { instanceOf: AgentConnectionError });
});
