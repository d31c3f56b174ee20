import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { RktError, isErrno } from '../errors.js';
import { log } from '../log.js';
import type { PodPaths } from '../stage1/contract.js';
import { parsePodManifest } from '../appc/pod-manifest.js';
import { DEFAULT_PORT, DEFAULT_SOCKET, SOCKET_ENV } from './protocol.js';

// stage0's side of the metadata service: `rkt run --mds-register` checks
// that a service answers before it prepares anything, registers the pod
// (its manifest, then each app's image manifest) under a fresh secret token
// before stage1 starts, and unregisters it when the pod ends or is removed.
// The pod directory remembers where it was registered (mds-registered, as
// rkt names it), so that `rkt gc` and `rkt rm` unregister a pod whose
// `rkt run` was killed, at the socket it was registered on.

const MARKER = 'mds-registered';
const REQUEST_TIMEOUT_MS = 10_000;

export function registrationSocket(): string {
  const v = process.env[SOCKET_ENV];
  return v !== undefined && v !== '' ? path.resolve(v) : DEFAULT_SOCKET;
}

export class MetadataServiceError extends RktError {}

function unreachable(socket: string, why: string): MetadataServiceError {
  return new MetadataServiceError(`--mds-register: no metadata service answers on ${socket} (${why}); start one with "rkt metadata-service", or run without --mds-register`);
}

/** Fails with one line unless a service accepts connections on the socket. */
export async function checkServiceReachable(socket = registrationSocket()): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const c = net.connect(socket);
    const timer = setTimeout(() => {
      c.destroy();
      reject(unreachable(socket, 'no answer'));
    }, REQUEST_TIMEOUT_MS);
    c.once('connect', () => {
      clearTimeout(timer);
      c.destroy();
      resolve();
    });
    c.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(unreachable(socket, err.code === 'ENOENT' ? 'no such socket' : err.code === 'ECONNREFUSED' ? 'nobody listens on it' : err.message));
    });
  });
}

function request(socket: string, method: string, target: string, body?: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path: target, timeout: REQUEST_TIMEOUT_MS, headers: { 'Content-Length': body?.length ?? 0 } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= 64 * 1024) chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', (err: NodeJS.ErrnoException) => reject(isErrno(err, 'ENOENT') || isErrno(err, 'ECONNREFUSED') ? unreachable(socket, err.code!) : err));
    req.end(body);
  });
}

function firstLine(text: string): string {
  return text.split('\n')[0]!.slice(0, 300);
}

function markerPath(podDir: string): string {
  return path.join(podDir, MARKER);
}

/** How the pod's apps reach the service: the pod's own token and the service's TCP port. */
export interface MetadataAccess {
  token: string;
  port: number;
}

/** Register the pod with the service on `socket`; on failure nothing stays registered. */
export async function registerPod(paths: PodPaths, uuid: string, socket = registrationSocket()): Promise<MetadataAccess> {
  const token = crypto.randomBytes(32).toString('hex');
  const manifest = fs.readFileSync(paths.manifest);
  // written first: a registration that outlives a crash here is still found and undone by gc
  fs.writeFileSync(markerPath(paths.dir), JSON.stringify({ socket }) + '\n', { mode: 0o600 });
  // until the service says no, it may have registered the pod (an answer lost to a timeout)
  let accepted = true;
  try {
    const r = await request(socket, 'PUT', `/pods/${uuid}?token=${token}`, manifest);
    accepted = r.status === 200;
    if (r.status !== 200) throw new MetadataServiceError(`the metadata service on ${socket} refused pod ${uuid} (${r.status}: ${firstLine(r.body)})`);
    let port = DEFAULT_PORT;
    try {
      const p = (JSON.parse(r.body) as { port?: unknown }).port;
      if (typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536) port = p;
    } catch {
      // a service that does not say (rkt's) listens on rkt's port
    }
    for (const app of parsePodManifest(manifest).apps) {
      const a = await request(socket, 'PUT', `/pods/${uuid}/${app.name}`, fs.readFileSync(paths.appImageManifest(app.name)));
      if (a.status !== 200) throw new MetadataServiceError(`the metadata service on ${socket} refused app ${app.name} of pod ${uuid} (${a.status}: ${firstLine(a.body)})`);
    }
    log().debug(`pod ${uuid} registered with the metadata service on ${socket}; apps reach it on port ${port}`);
    return { token, port };
  } catch (err) {
    // a pod the service refused was never registered: nothing to undo but the marker
    if (accepted) await unregisterPod(paths.dir, uuid);
    else fs.rmSync(markerPath(paths.dir), { force: true });
    throw err;
  }
}

/** Undo a registration, if the pod has one; never throws (a warning says what failed). */
export async function unregisterPod(podDir: string, uuid: string): Promise<void> {
  let socket: string;
  try {
    const v = JSON.parse(fs.readFileSync(markerPath(podDir), 'utf8')) as { socket?: unknown };
    if (typeof v.socket !== 'string') throw new Error('it names no socket');
    socket = v.socket;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    log().warn(`cannot read ${markerPath(podDir)} (${(err as Error).message}); the pod may stay registered with the metadata service until it restarts`);
    return;
  }
  try {
    const r = await request(socket, 'DELETE', `/pods/${uuid}`);
    // 404: the service forgot it already (restarted)
    if (r.status !== 200 && r.status !== 404) throw new Error(`${r.status}: ${firstLine(r.body)}`);
    fs.rmSync(markerPath(podDir), { force: true });
  } catch (err) {
    if (err instanceof MetadataServiceError) {
      // no service any more: it has forgotten every pod
      fs.rmSync(markerPath(podDir), { force: true });
      return;
    }
    log().warn(`cannot unregister pod ${uuid} from the metadata service on ${socket}: ${(err as Error).message}; "rkt gc" will try again`);
  }
}
