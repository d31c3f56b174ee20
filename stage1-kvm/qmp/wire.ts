// Connecting to qemu's monitor socket and checking the shape of what it sends.
// Kept apart from the client so the client reads as protocol logic only.

import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpConnectError, QmpProtocolError } from './errors.js';
import type { QmpGreeting, QmpTimestamp } from './types.js';

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One line from qemu as a message object; anything else is a QmpProtocolError. */
export function parseMessage(line: string, socketPath: string): Record<string, unknown> {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    throw new QmpProtocolError(socketPath, `not JSON: ${line.slice(0, 80)}`, err);
  }
  if (!isRecord(msg)) throw new QmpProtocolError(socketPath, `not a JSON object: ${line.slice(0, 80)}`);
  return msg;
}

export function parseGreeting(msg: Record<string, unknown>): QmpGreeting | undefined {
  const qmp = msg.QMP;
  if (!isRecord(qmp) || !isRecord(qmp.version) || !isRecord(qmp.version.qemu)) return undefined;
  const { major, minor, micro } = qmp.version.qemu;
  if (typeof major !== 'number' || typeof minor !== 'number' || typeof micro !== 'number') return undefined;
  const pkg = typeof qmp.version.package === 'string' ? qmp.version.package : '';
  const caps = Array.isArray(qmp.capabilities) ? qmp.capabilities.filter((c): c is string => typeof c === 'string') : [];
  return { version: { qemu: { major, minor, micro }, package: pkg }, capabilities: caps };
}

export function parseTimestamp(v: unknown): QmpTimestamp {
  if (isRecord(v) && typeof v.seconds === 'number' && typeof v.microseconds === 'number') {
    return { seconds: v.seconds, microseconds: v.microseconds };
  }
  return { seconds: -1, microseconds: -1 }; // the spec's "clock unavailable" value
}

/** The longest pause between two attempts to connect. */
const POLL_CAP_MS = 20;

/** Connects to a unix socket, retrying while it is absent or refuses, until retryUntilMs has passed. */
export async function openSocket(socketPath: string, retryUntilMs: number): Promise<net.Socket> {
  const started = Date.now();
  let pause = 10;
  for (;;) {
    try {
      return await connectOnce(socketPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const elapsed = Date.now() - started;
      // qemu creates the socket early in startup, so these two mean "not yet"
      // (or "qemu died and left a stale socket", which the deadline covers).
      const transient = code === 'ENOENT' || code === 'ECONNREFUSED';
      if (!transient || elapsed >= retryUntilMs) {
        throw new QmpConnectError(socketPath, code, transient ? retryUntilMs : 0, err);
      }
      await sleep(Math.min(pause, retryUntilMs - elapsed));
      // a short cap: every pod start waits here for qemu's socket, and a longer pause
      // is time the pod loses after the socket appeared (a refused connect costs nothing)
      pause = Math.min(pause * 2, POLL_CAP_MS);
    }
  }
}

function connectOnce(socketPath: string): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    const onError = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
