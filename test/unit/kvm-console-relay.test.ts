import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { CONSOLE_LOG_MAX_BYTES, ConsoleLog, consoleTail } from '../../stage1-kvm/console-log.js';
import { ConsoleRelay } from '../../stage1-kvm/console-relay.js';

// The run entrypoint's end of the serial console: a capped log of
// printable text, the raw console for one client at a time, and nothing
// left behind when qemu's end closes. qemu is played by one end of a
// connected pair of unix sockets.

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-console-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // the pod's qemu directory, where the console's files live (pod-files.ts)
  fs.mkdirSync(path.join(dir, 'qemu'));
  return dir;
}

/** Two connected sockets: [ours (the relay's), qemu's]. */
async function socketPair(dir: string): Promise<[net.Socket, net.Socket]> {
  const p = path.join(dir, 'pair.sock');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(p, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const qemu = net.createConnection(p);
  const ours = await accepted;
  server.close();
  return [ours, qemu];
}

function connect(dir: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(path.join(dir, 'qemu', 'console.sock'));
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function collect(s: net.Socket): () => Buffer {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return () => Buffer.concat(parts);
}

test('guest output: filtered into console.log and --debug, raw to the client; keys go to the guest', async (t) => {
  const dir = tmp(t);
  const [ours, qemu] = await socketPair(dir);
  const debug = new PassThrough();
  let debugText = '';
  debug.on('data', (d: Buffer) => (debugText += d.toString()));
  const relay = new ConsoleRelay(dir, ours, { debug });
  await relay.listening();
  const client = await connect(dir);
  const seen = collect(client);
  const fromClient = collect(qemu);
  // U+009B (CSI as UTF-8) and its parameters go; a raw 0x9b byte is no UTF-8 and shows as U+FFFD
  const raw = Buffer.concat([Buffer.from('boot \x1b[31mred\x1b[0m\r\n\x1b]0;title\x07ok\u009b2J'), Buffer.from([0x9b]), Buffer.from('!\r\n')]);
  qemu.write(raw);
  await until('the raw bytes at the client', () => seen().length === raw.length);
  t.deepEqual(seen(), raw);
  client.write('ls\r');
  await until('the keys at the guest', () => fromClient().toString() === 'ls\r');
  qemu.end();
  await relay.closed;
  t.is(fs.readFileSync(path.join(dir, 'qemu', 'console.log'), 'utf8'), 'boot red\nok\ufffd!\n');
  t.is(debugText, 'boot red\nok\ufffd!\n');
  await until('the client to be disconnected', () => client.destroyed || client.readableEnded);
  t.false(fs.existsSync(path.join(dir, 'qemu', 'console.sock')), 'console.sock is removed with the VM');
});

test('one client at a time: the second is served once the first has gone', async (t) => {
  const dir = tmp(t);
  const [ours, qemu] = await socketPair(dir);
  const relay = new ConsoleRelay(dir, ours);
  await relay.listening();
  const first = await connect(dir);
  const firstSeen = collect(first);
  const second = await connect(dir);
  const secondSeen = collect(second);
  qemu.write('one\n');
  await until('the first client\'s output', () => firstSeen().toString() === 'one\n');
  first.destroy();
  await new Promise((r) => setTimeout(r, 50));
  qemu.write('two\n');
  await until('the second client\'s output', () => secondSeen().toString() === 'two\n');
  t.is(firstSeen().toString(), 'one\n');
  qemu.end();
  await relay.closed;
});

test('a guest that prints without end: the log on disk stays within twice its cap', async (t) => {
  const dir = tmp(t);
  const [ours, qemu] = await socketPair(dir);
  const relay = new ConsoleRelay(dir, ours);
  const chunk = Buffer.from('flood line\n'.repeat(6000));
  const total = 16 * 1024 * 1024;
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!qemu.write(chunk)) await new Promise((r) => qemu.once('drain', r));
  }
  qemu.end();
  await relay.closed;
  const cur = fs.statSync(path.join(dir, 'qemu', 'console.log')).size;
  const prev = fs.statSync(path.join(dir, 'qemu', 'console.log.1')).size;
  t.true(cur <= CONSOLE_LOG_MAX_BYTES && prev <= CONSOLE_LOG_MAX_BYTES, `${cur} + ${prev}`);
  t.deepEqual(fs.readdirSync(path.join(dir, 'qemu')).filter((f) => f.startsWith('console')).sort(), ['console.log', 'console.log.1']);
  t.deepEqual(consoleTail(dir, 2), ['flood line', 'flood line']);
});

test('console log: rotates at its cap, keeps one previous file, and the tail reads across both', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'qemu', 'console.log');
  const l = new ConsoleLog(file, 100);
  for (let i = 0; i < 30; i++) l.append(`line ${i}\n`);
  l.close();
  t.true(fs.statSync(file).size <= 100);
  t.true(fs.statSync(`${file}.1`).size <= 100);
  const lines = fs.readFileSync(`${file}.1`, 'utf8') + fs.readFileSync(file, 'utf8');
  t.true(lines.endsWith('line 29\n'));
  t.deepEqual(consoleTail(dir, 3), ['line 27', 'line 28', 'line 29']);
  // one piece larger than the cap keeps its end
  const big = new ConsoleLog(path.join(dir, 'big.log'), 10);
  big.append('0123456789abcdef');
  big.close();
  t.is(fs.readFileSync(path.join(dir, 'big.log'), 'utf8'), '6789abcdef');
});
