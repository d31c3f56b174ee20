// Both codecs of the guest agent protocol against the one set of golden
// vectors, guest/agent/vectors.txt (its syntax is described there): the
// host's TypeScript codec here, the agent's C codec through
// guest/agent/test-vectors.c, compiled with gcc.

import test from 'ava';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  AgentProtocolError,
  FrameDecoder,
  FrameType,
  decodeAttach,
  decodeExec,
  decodeGuestFrame,
  decodeHostFrame,
  encodeAttach,
  encodeExec,
  encodeFrame,
  encodeResize,
  sessionFrame,
  type Frame,
  type FrameTypeCode,
  type GuestMessage,
  type HostMessage,
} from '../../stage1-kvm/agent-client.js';
import { REPO } from '../helpers/rkt.js';
import { decodeApp, encodeApp, type AppRequest } from '../../stage1-kvm/agent-app.js';

const AGENT_DIR = path.join(REPO, 'guest/agent');
const VECTORS = path.join(AGENT_DIR, 'vectors.txt');

type Verdict = 'frame' | 'incomplete' | 'error' | 'refused';

interface Vector {
  name: string;
  line: number;
  dir: 'h2g' | 'g2h';
  bytes: Buffer;
  verdict: Verdict;
  type: string | undefined;
  /** The meaning: each key's values, strings as their bytes. */
  fields: Map<string, Buffer[]>;
}

// The file is read as latin1 so that one character is one byte: \xHH
// escapes and raw bytes then mean the same thing.
function tokenize(line: string, where: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  for (;;) {
    while (i < line.length && /\s/.test(line[i])) i++;
    if (i >= line.length || line[i] === '#') return tokens;
    if (line[i] !== '"') {
      const start = i;
      while (i < line.length && !/\s/.test(line[i])) i++;
      tokens.push(line.slice(start, i));
      continue;
    }
    let out = '';
    for (i++; ; ) {
      const c = line[i++];
      if (c === undefined) throw new Error(`${where}: unterminated string`);
      if (c === '"') break;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = line[i++];
      if (e === '\\' || e === '"') out += e;
      else if (e === 'n') out += '\n';
      else if (e === 't') out += '\t';
      else if (e === 'x' && /^[0-9a-fA-F]{2}$/.test(line.slice(i, i + 2))) {
        out += String.fromCharCode(parseInt(line.slice(i, i + 2), 16));
        i += 2;
      } else throw new Error(`${where}: bad escape \\${e}`);
    }
    tokens.push(out);
  }
}

function readVectors(): Vector[] {
  const vectors: Vector[] = [];
  let cur: Partial<Vector> & { fields: Map<string, Buffer[]> } = { fields: new Map() };
  const done = (): void => {
    if (cur.name === undefined) return;
    if ((cur.dir !== 'h2g' && cur.dir !== 'g2h') || cur.verdict === undefined) throw new Error(`vectors.txt:${cur.line}: ${cur.name} needs dir and verdict`);
    vectors.push({ bytes: Buffer.alloc(0), type: undefined, ...cur } as Vector);
  };
  fs.readFileSync(VECTORS, 'latin1')
    .split('\n')
    .forEach((text, i) => {
      const where = `vectors.txt:${i + 1}`;
      const [key, ...values] = tokenize(text, where);
      if (key === undefined) return;
      if (key === 'vector') {
        done();
        cur = { name: values[0], line: i + 1, fields: new Map() };
      } else if (cur.name === undefined) {
        throw new Error(`${where}: '${key}' before the first vector`);
      } else if (key === 'bytes') {
        const hex = values.join('');
        if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`${where}: not hex`);
        cur.bytes = Buffer.concat([cur.bytes ?? Buffer.alloc(0), Buffer.from(hex, 'hex')]);
      } else if (key === 'dir') cur.dir = values[0] as Vector['dir'];
      else if (key === 'verdict') cur.verdict = values[0] as Verdict;
      else if (key === 'type') cur.type = values[0];
      else cur.fields.set(key, values.map((v) => Buffer.from(v, 'latin1')));
    });
  done();
  return vectors;
}

const vectors = readVectors();

function typeCode(v: Vector): FrameTypeCode {
  const code = (FrameType as Record<string, FrameTypeCode | undefined>)[
    Object.keys(FrameType).find((k) => k.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase() === v.type) ?? ''
  ];
  if (code === undefined) throw new Error(`${v.name}: unknown type ${v.type}`);
  return code;
}

function values(v: Vector, key: string): Buffer[] {
  const f = v.fields.get(key);
  if (f === undefined) throw new Error(`${v.name}: no '${key}' line`);
  return f;
}
const bytesOf = (v: Vector, key: string): Buffer => values(v, key)[0];
const text = (v: Vector, key: string): string => bytesOf(v, key).toString('utf8');
const num = (v: Vector, key: string): number => Number(text(v, key));
const texts = (v: Vector, key: string): string[] => values(v, key).map((b) => b.toString('utf8'));

/** Pairs of a list: [a, b, c, d] -> [[a, b], [c, d]]. */
function pairs(list: string[]): [string, string][] {
  return Array.from({ length: list.length / 2 }, (_, i) => [list[2 * i]!, list[2 * i + 1]!]);
}

/** An APP vector's request, as decodeApp returns it. */
function appRequestOf(v: Vector): AppRequest {
  return {
    op: text(v, 'op') as AppRequest['op'],
    app: text(v, 'app'),
    io: text(v, 'io'),
    units: pairs(texts(v, 'units')),
    binds: pairs(texts(v, 'binds')).map(([mode, p]) => ({ readOnly: mode === 'ro', path: p })),
  };
}

/** The vector's meaning, as decodeHostFrame returns it. */
function hostMeaning(v: Vector): HostMessage {
  switch (v.type) {
    case 'EXEC':
      return {
        type: 'EXEC',
        session: num(v, 'session'),
        request: {
          app: text(v, 'app'),
          argv: texts(v, 'argv'),
          env: texts(v, 'env'),
          uid: num(v, 'uid'),
          gid: num(v, 'gid'),
          supplementaryGids: texts(v, 'groups').map(Number),
          cwd: text(v, 'cwd'),
          tty: num(v, 'tty') === 1,
          rows: num(v, 'rows'),
          cols: num(v, 'cols'),
        },
      };
    case 'STDIN':
      return { type: 'STDIN', data: bytesOf(v, 'data') };
    case 'STDIN_EOF':
      return { type: 'STDIN_EOF' };
    case 'RESIZE':
      return { type: 'RESIZE', rows: num(v, 'rows'), cols: num(v, 'cols') };
    case 'SIGNAL':
      return { type: 'SIGNAL', signal: num(v, 'signal') };
    case 'ATTACH':
      return {
        type: 'ATTACH',
        session: num(v, 'session'),
        request: { app: text(v, 'app'), stdin: num(v, 'stdin') === 1, stdout: num(v, 'stdout') === 1, stderr: num(v, 'stderr') === 1, rows: num(v, 'rows'), cols: num(v, 'cols') },
      };
    case 'APP':
      return { type: 'APP', payload: encodeApp(appRequestOf(v), num(v, 'session')) };
    default:
      throw new Error(`${v.name}: ${v.type} is not a host-to-guest type`);
  }
}

/** The vector's meaning, as decodeGuestFrame returns it. */
function guestMeaning(v: Vector): GuestMessage {
  switch (v.type) {
    case 'SESSION':
      return { type: 'SESSION', session: num(v, 'session') };
    case 'STDOUT':
    case 'STDERR':
      return { type: v.type, data: bytesOf(v, 'data') };
    case 'EXIT':
      return { type: 'EXIT', status: num(v, 'status') };
    case 'ERROR':
      return { type: 'ERROR', status: num(v, 'status'), message: text(v, 'message') };
    default:
      throw new Error(`${v.name}: ${v.type} is not a guest-to-host type`);
  }
}

/** The bytes the host sends for a meaning: what agent-client.ts does. */
function encodeHost(m: HostMessage): Buffer {
  switch (m.type) {
    case 'EXEC':
      return encodeFrame(FrameType.Exec, encodeExec(m.request, m.session));
    case 'STDIN':
      return encodeFrame(FrameType.Stdin, m.data);
    case 'STDIN_EOF':
      return encodeFrame(FrameType.StdinEof);
    case 'RESIZE':
      return encodeFrame(FrameType.Resize, encodeResize(m.rows, m.cols));
    case 'SIGNAL':
      return encodeFrame(FrameType.Signal, Buffer.from([m.signal]));
    case 'ATTACH':
      return encodeFrame(FrameType.Attach, encodeAttach(m.request, m.session));
    case 'APP':
      return encodeFrame(FrameType.App, m.payload);
  }
}

/** The bytes of a guest frame as the host's fake agents write them. */
function encodeGuest(m: GuestMessage): Buffer {
  const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
  switch (m.type) {
    case 'SESSION':
      return sessionFrame(m.session);
    case 'STDOUT':
      return encodeFrame(FrameType.Stdout, m.data);
    case 'STDERR':
      return encodeFrame(FrameType.Stderr, m.data);
    case 'EXIT':
      return encodeFrame(FrameType.Exit, u32(m.status));
    case 'ERROR':
      return encodeFrame(FrameType.Error, Buffer.concat([u32(m.status), Buffer.from(m.message)]));
  }
}

/** Frames in the bytes, or the protocol error the decoder raised. */
function frames(bytes: Buffer): { frames: Frame[]; buffered: number } | AgentProtocolError {
  const d = new FrameDecoder();
  try {
    return { frames: d.push(bytes), buffered: d.buffered };
  } catch (err) {
    if (err instanceof AgentProtocolError) return err;
    throw err;
  }
}

test('the vectors cover every frame type in its direction, and every verdict', (t) => {
  const names = (dir: string): Set<string | undefined> => new Set(vectors.filter((v) => v.dir === dir && v.verdict === 'frame').map((v) => v.type));
  t.deepEqual([...names('h2g')].sort(), ['APP', 'ATTACH', 'EXEC', 'RESIZE', 'SIGNAL', 'STDIN', 'STDIN_EOF']);
  t.deepEqual([...names('g2h')].sort(), ['ERROR', 'EXIT', 'SESSION', 'STDERR', 'STDOUT']);
  for (const dir of ['h2g', 'g2h']) {
    for (const verdict of ['incomplete', 'error']) t.true(vectors.some((v) => v.dir === dir && v.verdict === verdict), `${dir} ${verdict}`);
  }
  t.true(vectors.some((v) => v.verdict === 'refused'));
  t.is(new Set(vectors.map((v) => v.name)).size, vectors.length, 'names are unique');
});

for (const v of vectors) {
  test(`vector ${v.name} (${v.dir}, ${v.verdict})`, (t) => {
    const got = frames(v.bytes);
    const decodeAs = v.dir === 'h2g' ? decodeHostFrame : decodeGuestFrame;
    switch (v.verdict) {
      case 'incomplete':
        t.false(got instanceof AgentProtocolError, 'no protocol error');
        if (got instanceof AgentProtocolError) return;
        t.deepEqual(got.frames, []);
        t.is(got.buffered, v.bytes.length, 'every byte kept for later');
        return;
      case 'error': {
        // The decoder refuses the header, or the frame's type or payload is wrong for this direction.
        const judge = (): void => {
          if (got instanceof AgentProtocolError) throw got;
          if (got.frames.length !== 1) throw new Error(`${got.frames.length} frames where one was to be judged`);
          decodeAs(got.frames[0]);
        };
        t.throws(judge, { instanceOf: AgentProtocolError });
        return;
      }
      case 'refused': {
        t.is(v.dir, 'h2g');
        t.false(got instanceof AgentProtocolError, 'the frame itself is sound');
        if (got instanceof AgentProtocolError) return;
        t.is(got.frames.length, 1);
        t.true([FrameType.Exec, FrameType.Attach, FrameType.App].includes(got.frames[0].type as 1 | 6 | 7), 'only EXEC, ATTACH and APP can be refused');
        t.is(got.buffered, 0);
        const decode = got.frames[0].type === FrameType.Exec ? decodeExec : got.frames[0].type === FrameType.App ? decodeApp : decodeAttach;
        t.throws(() => decode(got.frames[0].payload), { instanceOf: AgentProtocolError });
        return;
      }
      case 'frame': {
        t.false(got instanceof AgentProtocolError);
        if (got instanceof AgentProtocolError) return;
        t.is(got.frames.length, 1);
        t.is(got.buffered, 0);
        t.is(got.frames[0].type, typeCode(v));
        const meaning = v.dir === 'h2g' ? hostMeaning(v) : guestMeaning(v);
        t.deepEqual(decodeAs(got.frames[0]), meaning, 'decoded');
        if (v.type === 'APP') t.deepEqual(decodeApp(got.frames[0].payload), { request: appRequestOf(v), session: num(v, 'session') }, 'the APP request decoded');
        const encoded = v.dir === 'h2g' ? encodeHost(meaning as HostMessage) : encodeGuest(meaning as GuestMessage);
        t.is(encoded.toString('hex'), v.bytes.toString('hex'), 'encoded');
        return;
      }
      default:
        t.fail(`unknown verdict ${String(v.verdict)}`);
    }
  });
}

test("the agent's C codec agrees with the same vectors (guest/agent/test-vectors.c, built with gcc)", async (t) => {
  const gcc = await execa('gcc', ['--version'], { reject: false });
  if (gcc.failed) {
    t.fail('gcc is needed to build guest/agent/test-vectors.c: install gcc and libc6-dev (scripts/setup.sh does)');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-agent-vectors-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'test-vectors');
  const sources = ['test-vectors.c', 'frame.c', 'request.c', 'app-request.c'].map((f) => path.join(AGENT_DIR, f));
  const cc = await execa('gcc', ['-std=gnu11', '-Wall', '-Wextra', '-O1', '-o', bin, ...sources], { reject: false, all: true });
  t.is(cc.exitCode, 0, `gcc failed:\n${cc.all}`);
  if (cc.exitCode !== 0) return;
  const run = await execa(bin, [VECTORS], { reject: false, all: true });
  t.is(run.exitCode, 0, run.all);
  // The C side checked as many as it should have: none silently skipped.
  const h2g = vectors.filter((v) => v.dir === 'h2g').length;
  const g2hFrames = vectors.filter((v) => v.dir === 'g2h' && v.verdict === 'frame').length;
  t.regex(
    run.stdout,
    new RegExp(`^${vectors.length} vectors: ${h2g} host-to-guest decoded, ${g2hFrames} guest-to-host encoded, ${vectors.length - h2g - g2hFrames} guest-to-host left to the host; 0 failures$`, 'm'),
  );
});
