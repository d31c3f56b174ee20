// The APP request of the guest agent protocol (guest/agent/PROTOCOL.md, "An
// app session"): how the app entrypoints of a mutable kvm pod (app.ts) have
// the guest add, start, stop and remove an app. The guest runs
// /rkt/bin/rkt-app-ctl for it and answers as for a command: SESSION, its
// output, EXIT (or ERROR when the agent refused the request). That output
// is the guest's: it is kept bounded and only ever quoted, sanitised.

import crypto from 'node:crypto';
import { Writable } from 'node:stream';
import { RktError } from '../src/errors.js';
import { sanitizeLine } from '../src/util/untrusted-text.js';
import { AgentExecError, AgentProtocolError, FrameType, PayloadReader, PROTOCOL_VERSION, encodeFrame, guestText, str, u32 } from './agent-protocol.js';
import { runSession } from './agent-session.js';

export const AppOp = { ping: 1, add: 2, start: 3, stop: 4, rm: 5 } as const;
export type AppOpName = keyof typeof AppOp;

/** The agent's bounds (guest/agent/agent.h): units and volumes of one app. */
export const APP_UNITS_MAX = 16;
export const APP_BINDS_MAX = 256;

export interface AppRequest {
  op: AppOpName;
  /** Empty for ping. */
  app: string;
  /** add: "STDIN STDOUT STDERR" stream modes of an app with attachable streams, else empty. */
  io?: string;
  /** add: the unit files (name relative to /run/systemd/system, text); rm: their names (text empty). */
  units?: [string, string][];
  /** add: each volume's directory in the guest, inside /opt/stage2/<app>/rootfs. */
  binds?: { path: string; readOnly: boolean }[];
}

// The agent's grammar of an APP request (guest/agent/app-request.c), so
// that the host refuses before sending what the agent would refuse: a
// request reaches only the units and mounts of the one app it names.
const APP_NAME = /^[a-z0-9]+([-._][a-z0-9]+)*$/;
const IO_MODES = /^(null|log|stream|tty) (null|log|stream|tty) (null|log|stream|tty)$/;

/** "<app>.<...>.service", or one of its drop-ins "<app>.<...>.service.d/<name>.conf". */
export function unitNameOk(app: string, u: string): boolean {
  if (u.length > 255 || !u.startsWith(`${app}.`) || u.includes('..') || !/^[A-Za-z0-9@._-]+(\/[A-Za-z0-9@._-]+)?$/.test(u)) return false;
  const [unit, dropIn] = u.split('/');
  return dropIn === undefined ? unit!.endsWith('.service') : unit!.endsWith('.service.d') && dropIn.endsWith('.conf');
}

/** An absolute path inside the app's rootfs in the guest: no empty, "." or ".." component, no control character. */
export function bindPathOk(app: string, p: string): boolean {
  const prefix = `/opt/stage2/${app}/rootfs/`;
  // eslint-disable-next-line no-control-regex
  if (!p.startsWith(prefix) || Buffer.byteLength(p) > 4000 || /[\x00-\x1f\x7f]/.test(p)) return false;
  return p
    .slice(1)
    .split('/')
    .every((c) => c !== '' && c !== '.' && c !== '..');
}

/** Why the agent would refuse `req`, or undefined if it takes it. */
export function appRequestProblem(req: AppRequest): string | undefined {
  const units = req.units ?? [];
  const binds = req.binds ?? [];
  const io = req.io ?? '';
  if (units.length > APP_UNITS_MAX) return `${units.length} units; the agent takes at most ${APP_UNITS_MAX}`;
  if (binds.length > APP_BINDS_MAX) return `${binds.length} volumes; the agent takes at most ${APP_BINDS_MAX}`;
  if (req.op === 'ping') return req.app !== '' || io !== '' || units.length > 0 || binds.length > 0 ? 'a ping names no app' : undefined;
  if (req.app.length > 200 || !APP_NAME.test(req.app)) return `invalid app name "${req.app}"`;
  if (io !== '' && !IO_MODES.test(io)) return `invalid stream modes "${io}"`;
  if (req.op !== 'add' && (io !== '' || binds.length > 0 || units.some(([, text]) => text !== ''))) return `only add carries stream modes, unit texts and volumes`;
  const unit = units.find(([name]) => !unitNameOk(req.app, name));
  if (unit !== undefined) return `unit "${unit[0]}" is not one of app ${req.app}'s`;
  const bind = binds.find((x) => !bindPathOk(req.app, x.path));
  if (bind !== undefined) return `volume path ${JSON.stringify(bind.path)} is not inside app ${req.app}'s rootfs`;
  return undefined;
}

/** The APP payload: version, op, session, app, io, units (name, text each), binds (flags, path each). */
export function encodeApp(req: AppRequest, session: number): Buffer {
  const units = req.units ?? [];
  const binds = req.binds ?? [];
  const problem = appRequestProblem(req);
  if (problem !== undefined) throw new RangeError(`app ${req.app}: ${problem}`);
  return Buffer.concat([
    Buffer.from([PROTOCOL_VERSION, AppOp[req.op]]),
    u32(session, 'session'),
    str(req.app, 'app'),
    str(req.io ?? '', 'io'),
    u32(units.length, 'unit count'),
    ...units.flatMap(([name, text], i) => [str(name, `unit[${i}] name`), str(text, `unit[${i}]`)]),
    u32(binds.length, 'bind count'),
    ...binds.flatMap((b, i) => [Buffer.from([b.readOnly ? 1 : 0]), str(b.path, `bind[${i}]`)]),
  ]);
}

/** Inverse of encodeApp for tests and fake agents, refusing what the agent's parse_app_request() refuses. */
export function decodeApp(p: Buffer): { request: AppRequest; session: number } {
  const r = new PayloadReader(p, 'APP');
  r.need(6);
  if (p[0] !== PROTOCOL_VERSION) throw new AgentProtocolError(`unsupported protocol version ${p[0]}`);
  const op = (Object.keys(AppOp) as AppOpName[]).find((k) => AppOp[k] === p[1]);
  if (op === undefined) throw new AgentProtocolError(`unknown APP operation ${p[1]}`);
  r.off = 6;
  const app = r.str();
  const io = r.str();
  const nUnits = r.u32();
  if (nUnits > APP_UNITS_MAX) throw new AgentProtocolError(`APP with ${nUnits} units`);
  const units = Array.from({ length: nUnits }, (): [string, string] => [r.str(), r.str()]);
  const nBinds = r.u32();
  if (nBinds > APP_BINDS_MAX) throw new AgentProtocolError(`APP with ${nBinds} volumes`);
  const binds = Array.from({ length: nBinds }, () => {
    const flags = r.u8();
    if (flags > 1) throw new AgentProtocolError(`APP volume flags ${flags}`);
    const bindPath = r.str();
    return { path: bindPath, readOnly: flags === 1 };
  });
  r.end();
  const request: AppRequest = { op, app, io, units, binds };
  const problem = appRequestProblem(request);
  if (problem !== undefined) throw new AgentProtocolError(`APP request refused: ${sanitizeLine(problem)}`);
  return { request, session: p.readUInt32BE(2) };
}

/** What the guest may say back about an app, kept: more is dropped. */
const OUTPUT_KEEP_BYTES = 4096;

/** Keeps the first OUTPUT_KEEP_BYTES written to it, takes (and drops) the rest. */
class Bounded extends Writable {
  private readonly parts: Buffer[] = [];
  private size = 0;

  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    if (this.size < OUTPUT_KEEP_BYTES) {
      const part = chunk.subarray(0, OUTPUT_KEEP_BYTES - this.size);
      this.parts.push(part);
      this.size += part.length;
    }
    done();
  }

  text(): string {
    return Buffer.concat(this.parts).toString('utf8');
  }
}

/** The last non-empty line of the guest's words, fit to print. */
function lastLine(text: string): string {
  return guestText(text.trim().split('\n').at(-1)?.trim() ?? '');
}

export interface AppRequestOptions {
  /** How long the guest may take to answer (the session's first frame). */
  answerTimeoutMs?: number;
  /** Aborting disconnects: the agent kills rkt-app-ctl. */
  signal?: AbortSignal;
  /** How errors begin, e.g. "cannot add app web". */
  what: string;
}

/**
 * Have the guest carry out `req`; resolves with what rkt-app-ctl printed on
 * its stdout (bounded, unsanitised: parse it, never print it), rejects with
 * one line saying what the guest said went wrong.
 */
export async function appRequest(sockets: readonly string[], req: AppRequest, opts: AppRequestOptions): Promise<string> {
  const session = crypto.randomBytes(4).readUInt32BE(0);
  let first: Buffer;
  try {
    first = encodeFrame(FrameType.App, encodeApp(req, session));
  } catch (err) {
    if (err instanceof RangeError) throw new RktError(`${opts.what}: ${err.message}`);
    throw err;
  }
  const stdout = new Bounded();
  const stderr = new Bounded();
  let status: number;
  try {
    const end = await runSession(sockets, first, session, false, { stdin: null, stdout, stderr }, { who: opts.what, ...(opts.answerTimeoutMs !== undefined && { answerTimeoutMs: opts.answerTimeoutMs }), ...(opts.signal && { signal: opts.signal }) }, 'exec');
    status = end.status;
  } catch (err) {
    if (err instanceof AgentExecError) throw new RktError(`${opts.what}: the guest refused the request (${err.message.slice(opts.what.length + 2)})`);
    throw err;
  }
  if (status !== 0) {
    const said = lastLine(stderr.text()) || lastLine(stdout.text());
    throw new RktError(`${opts.what}: the guest says: ${said || `exit status ${status}`}`);
  }
  return stdout.text();
}

/** The guest's state as rkt-app-ctl prints it: "mounts=N units=N processes=N" (bounded numbers, or undefined if it said something else). */
export function parseGuestState(text: string): { mounts: number; units: number; processes: number } | undefined {
  const m = /^mounts=(\d{1,6}) units=(\d{1,6}) processes=(\d{1,6})$/m.exec(text);
  return m ? { mounts: Number(m[1]), units: Number(m[2]), processes: Number(m[3]) } : undefined;
}
