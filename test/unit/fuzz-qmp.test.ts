import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import fc from 'fast-check';
import { QmpClient, QmpError, QmpProtocolError } from '../../stage1-kvm/qmp.js';
import { LineSplitter } from '../../stage1-kvm/qmp/framing.js';
import { parseGreeting, parseMessage, parseTimestamp } from '../../stage1-kvm/qmp/wire.js';
import { assertTypedError, fuzz, fuzzAsync, fuzzParams, withinMs } from '../helpers/fuzz.js';

// Property tests of the QMP client's reading of what qemu sends: line
// splitting, message decoding, the greeting and timestamps. qemu relays what
// the guest makes it say, and a wrong socket may hold anything.

/** What LineSplitter must return: the complete lines of the whole input, CR and blanks dropped. */
function modelLines(chunks: string[]): string[] {
  const parts = chunks.join('').split('\n');
  parts.pop();
  return parts.map((p) => (p.endsWith('\r') ? p.slice(0, -1) : p)).filter((l) => l.trim() !== '');
}

const qmpText = fc.array(fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('\n', '\r\n', '\r', ' \n', '{"a":1}\r\n')), { maxLength: 30 });

test('LineSplitter: the lines of the whole input, whatever the chunking', (t) => {
  fuzz(
    t,
    fc.property(qmpText, fc.array(fc.nat(), { maxLength: 10 }), (pieces, cuts) => {
      const text = pieces.join('');
      const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
      const chunks: string[] = [];
      let at = 0;
      for (const p of [...points, text.length]) {
        chunks.push(text.slice(at, p));
        at = p;
      }
      const s = new LineSplitter(1 << 20);
      const got = chunks.flatMap((c) => s.push(c));
      const want = modelLines(chunks);
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      if (s.remainder !== text.slice(text.lastIndexOf('\n') + 1)) throw new Error(`remainder ${JSON.stringify(s.remainder)}`);
    }),
  );
});

test('LineSplitter: never returns nor keeps more than its limit, and refuses with RangeError', (t) => {
  fuzz(
    t,
    fc.property(qmpText, fc.integer({ min: 1, max: 40 }), (chunks, max) => {
      const s = new LineSplitter(max);
      for (const c of chunks) {
        let lines: string[];
        try {
          lines = s.push(c);
        } catch (err) {
          assertTypedError(err, RangeError, chunks);
          return;
        }
        for (const l of lines) if (l.length > max) throw new Error(`line of ${l.length} characters passed a limit of ${max}`);
        if (s.remainder.length > max) throw new Error(`${s.remainder.length} characters kept, limit ${max}`);
      }
    }),
  );
});

test('LineSplitter: a long line in many chunks costs linear time', (t) => {
  fuzz(
    t,
    fc.property(fc.integer({ min: 1, max: 64 }), (kib) => {
      const s = new LineSplitter(64 * 1024 * 1024);
      const chunk = 'x'.repeat(kib * 1024);
      const lines = withinMs(3000, `an 8 MiB line in ${kib} KiB chunks`, () => {
        for (let sent = 0; sent < 8 * 1024 * 1024; sent += chunk.length) s.push(chunk);
        return s.push('\r\n');
      });
      if (lines.length !== 1) throw new Error(`${lines.length} lines`);
    }),
    { ...fuzzParams(), numRuns: 2 },
  );
});

/** Text a peer could send: JSON of any shape (deeply nested too), near-JSON and garbage. */
const peerLine = fc.oneof(
  fc.json({ depthSize: 'medium' }),
  fc.jsonValue().map((v) => JSON.stringify({ QMP: v })),
  fc.jsonValue().map((v) => JSON.stringify({ event: 'SHUTDOWN', data: v, timestamp: v })),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.integer({ min: 1, max: 200_000 }).map((n) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`),
  fc.integer({ min: 1, max: 200_000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`),
);

test('parseMessage, parseGreeting, parseTimestamp: any line gives a message, a greeting or not, or a QmpProtocolError', (t) => {
  fuzz(
    t,
    fc.property(peerLine, (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = withinMs(2000, 'parseMessage', () => parseMessage(line, '/run/qmp.sock'));
      } catch (err) {
        assertTypedError(err, QmpProtocolError, line);
        return;
      }
      const g = parseGreeting(msg);
      if (g !== undefined && (typeof g.version.qemu.major !== 'number' || !Array.isArray(g.capabilities))) throw new Error('malformed greeting accepted');
      const ts = parseTimestamp(msg.timestamp);
      if (typeof ts.seconds !== 'number' || typeof ts.microseconds !== 'number') throw new Error('malformed timestamp');
    }),
  );
});

test('QmpClient: whatever a peer sends instead of a greeting, connect fails with a QmpError and nothing throws elsewhere', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'rkt-qmp-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let n = 0;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => void uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  t.teardown(() => process.off('uncaughtException', onUncaught));
  await fuzzAsync(
    t,
    fc.asyncProperty(fc.array(peerLine, { minLength: 1, maxLength: 3 }), async (lines) => {
      const sock = join(dir, `q${n++}.sock`);
      const server = net.createServer((conn) => {
        conn.on('error', () => undefined);
        conn.end(lines.map((l) => `${l}\r\n`).join(''));
      });
      await new Promise<void>((r) => server.listen(sock, r));
      try {
        const client = await QmpClient.connect(sock, { timeoutMs: 2000 });
        await client.close();
        if (!lines.some((l) => l.includes('QMP'))) throw new Error('connected without a greeting');
      } catch (err) {
        assertTypedError(err, QmpError, lines);
      } finally {
        server.close();
      }
      if (uncaught.length > 0) throw uncaught[0];
    }),
    fuzzParams(0.3),
  );
});
