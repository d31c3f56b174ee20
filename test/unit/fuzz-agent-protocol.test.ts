import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import {
  AgentProtocolError,
  FRAME_HEADER_BYTES,
  FRAME_MAX_PAYLOAD,
  FrameType,
  decodeAttach,
  decodeError,
  decodeExec,
  decodeExit,
  encodeAttach,
  encodeExec,
  encodeFrame,
  findSessionStart,
  type AttachRequest,
  type ExecRequest,
  type FrameTypeCode,
} from '../../stage1-kvm/agent-protocol.js';
import { FrameDecoder } from '../../stage1-kvm/frame-decoder.js';
import { assertTypedError, fuzz, fuzzParams, withinMs } from '../helpers/fuzz.js';

// Property tests of the host's side of the guest agent protocol: every byte
// the guest sends is hostile.

const types = Object.values(FrameType) as FrameTypeCode[];

/** Bytes split into chunks at arbitrary points. */
function chunked(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(at, p));
    at = p;
  }
  return out;
}

test('FrameDecoder: arbitrary bytes give frames or an AgentProtocolError, and never buffer more than one frame', (t) => {
  fuzz(
    t,
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
      const d = new FrameDecoder();
      for (const c of chunks) {
        try {
          for (const f of d.push(Buffer.from(c))) {
            if (!types.includes(f.type) || f.payload.length > FRAME_MAX_PAYLOAD) throw new Error(`bad frame ${f.type}`);
          }
        } catch (err) {
          assertTypedError(err, AgentProtocolError, chunks);
          return;
        }
        if (d.buffered >= FRAME_HEADER_BYTES + FRAME_MAX_PAYLOAD) throw new Error(`buffered ${d.buffered} bytes`);
      }
    }),
    fuzzParams(),
  );
});

test('FrameDecoder: frames come out as they went in, whatever the chunking', (t) => {
  const frame = fc.record({ type: fc.constantFrom(...types), payload: fc.uint8Array({ maxLength: 2000 }) });
  fuzz(
    t,
    fc.property(fc.array(frame, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 40 }), (frames, cuts) => {
      const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
      const d = new FrameDecoder();
      const got = chunked(wire, cuts).flatMap((c) => d.push(c));
      if (d.buffered !== 0) throw new Error('bytes left over');
      if (got.length !== frames.length) throw new Error(`${got.length} frames, expected ${frames.length}`);
      got.forEach((g, i) => {
        if (g.type !== frames[i]!.type || !g.payload.equals(Buffer.from(frames[i]!.payload))) throw new Error(`frame ${i} differs`);
      });
    }),
    fuzzParams(),
  );
});

test('FrameDecoder: a largest frame dribbled in tiny chunks costs linear time', (t) => {
  fuzz(
    t,
    fc.property(fc.integer({ min: 1, max: 16 }), (step) => {
      const wire = encodeFrame(FrameType.Stdout, Buffer.alloc(FRAME_MAX_PAYLOAD, 1));
      const d = new FrameDecoder();
      let frames = 0;
      withinMs(3000, `a ${wire.length}-byte frame in ${step}-byte chunks`, () => {
        for (let i = 0; i < wire.length; i += step) frames += d.push(wire.subarray(i, i + step)).length;
      });
      if (frames !== 1) throw new Error(`${frames} frames`);
    }),
    { ...fuzzParams(), numRuns: 2 },
  );
});

// Strings as the host gets them from a command line: well-formed UTF-16, no NUL.
const text = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\0'));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });

test('EXEC: decodeExec inverts encodeExec', (t) => {
  const request = fc.record({
    app: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/),
    argv: fc.array(text, { minLength: 1, maxLength: 6 }).filter((a) => a[0] !== ''),
    env: fc.array(text, { maxLength: 6 }),
    uid: u32,
    gid: u32,
    supplementaryGids: fc.array(u32, { maxLength: 6 }),
    cwd: text,
    tty: fc.boolean(),
    rows: u16,
    cols: u16,
  });
  fuzz(
    t,
    fc.property(request, u32, (req: Required<ExecRequest>, session) => {
      const back = decodeExec(encodeExec(req, session));
      if (back.session !== session || JSON.stringify(back.request) !== JSON.stringify(req)) {
        throw new Error(`round trip changed ${JSON.stringify(req)} into ${JSON.stringify(back.request)}`);
      }
    }),
    fuzzParams(),
  );
});

/** A request decoder takes random bytes and mutated valid payloads without anything but an AgentProtocolError, quickly. */
function fuzzDecoder(t: ExecutionContext, name: string, decode: (p: Buffer) => unknown, mutated: fc.Arbitrary<Buffer>, maxLength: number): void {
  fuzz(
    t,
    fc.property(fc.oneof(fc.uint8Array({ maxLength }).map((b) => Buffer.from(b)), mutated), (payload) => {
      try {
        withinMs(1000, name, () => decode(payload));
      } catch (err) {
        assertTypedError(err, AgentProtocolError, payload);
      }
    }),
    fuzzParams(),
  );
}

/** A valid payload with some bytes changed: reaches deeper than random bytes alone. */
function mutate(p: Buffer, edits: Array<[number, number]>): Buffer {
  const out = Buffer.from(p);
  for (const [at, byte] of edits) out[at % out.length] = byte;
  return out;
}
const edits = (n: number): fc.Arbitrary<Array<[number, number]>> => fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: n });

test('EXEC: arbitrary payloads give a request or an AgentProtocolError, quickly', (t) => {
  const mutated = fc
    .tuple(fc.array(text, { minLength: 1, maxLength: 4 }), edits(8))
    .filter(([argv]) => argv[0] !== '')
    .map(([argv, e]) => mutate(encodeExec({ app: 'app', argv, env: ['A=1'] }, 7), e));
  fuzzDecoder(t, 'decodeExec', decodeExec, mutated, 200);
});

test('ATTACH: decodeAttach inverts encodeAttach, and arbitrary payloads give a request or an AgentProtocolError, quickly', (t) => {
  const request = fc
    .record({ app: fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/), stdin: fc.boolean(), stdout: fc.boolean(), stderr: fc.boolean(), rows: u16, cols: u16 })
    .filter((r) => r.stdin || r.stdout || r.stderr);
  fuzz(
    t,
    fc.property(request, u32, (req: Required<AttachRequest>, session) => {
      const back = decodeAttach(encodeAttach(req, session));
      if (back.session !== session || JSON.stringify(back.request) !== JSON.stringify(req)) {
        throw new Error(`round trip changed ${JSON.stringify(req)} into ${JSON.stringify(back.request)}`);
      }
    }),
    fuzzParams(),
  );
  const valid = encodeAttach({ app: 'web', stdin: true, stdout: true, stderr: false }, 7);
  fuzzDecoder(t, 'decodeAttach', decodeAttach, edits(6).map((e) => mutate(valid, e)), 64);
});

test('EXIT, ERROR and the session marker: any payload gives a value or an AgentProtocolError with a printable message', (t) => {
  fuzz(
    t,
    fc.property(fc.uint8Array({ maxLength: 300 }), u32, (bytes, session) => {
      const p = Buffer.from(bytes);
      for (const decode of [decodeExit, decodeError]) {
        let v: ReturnType<typeof decode>;
        try {
          v = decode(p);
        } catch (err) {
          assertTypedError(err, AgentProtocolError, bytes);
          continue;
        }
        // the guest's message ends up in rkt enter's error
        if (typeof v === 'object') assertTypedError(new AgentProtocolError(v.message), AgentProtocolError, bytes);
      }
      const at = findSessionStart(p, session);
      if (at !== -1 && (at < 9 || at > p.length)) throw new Error(`session start ${at} out of range`);
    }),
    fuzzParams(),
  );
});
