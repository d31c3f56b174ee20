import type { ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { execa } from 'execa';
import { LockBusyError } from '../../src/errors.js';
import { teardownPodNetwork } from '../../src/net/pod-network.js';
import { FileLock } from '../../src/util/lock.js';
import { iptablesState, type Family } from '../helpers/iptables-state.js';
import { needCommand, needFile, needRoot } from '../helpers/prereqs.js';

// Shared by the networking integration tests. They run as root against the
// real CNI plugins, send traffic only to loopback and to namespaces they
// created, and compare the host before and after: iptables, namespaces,
// links and IPAM leases. One test at a time on the host (a lock shared by
// every test file), so the comparisons see only their own doing.

/** Throws, saying what to install, unless this runs as root with the CNI plugins at hand. */
export function needNetPrereqs(): void {
  needRoot('the networking tests');
  for (const plugin of ['ptp', 'host-local', 'portmap']) needFile(`/usr/lib/cni/${plugin}`, 'install the Debian package containernetworking-plugins (scripts/setup.sh does)');
  needCommand('iptables-save', 'iptables');
  needCommand('ip6tables-save', 'iptables');
}

const TEST_LOCK = '/run/rkt/net-tests.lock';
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/** Hold the host for the test; registered first so it is released after every other teardown. */
export async function exclusiveHost(t: ExecutionContext): Promise<void> {
  t.teardown(await holdHost());
}

/** Hold the host until the returned function is called (for hooks and helpers that outlive one test). */
export async function holdHost(): Promise<() => Promise<void>> {
  fs.mkdirSync(path.dirname(TEST_LOCK), { recursive: true });
  let lock: FileLock | undefined;
  while (!lock) {
    try {
      lock = FileLock.acquire(TEST_LOCK, 'exclusive', { wait: false });
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
      await sleep(100);
    }
  }
  const forward = fs.readFileSync(IP_FORWARD, 'utf8').trim();
  const held = lock;
  return async () => {
    // the ptp and bridge plugins turn on IP forwarding; turn it back off if it was off and no pod is left
    if (forward === '0' && (await cniVeths()).length === 0) fs.writeFileSync(IP_FORWARD, '0');
    held.release();
  };
}

async function cniVeths(): Promise<string[]> {
  const r = await execa('ip', ['-o', 'link', 'show', 'type', 'veth'], { reject: false });
  return String(r.stdout)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(':')[1]!.trim().split('@')[0]!);
}

export interface HostSnapshot {
  /** iptables and ip6tables rules and chains: see iptablesState. */
  iptables: string[];
  netns: string[];
  links: string[];
  leases: string[];
}

async function saveRules(family: Family): Promise<string[]> {
  const cmd = family === 'ip4' ? 'iptables-save' : 'ip6tables-save';
  const r = await execa(cmd, [], { reject: false });
  // an empty output would compare equal to any other: a failure must not pass for "no rules"
  if (r.failed) throw new Error(`${cmd} failed (${String(r.stderr || r.message).trim()}): install the Debian package iptables (scripts/setup.sh does)`);
  return iptablesState(family, String(r.stdout));
}

/** The host's iptables and ip6tables rules and chains, as iptablesState reads them. */
export async function iptablesNow(): Promise<string[]> {
  return [...(await saveRules('ip4')), ...(await saveRules('ip6'))];
}

function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true }).map(String).sort();
}

export async function snapshot(): Promise<HostSnapshot> {
  const links = await execa('ip', ['-o', 'link', 'show']);
  return {
    iptables: await iptablesNow(),
    netns: listTree('/run/netns'),
    links: String(links.stdout)
      .split('\n')
      .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
      .sort(),
    leases: listTree('/var/lib/cni/networks').filter((f) => !f.endsWith('lock') && !f.includes('last_reserved_ip')),
  };
}

export function assertSame(t: ExecutionContext, before: HostSnapshot, after: HostSnapshot, what: string): void {
  t.deepEqual(after.netns, before.netns, `${what}: network namespaces`);
  t.deepEqual(after.links, before.links, `${what}: host interfaces`);
  t.deepEqual(after.leases, before.leases, `${what}: IPAM leases`);
  t.deepEqual(after.iptables, before.iptables, `${what}: iptables rules and chains`);
}

export interface FakePod {
  dir: string;
  uuid: string;
  localConfig: string;
}

/** A pod directory and config dirs of our own; its network is torn down however the test ends. */
export function makePod(t: ExecutionContext): FakePod {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'net-pod-'));
  const pod: FakePod = { dir: path.join(root, 'pod'), uuid: crypto.randomUUID(), localConfig: path.join(root, 'etc') };
  fs.mkdirSync(pod.dir);
  fs.mkdirSync(path.join(pod.localConfig, 'net.d'), { recursive: true });
  t.teardown(async () => {
    await teardownPodNetwork(pod.dir).catch((err: Error) => t.log(`teardown: ${err.message}`));
    fs.rmSync(root, { recursive: true, force: true });
  });
  return pod;
}

export function writeNetConf(pod: FakePod, file: string, body: unknown): string {
  const p = path.join(pod.localConfig, 'net.d', file);
  fs.writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body, null, 2));
  return p;
}

/** A network name and subnet used by this test alone. */
export function uniqueNet(): { name: string; subnet: string; prefix: string } {
  const b = crypto.randomBytes(2);
  const prefix = `10.${200 + (b[0]! % 50)}.${b[1]!}`;
  return { name: `t-${crypto.randomBytes(4).toString('hex')}`, subnet: `${prefix}.0/24`, prefix };
}

/** A TCP port nothing listens on now. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const SERVER = "require('net').createServer((s) => s.end(process.argv[2] + '\\n')).listen(Number(process.argv[1]), () => console.log('up'))";

/** A TCP server answering `reply` inside a namespace; killed at teardown. */
export async function startServer(t: ExecutionContext, netnsPath: string, port: number, reply: string): Promise<void> {
  const child = spawn('nsenter', [`--net=${netnsPath}`, '--', process.execPath, '-e', SERVER, String(port), reply], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`server in ${netnsPath} exited ${code}: ${err}`)));
  });
}

/** Connect, read until the server closes; rejects on error or after timeoutMs. */
export function tcpRead(host: string, port: number, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let data = '';
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      reject(new Error(`timeout reading ${host}:${port}`));
    });
    s.on('data', (d) => (data += d.toString()));
    s.on('end', () => resolve(data.trim()));
    s.on('error', reject);
  });
}

/** The same from inside a namespace (pod to pod). */
export async function tcpReadFrom(netnsPath: string, host: string, port: number): Promise<string> {
  const client = "const s = require('net').connect(Number(process.argv[2]), process.argv[1]); let d = ''; s.setTimeout(5000, () => process.exit(3)); s.on('data', (c) => (d += c)); s.on('end', () => process.stdout.write(d)); s.on('error', (e) => { console.error(e.message); process.exit(1); });";
  const r = await execa('nsenter', [`--net=${netnsPath}`, '--', process.execPath, '-e', client, host, String(port)]);
  return String(r.stdout).trim();
}

export async function inNs(netnsPath: string, argv: string[]): Promise<string> {
  const r = await execa('nsenter', [`--net=${netnsPath}`, '--', ...argv]);
  return String(r.stdout);
}

/**
 * A pod server's report (it starts with "hostname "), retried until the app
 * listens: SYNs to a pod not yet up are dropped or refused.
 */
export async function serverReport(host: string, port: number, timeoutMs: number): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await tcpRead(host, port, 1500);
      // IPv6 duplicate address detection flags change while the pod runs
      if (r.includes('hostname ')) return r.replace(/ (tentative|dadfailed)\b/g, '');
    } catch (err) {
      if (Date.now() > end) throw err;
    }
    await sleep(50);
  }
}

/** Send `bytes` to a pod's sink and read back what it answers when done; with the seconds it took. */
export async function pushBytes(host: string, port: number, bytes: number): Promise<{ reply: string; seconds: number }> {
  const s = net.connect({ host, port, allowHalfOpen: true });
  await once(s, 'connect');
  const t0 = performance.now();
  const chunk = Buffer.alloc(1 << 20, 0x61);
  let reply = '';
  s.on('data', (d: Buffer) => (reply += d.toString()));
  const closed = once(s, 'close');
  for (let sent = 0; sent < bytes; sent += chunk.length) if (!s.write(chunk)) await once(s, 'drain');
  s.end();
  await closed;
  return { reply, seconds: (performance.now() - t0) / 1000 };
}
