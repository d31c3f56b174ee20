import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { streamLogs } from '../../src/api/logs.js';
import type { GetLogsRequest } from '../../src/api/messages.js';
import { mkfifo } from '../../src/util/fifo.js';
import { FileLock } from '../../src/util/lock.js';

// GetLogs reads a kvm pod's console log (qemu/console.log and its rotated
// console.log.1) from a directory qemu can write: what is there may be
// anything a hostile guest managed to put. Here the files are laid out as
// the kvm run entrypoint writes them, and then as a hostile guest might.

const UUID = '6c2a3f1e-0000-4000-8000-00000000abcd';

function podWorld(t: ExecutionContext): { dataDir: string; qemu: string } {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-logs-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const qemu = path.join(dataDir, 'pods', 'run', UUID, 'qemu');
  fs.mkdirSync(qemu, { recursive: true });
  return { dataDir, qemu };
}

function req(over: Partial<GetLogsRequest> = {}): GetLogsRequest {
  return { pod_id: UUID, app_name: '', lines: 0, follow: false, since_time: '0', until_time: '0', ...over };
}

async function lines(dataDir: string, r: GetLogsRequest): Promise<string[]> {
  const out: string[] = [];
  await streamLogs(dataDir, r, { send: (l) => out.push(...l), cancelled: () => false });
  return out;
}

test('the rotated log comes first, then the current one; lines keeps the last ones', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  fs.writeFileSync(path.join(qemu, 'console.log.1'), 'boot 1\nboot 2\n');
  fs.writeFileSync(path.join(qemu, 'console.log'), 'login: 3\nlast line without end');
  t.deepEqual(await lines(dataDir, req()), ['boot 1', 'boot 2', 'login: 3', 'last line without end']);
  t.deepEqual(await lines(dataDir, req({ lines: 2 })), ['login: 3', 'last line without end']);
  t.deepEqual(await lines(dataDir, req({ pod_id: UUID.slice(0, 8) })), ['boot 1', 'boot 2', 'login: 3', 'last line without end']);
});

test('control characters and escape sequences a guest wrote never reach the client', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  fs.writeFileSync(path.join(qemu, 'console.log'), 'ok \x1b[2J\x1b]0;title\x07cleared\x00\x9b31m\n\u202eevil\n');
  const got = await lines(dataDir, req());
  t.is(got.length, 2);
  for (const l of got) t.false(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/.test(l), JSON.stringify(l));
  t.regex(got[0]!, /ok .*cleared/);
});

test('a symlink planted as the log is refused, never followed', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  const secret = path.join(dataDir, 'secret');
  fs.writeFileSync(secret, 'host secret\n');
  fs.symlinkSync(secret, path.join(qemu, 'console.log'));
  const err = await t.throwsAsync(lines(dataDir, req()));
  t.notRegex(err.message, /host secret/);
  t.regex(err.message, /symlink/);
});

test('a FIFO planted as the log is refused without blocking', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  mkfifo(path.join(qemu, 'console.log'));
  const err = await t.throwsAsync(lines(dataDir, req()));
  t.regex(err.message, /FIFO/);
});

test('a parent directory swapped for a symlink cannot lead out of the pod', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  const elsewhere = path.join(dataDir, 'elsewhere');
  fs.mkdirSync(elsewhere);
  fs.writeFileSync(path.join(elsewhere, 'console.log'), 'host file\n');
  fs.rmSync(qemu, { recursive: true });
  fs.symlinkSync(elsewhere, qemu);
  const err = await t.throwsAsync(lines(dataDir, req()));
  t.regex(err.message, /outside/);
});

test('a log larger than the cap is read from its end only', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  const big = 'x'.repeat(99) + '\n';
  fs.writeFileSync(path.join(qemu, 'console.log'), 'FIRST\n' + big.repeat(50_000) + 'LAST\n');
  const got = await lines(dataDir, req());
  t.is(got.at(-1), 'LAST');
  t.false(got.includes('FIRST'));
  t.true(got.length <= 4 * 1024 * 1024 / 100 + 2);
});

test('a pod with no console log has no logs', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  fs.rmSync(qemu, { recursive: true });
  const err = await t.throwsAsync(lines(dataDir, req()));
  t.regex(err.message, /has no logs/);
});

test('follow streams what is appended, across a rotation, until the pod stops running or the client goes', async (t) => {
  const { dataDir, qemu } = podWorld(t);
  const log = path.join(qemu, 'console.log');
  fs.writeFileSync(log, 'one\n');
  // the run entrypoint holds the pod's lock while it runs
  const lock = FileLock.acquire(path.dirname(qemu), 'exclusive');
  t.teardown(() => lock.release());
  const got: string[] = [];
  let stop = false;
  const streaming = streamLogs(dataDir, req({ follow: true }), { send: (l) => got.push(...l), cancelled: () => stop });
  const until = async (what: string, fn: () => boolean) => {
    const end = Date.now() + 10_000;
    while (!fn()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(got)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until('the first line', () => got.includes('one'));
  fs.appendFileSync(log, 'two\nthr');
  await until('the second line', () => got.includes('two'));
  t.false(got.some((l) => l.startsWith('thr')), 'an unfinished line waits for its end');
  fs.appendFileSync(log, 'ee\n');
  fs.renameSync(log, `${log}.1`);
  fs.writeFileSync(log, 'four\n');
  await until('the line after the rotation', () => got.includes('four'));
  t.deepEqual(got, ['one', 'two', 'three', 'four']);
  lock.release();
  // resolves only when the loop saw the pod was no longer running
  await streaming;

  const again: string[] = [];
  const relock = FileLock.acquire(path.dirname(qemu), 'exclusive');
  t.teardown(() => relock.release());
  const cancelled = streamLogs(dataDir, req({ follow: true }), { send: (l) => again.push(...l), cancelled: () => stop });
  stop = true;
  // the pod still runs: only the client's going away ends this one
  await cancelled;
  t.deepEqual(again, ['one', 'two', 'three', 'four'], 'what was there was sent before the client went');
});
