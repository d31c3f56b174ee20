// Framing of the rkt guest agent protocol (guest/agent/PROTOCOL.md), host side.
// The guest side is C (guest/agent/); the two must agree byte for byte, so
// every layout decision is written down in PROTOCOL.md and mirrored here, and
// both are held to the same golden vectors (guest/agent/vectors.txt).
//
// A frame is: type (1 byte) + payload length (u32 big-endian) + payload.

import { RktError } from '../src/errors.js';

export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_BYTES = 5;
/** Largest payload either side accepts; STDIN/STDOUT data is split below it. */
export const FRAME_MAX_PAYLOAD = 1 << 20;
/** Chunk size for STDIN frames: big enough to be cheap, small enough to interleave. */
export const STDIN_CHUNK_BYTES = 64 * 1024;

export const FrameType = {
  // host -> guest
  Exec: 0x01,
  Stdin: 0x02,
  StdinEof: 0x03,
  Resize: 0x04,
  Signal: 0x05,
  Attach: 0x06,
  /** A mutable pod's app: add, start, stop, rm (agent-app.ts). */
  App: 0x07,
  // guest -> host
  Session: 0x80,
  Stdout: 0x81,
  Stderr: 0x82,
  Exit: 0x83,
  Error: 0x84,
} as const;
export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeCode = (typeof FrameType)[FrameTypeName];

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

export interface Frame {
  type: FrameTypeCode;
  payload: Buffer;
}

/** What to run in the guest, and as whom. */
export interface ExecRequest {
  /** App name: the command runs chrooted in /opt/stage2/<app>/rootfs. */
  app: string;
  /** argv[0] is a path inside the app rootfs, or a name looked up in env's PATH. */
  argv: string[];
  /** The complete environment ("NAME=value"); nothing is inherited from the guest. */
  env?: string[];
  uid?: number;
  gid?: number;
  supplementaryGids?: number[];
  /** Working directory inside the app rootfs; default "/". */
  cwd?: string;
  /** Run on a pseudo-terminal (stdout and stderr merged, as on any terminal). */
  tty?: boolean;
  /** Initial terminal size, with tty. */
  rows?: number;
  cols?: number;
}

/** Which of an app's own streams to attach to (rkt attach, rkt run --interactive). */
export interface AttachRequest {
  app: string;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  /** Terminal size to set, when the app has a terminal (0 or absent: leave it). */
  rows?: number;
  cols?: number;
}

/** The agent broke the framing rules, or sent something this version does not know. */
export class AgentProtocolError extends RktError {}

/** The command could not be started in the guest; exitCode is 125 (setup), 126 (not executable) or 127 (not found). */
export class AgentExecError extends RktError {}

export function encodeFrame(type: FrameTypeCode, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > FRAME_MAX_PAYLOAD) throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${FRAME_MAX_PAYLOAD}`);
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(payload.length, 1);
  return Buffer.concat([header, payload]);
}

export function u32(n: number, what: string): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`${what} must be an integer in 0..2^32-1, not ${n}`);
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function u16(n: number, what: string): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`${what} must be an integer in 0..65535, not ${n}`);
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
}

// Strings travel as u32 length + UTF-8 bytes: the guest hands them to
// execve(), so a NUL inside one would silently cut it there.
export function str(s: string, what: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.includes(0)) throw new RangeError(`${what} contains a NUL byte`);
  return Buffer.concat([u32(bytes.length, `${what} length`), bytes]);
}

function strList(list: string[], what: string): Buffer {
  return Buffer.concat([u32(list.length, `${what} count`), ...list.map((s, i) => str(s, `${what}[${i}]`))]);
}

/**
 * The EXEC payload: version, flags, session, uid, gid, rows, cols, app, cwd,
 * gids, argv, env (PROTOCOL.md). `session` is any 32-bit number the host
 * picks; the guest's SESSION frame echoes it (see findSessionStart).
 */
export function encodeExec(req: ExecRequest, session: number): Buffer {
  if (req.argv.length === 0 || req.argv[0] === '') throw new RangeError('argv must name a command');
  if (req.app === '' || req.app.includes('/') || req.app.startsWith('.')) throw new RangeError(`invalid app name "${req.app}"`);
  const gids = req.supplementaryGids ?? [];
  const payload = Buffer.concat([
    Buffer.from([PROTOCOL_VERSION, req.tty === true ? 1 : 0]),
    u32(session, 'session'),
    u32(req.uid ?? 0, 'uid'),
    u32(req.gid ?? 0, 'gid'),
    u16(req.rows ?? 0, 'rows'),
    u16(req.cols ?? 0, 'cols'),
    str(req.app, 'app'),
    str(req.cwd ?? '/', 'cwd'),
    u32(gids.length, 'supplementary gid count'),
    ...gids.map((g, i) => u32(g, `supplementaryGids[${i}]`)),
    strList(req.argv, 'argv'),
    strList(req.env ?? [], 'env'),
  ]);
  if (payload.length > FRAME_MAX_PAYLOAD) throw new RangeError(`EXEC request of ${payload.length} bytes is too large (environment too big?)`);
  return payload;
}

/**
 * Reads a payload from the other side with every length checked against
 * what is left before it is trusted, as the agent's cursor does (request.c).
 */
export class PayloadReader {
  constructor(
    private readonly p: Buffer,
    private readonly what: string,
    public off = 0,
  ) {}

  need(n: number): void {
    if (this.off + n > this.p.length) throw new AgentProtocolError(`${this.what} payload truncated at byte ${this.off}`);
  }

  u8(): number {
    this.need(1);
    return this.p[this.off++]!;
  }

  u32(): number {
    this.need(4);
    this.off += 4;
    return this.p.readUInt32BE(this.off - 4);
  }

  str(): string {
    const n = this.u32();
    this.need(n);
    this.off += n;
    const bytes = this.p.subarray(this.off - n, this.off);
    if (bytes.includes(0)) throw new AgentProtocolError(`${this.what} string with a NUL byte at byte ${this.off - n}`);
    return bytes.toString('utf8');
  }

  /** A count of elements that take at least 4 bytes each: one beyond that is refused before anything is allocated for it. */
  count(): number {
    const n = this.u32();
    if (n > (this.p.length - this.off) / 4) throw new AgentProtocolError(`${this.what} count of ${n} at byte ${this.off - 4} exceeds the payload`);
    return n;
  }

  end(): void {
    if (this.off !== this.p.length) throw new AgentProtocolError(`${this.p.length - this.off} stray bytes after the ${this.what} payload`);
  }
}

/**
 * Inverse of encodeExec, refusing what the agent's parse_request() refuses
 * (used by tests and fake agents).
 */
export function decodeExec(p: Buffer): { request: ExecRequest; session: number } {
  const r = new PayloadReader(p, 'EXEC');
  const readStr = (): string => r.str();
  const readList = (): string[] => Array.from({ length: r.count() }, readStr);
  r.need(18);
  if (p[0] !== PROTOCOL_VERSION) throw new AgentProtocolError(`unsupported protocol version ${p[0]}`);
  const tty = (p[1] & 1) === 1;
  const session = p.readUInt32BE(2);
  const uid = p.readUInt32BE(6);
  const gid = p.readUInt32BE(10);
  const rows = p.readUInt16BE(14);
  const cols = p.readUInt16BE(16);
  r.off = 18;
  const app = readStr();
  const cwd = readStr();
  const supplementaryGids = Array.from({ length: r.count() }, () => r.u32());
  const argv = readList();
  const env = readList();
  r.end();
  if (argv.length === 0 || argv[0] === '') throw new AgentProtocolError('EXEC without a command');
  return { request: { app, argv, env, uid, gid, supplementaryGids, cwd, tty, rows, cols }, session };
}

/** The ATTACH payload: version, flags (stdin 1, stdout 2, stderr 4), session, rows, cols, app (PROTOCOL.md). */
export function encodeAttach(req: AttachRequest, session: number): Buffer {
  if (req.app === '' || req.app.includes('/') || req.app.startsWith('.')) throw new RangeError(`invalid app name "${req.app}"`);
  const flags = (req.stdin ? 1 : 0) | (req.stdout ? 2 : 0) | (req.stderr ? 4 : 0);
  if (flags === 0) throw new RangeError('attach to at least one of stdin, stdout, stderr');
  return Buffer.concat([Buffer.from([PROTOCOL_VERSION, flags]), u32(session, 'session'), u16(req.rows ?? 0, 'rows'), u16(req.cols ?? 0, 'cols'), str(req.app, 'app')]);
}

/** Inverse of encodeAttach, refusing what the agent's parse_attach() refuses. */
export function decodeAttach(p: Buffer): { request: AttachRequest; session: number } {
  if (p.length < 14) throw new AgentProtocolError(`ATTACH payload of ${p.length} bytes is truncated`);
  if (p[0] !== PROTOCOL_VERSION) throw new AgentProtocolError(`unsupported protocol version ${p[0]}`);
  const flags = p[1]!;
  if (flags === 0 || flags > 7) throw new AgentProtocolError(`ATTACH flags 0x${flags.toString(16)} name no stream or an unknown one`);
  const n = p.readUInt32BE(10);
  if (n !== p.length - 14) throw new AgentProtocolError(`ATTACH app name of ${n} bytes in a payload of ${p.length}`);
  const app = p.subarray(14);
  if (app.includes(0)) throw new AgentProtocolError('ATTACH string with a NUL byte at byte 14');
  return {
    request: { app: app.toString('utf8'), stdin: (flags & 1) === 1, stdout: (flags & 2) === 2, stderr: (flags & 4) === 4, rows: p.readUInt16BE(6), cols: p.readUInt16BE(8) },
    session: p.readUInt32BE(2),
  };
}

/** The SESSION frame the guest sends first for the session with this id. */
export function sessionFrame(session: number): Buffer {
  return encodeFrame(FrameType.Session, u32(session, 'session'));
}

/**
 * Where this session's frames begin in bytes from the guest: the offset
 * just past its SESSION frame, or -1 if that is not in `bytes` yet.
 * Whatever comes before belongs to a previous session whose host went away
 * (possibly cut mid-frame), so the host searches for the 9-byte SESSION
 * frame rather than parsing from the first byte.
 */
export function findSessionStart(bytes: Buffer, session: number): number {
  const marker = sessionFrame(session);
  const at = bytes.indexOf(marker);
  return at < 0 ? -1 : at + marker.length;
}

export function encodeResize(rows: number, cols: number): Buffer {
  return Buffer.concat([u16(rows, 'rows'), u16(cols, 'cols')]);
}

/** The statuses an ERROR frame may carry: 125 setup, 126 not executable, 127 not found. */
export const ERROR_STATUSES: ReadonlySet<number> = new Set([125, 126, 127]);

/**
 * EXIT payload: u32 status (exit code, or 128 + signal number). It becomes
 * the host's exit status, so anything a process cannot exit with is refused
 * (256 would read as success).
 */
export function decodeExit(p: Buffer): number {
  if (p.length !== 4) throw new AgentProtocolError(`EXIT payload of ${p.length} bytes, expected 4`);
  const status = p.readUInt32BE(0);
  if (status > 255) throw new AgentProtocolError(`EXIT status ${status} is not an exit status (0-255)`);
  return status;
}

/** Longest ERROR message shown, as the agent cuts it (ERROR_MSG_MAX). */
export const ERROR_MESSAGE_MAX = 1024;

/** A message from the guest as one printable line: control characters escaped, at most ERROR_MESSAGE_MAX characters. */
export function guestText(s: string): string {
  const cut = s.length > ERROR_MESSAGE_MAX ? `${s.slice(0, ERROR_MESSAGE_MAX)}...` : s;
  // C0, DEL and C1 controls (ESC, CSI, newlines) would move the terminal's cursor or fake lines
  // eslint-disable-next-line no-control-regex
  return cut.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** ERROR payload: u32 status (125, 126 or 127) + UTF-8 message, returned fit to print (the guest wrote it). */
export function decodeError(p: Buffer): { status: number; message: string } {
  if (p.length < 4) throw new AgentProtocolError(`ERROR payload of ${p.length} bytes, expected at least 4`);
  const status = p.readUInt32BE(0);
  if (!ERROR_STATUSES.has(status)) throw new AgentProtocolError(`ERROR status ${status} is not one of 125, 126, 127`);
  return { status, message: guestText(p.subarray(4).toString('utf8')) };
}

/** A frame from the guest, as the host takes it. */
export type GuestMessage =
  | { type: 'SESSION'; session: number }
  | { type: 'STDOUT' | 'STDERR'; data: Buffer }
  | { type: 'EXIT'; status: number }
  | { type: 'ERROR'; status: number; message: string };

/** Decodes a frame received from the guest; throws AgentProtocolError on one the guest may not send. */
export function decodeGuestFrame(f: Frame): GuestMessage {
  switch (f.type) {
    case FrameType.Session:
      if (f.payload.length !== 4) throw new AgentProtocolError(`SESSION payload of ${f.payload.length} bytes, expected 4`);
      return { type: 'SESSION', session: f.payload.readUInt32BE(0) };
    case FrameType.Stdout:
      return { type: 'STDOUT', data: f.payload };
    case FrameType.Stderr:
      return { type: 'STDERR', data: f.payload };
    case FrameType.Exit:
      return { type: 'EXIT', status: decodeExit(f.payload) };
    case FrameType.Error:
      return { type: 'ERROR', ...decodeError(f.payload) };
    default:
      throw new AgentProtocolError(`the guest agent sent a host-to-guest frame (type 0x${f.type.toString(16).padStart(2, '0')})`);
  }
}

/** A frame from the host, as the agent takes it. */
export type HostMessage =
  | { type: 'EXEC'; session: number; request: ExecRequest }
  | { type: 'ATTACH'; session: number; request: AttachRequest }
  | { type: 'APP'; payload: Buffer }
  | { type: 'STDIN'; data: Buffer }
  | { type: 'STDIN_EOF' }
  | { type: 'RESIZE'; rows: number; cols: number }
  | { type: 'SIGNAL'; signal: number };

/**
 * Decodes a frame sent to the guest, judging it as the agent does (its
 * frame_check_from_host and parse_request); for tests and fake agents.
 * Throws AgentProtocolError for what the agent takes as a protocol error,
 * and for an EXEC it refuses (which the agent answers with ERROR 125).
 */
export function decodeHostFrame(f: Frame): HostMessage {
  const size = (n: number, what: string): void => {
    if (f.payload.length !== n) throw new AgentProtocolError(`${what} payload of ${f.payload.length} bytes, expected ${n}`);
  };
  switch (f.type) {
    case FrameType.Exec:
      return { type: 'EXEC', ...decodeExec(f.payload) };
    case FrameType.Attach:
      return { type: 'ATTACH', ...decodeAttach(f.payload) };
    case FrameType.App:
      return { type: 'APP', payload: f.payload }; // its payload is decodeApp()'s (agent-app.ts)
    case FrameType.Stdin:
      return { type: 'STDIN', data: f.payload };
    case FrameType.StdinEof:
      return { type: 'STDIN_EOF' }; // the agent ignores a payload here
    case FrameType.Resize:
      size(4, 'RESIZE');
      return { type: 'RESIZE', rows: f.payload.readUInt16BE(0), cols: f.payload.readUInt16BE(2) };
    case FrameType.Signal:
      size(1, 'SIGNAL');
      return { type: 'SIGNAL', signal: f.payload[0] };
    default:
      throw new AgentProtocolError(`a guest-to-host frame (type 0x${f.type.toString(16).padStart(2, '0')}) sent to the guest`);
  }
}

/**
 * Splits a byte stream into frames, whatever the chunking of the transport.
 * Chunks are kept as they come and joined once per frame: joining on every
 * push would cost time quadratic in the frame size when the guest dribbles a
 * large frame a few bytes at a time.
 */
const EMPTY = Buffer.alloc(0);

export class FrameDecoder {
  private chunks: Buffer[] = [];
  /** Index of the first chunk still buffered (shifting the array each time would be quadratic too). */
  private head = 0;
  private length = 0;

  /** Every frame completed by this chunk, in order. Throws AgentProtocolError on a bad header. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.length >= FRAME_HEADER_BYTES) {
      const header = this.peek(FRAME_HEADER_BYTES);
      const type = header.readUInt8(0);
      const len = header.readUInt32BE(1);
      if (!KNOWN_TYPES.has(type)) throw new AgentProtocolError(`unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
      if (len > FRAME_MAX_PAYLOAD) throw new AgentProtocolError(`frame of ${len} bytes exceeds ${FRAME_MAX_PAYLOAD}`);
      if (this.length - FRAME_HEADER_BYTES < len) break;
      this.take(FRAME_HEADER_BYTES);
      frames.push({ type: type as FrameTypeCode, payload: this.take(len) });
    }
    if (this.head > 0 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return frames;
  }

  /** Bytes of an incomplete frame still buffered. */
  get buffered(): number {
    return this.length;
  }

  /** The first n buffered bytes, left in place. */
  private peek(n: number): Buffer {
    const first = this.chunks[this.head]!;
    return first.length >= n ? first : this.copy(n, false);
  }

  /** The first n buffered bytes, removed; always a copy, as the caller may keep it while later chunks arrive. */
  private take(n: number): Buffer {
    return this.copy(n, true);
  }

  private copy(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let i = this.head;
    while (filled < n) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k < c.length) {
        if (consume) this.chunks[i] = c.subarray(k);
      } else {
        if (consume) this.chunks[i] = EMPTY; // let go of it now, not at the next compaction
        i++;
      }
    }
    if (consume) {
      this.head = i;
      this.length -= n;
    }
    return out;
  }
}
