import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../src/log.js';
import { sanitizeLine } from '../src/util/untrusted-text.js';
import type { GuestNetConfig } from './taps.js';
import { ROOT_TAG } from './kernel.js';
import { QmpClient } from './qmp.js';
import { podFile, socketPath } from './pod-files.js';
import { startQemu, type VmConfig } from './qemu.js';
import { describeEnd, qemuComplaint } from './vm.js';

// The template VM over QMP: saving one (its guest, guest/template/init.c,
// has booted its kernel and waits on the port rkt.template), and giving a
// restored one the pod's own devices and identity.

type MigrationStatus = 'completed' | 'failed' | 'cancelled' | string;

/** Wait until qemu's migration (outgoing or incoming) has ended; throws unless it completed. */
export async function waitForMigration(qmp: QmpClient, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await qmp.execute<{ status?: MigrationStatus; 'error-desc'?: string }>('query-migrate');
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled') throw new Error(`${what} failed${r['error-desc'] ? `: ${r['error-desc']}` : ''}`);
    if (Date.now() > deadline) throw new Error(`${what} did not end within ${timeoutMs / 1000} s`);
    await sleep(5);
  }
}

/** What a template's kernel command line must not hold: the pod's identity, and microvm's "no PCI". */
const POD_PARAMS = /^(systemd\.machine_id|systemd\.hostname)=|^pci=off$/;

/** The pod's kernel command line without what is the pod's own: the template's (template-init sets them after the restore). */
export function templateCmdline(podCmdline: string): string {
  return podCmdline
    .split(' ')
    .filter((p) => p !== '' && !POD_PARAMS.test(p))
    .join(' ');
}

/** Bytes of the host's randomness each restored guest credits and reseeds its CRNG with. */
export const SEED_BYTES = 64;

/** The line a restored template guest waits for (its grammar: guest/template/init.c). */
export function goLine(o: { machineId: string; hostname: string; seed?: Buffer; nowNs?: bigint }): string {
  const seed = o.seed ?? crypto.randomBytes(SEED_BYTES);
  if (seed.length !== SEED_BYTES) throw new Error(`a seed is ${SEED_BYTES} bytes`);
  if (!/^[0-9a-f]{32}$/.test(o.machineId)) throw new Error(`machine id ${o.machineId} is not 32 hex digits`);
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(o.hostname)) throw new Error(`hostname ${o.hostname} is not valid`);
  const now = o.nowNs ?? BigInt(Date.now()) * 1_000_000n;
  return `go ${seed.toString('hex')} ${now} ${o.machineId} ${o.hostname}\n`;
}

/** Send the pod's line into the template port (qemu holds its FIFO open: the write does not wait). */
export function sendGo(podDir: string, line: string): void {
  const fd = fs.openSync(`${podFile(podDir, 'template')}.in`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    fs.writeSync(fd, line);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Before a restored guest runs: the pod's devices, which qemu cannot save
 * with a template (vhost-user-fs) or which are the pod's own (its NICs,
 * with their MACs), on the PC's bus. The guest finds them by a PCI rescan
 * once it has its line.
 */
export async function plugPodDevices(qmp: QmpClient, podDir: string, nics: readonly GuestNetConfig[], loadTimeoutMs: number): Promise<void> {
  await waitForMigration(qmp, loadTimeoutMs, 'restoring the template');
  await qmp.execute('chardev-add', { id: 'vfs', backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: socketPath(podDir, 'virtiofsSocket') } }, server: false } } });
  await qmp.execute('device_add', { driver: 'vhost-user-fs-pci', id: 'vfs', chardev: 'vfs', tag: ROOT_TAG });
  for (const [i, n] of nics.entries()) {
    await qmp.execute('netdev_add', { type: 'tap', id: `net${i}`, ifname: n.tapName, script: 'no', downscript: 'no' });
    await qmp.execute('device_add', { driver: 'virtio-net-pci', id: `nic${i}`, netdev: `net${i}`, mac: n.mac });
  }
}

/** Read the port's FIFO until the guest says "ready". */
function waitReady(podDir: string, timeoutMs: number): { ready: Promise<void>; close: () => void } {
  const fd = fs.openSync(`${podFile(podDir, 'template')}.out`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const sock = new net.Socket({ fd, readable: true, writable: false });
  let text = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the template guest did not get ready within ${timeoutMs / 1000} s`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      text = (text + d).slice(-64);
      if (text.includes('ready\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    sock.once('end', () => reject(new Error('the template guest closed its port before it was ready')));
    sock.once('error', reject);
  });
  return { ready, close: () => sock.destroy() };
}

/** Receive qemu's migration stream on a socket in its directory and write it to `out`. */
function receiveState(podDir: string, ids: { uid: number; gid: number }, out: string): { uri: string; done: Promise<void>; close: () => void } {
  const sockPath = socketPath(podDir, 'migrate');
  fs.rmSync(podFile(podDir, 'migrate'), { force: true });
  const server = net.createServer({ pauseOnConnect: false });
  const done = new Promise<void>((resolve, reject) => {
    server.once('connection', (conn) => {
      server.close();
      const file = fs.createWriteStream(out, { flags: 'wx', mode: 0o600 });
      conn.pipe(file);
      file.once('finish', resolve);
      file.once('error', reject);
      conn.once('error', reject);
    });
    server.once('error', reject);
  });
  server.listen(sockPath);
  // qemu runs as the pod's ids and connects to it
  fs.chownSync(podFile(podDir, 'migrate'), ids.uid, ids.gid);
  return { uri: `unix:${sockPath}`, done, close: () => server.close() };
}

/**
 * Boot the template machine of `c` (config.template set, no incoming state)
 * to the point where its guest waits, save it to `out`, and quit. qemu runs
 * as it does for the pod (its jail, ids and cgroups); the stream reaches the
 * cache through our socket only. Throws with what went wrong.
 */
export async function saveTemplate(qemu: string, c: VmConfig, out: string, timeoutMs: number): Promise<void> {
  const started = Date.now();
  const q = startQemu(qemu, c);
  const consoleTail: string[] = [];
  q.console?.on('data', (d: Buffer) => {
    consoleTail.push(sanitizeLine(d));
    if (consoleTail.length > 8) consoleTail.shift();
  });
  q.console?.on('error', () => undefined);
  let qmp: QmpClient | undefined;
  let ready: ReturnType<typeof waitReady> | undefined;
  let recv: ReturnType<typeof receiveState> | undefined;
  try {
    const exited = q.exited.then((e) => {
      throw new Error(`qemu ended while the template was made (${describeEnd(e)}): ${qemuComplaint(c.podDir)}${consoleTail.length ? `; console: ${consoleTail.join(' ').slice(-200)}` : ''}`);
    });
    exited.catch(() => undefined);
    qmp = await Promise.race([QmpClient.connect(socketPath(c.podDir, 'qmp'), { retryUntilMs: timeoutMs, timeoutMs }), exited]);
    ready = waitReady(c.podDir, timeoutMs);
    await qmp.cont();
    await Promise.race([ready.ready, exited]);
    log().debug(`template guest ready after ${Date.now() - started} ms`);
    await qmp.stop();
    recv = receiveState(c.podDir, c.ids, out);
    await qmp.execute('migrate', { uri: recv.uri });
    await Promise.race([waitForMigration(qmp, timeoutMs, 'saving the template'), exited]);
    await Promise.race([recv.done, exited]);
    log().debug(`template saved after ${Date.now() - started} ms (${fs.statSync(out).size} bytes)`);
  } finally {
    ready?.close();
    recv?.close();
    fs.rmSync(podFile(c.podDir, 'migrate'), { force: true });
    await qmp?.quit({ timeoutMs: 5000 }).catch(() => undefined);
    await qmp?.close();
    const end = await Promise.race([q.exited, sleep(5000).then(() => undefined)]);
    if (end === undefined) {
      q.child.kill('SIGKILL');
      await q.exited;
    }
    q.console?.destroy();
  }
}
