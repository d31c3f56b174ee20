import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { FifoCopy, FifoFeed } from '../../stage1-nspawn/io.js';
import { mkfifo } from '../../src/util/fifo.js';
import { PinnedFile, UnexpectedFileError, readPinned } from '../../src/util/pinned-file.js';

// The host's side of the pod's standard streams and other files in the pod's
// rootfs, which the pod can write: a symlink or another kind of file put
// where the host expects its own must never make the host open a host file.

function tmp(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-io-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A host FIFO with a blocked open for reading: `opened` settles only if
 * someone opens it for writing, which is what an open by name through a
 * planted symlink would do.
 */
function bait(dir: string) {
  const file = path.join(dir, 'bait');
  mkfifo(file);
  let hit = false;
  const opening = fs.promises.open(file, 'r').then((h) => {
    hit = true;
    return h.close();
  });
  return {
    file,
    hit: () => hit,
    /** Let the blocked open through, so the test can end. */
    release: async () => {
      const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      await opening;
      fs.closeSync(fd);
    },
  };
}

test('PinnedFile refuses a symlink, even to a FIFO, and a file of the wrong kind', (t) => {
  const dir = tmp(t);
  const fifo = path.join(dir, 'fifo');
  mkfifo(fifo);
  fs.symlinkSync(fifo, path.join(dir, 'link'));
  fs.writeFileSync(path.join(dir, 'plain'), 'x');
  t.throws(() => PinnedFile.open(path.join(dir, 'link'), 'fifo'), { instanceOf: UnexpectedFileError, message: /is a symlink/ });
  t.throws(() => PinnedFile.open(path.join(dir, 'plain'), 'fifo'), { instanceOf: UnexpectedFileError, message: /is a regular file, not the FIFO/ });
  t.throws(() => PinnedFile.open(fifo, 'file'), { instanceOf: UnexpectedFileError, message: /is a FIFO/ });
  t.throws(() => PinnedFile.open('/dev/null', 'file'), { instanceOf: UnexpectedFileError, message: /device node/ });
  PinnedFile.open(fifo, 'fifo').close();
});

test('PinnedFile reopens the pinned inode whatever its name has become', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'pinned');
  const pinned = PinnedFile.open(file, 'file');
  t.teardown(() => pinned.close());
  fs.renameSync(file, path.join(dir, 'moved'));
  fs.symlinkSync('/etc/hostname', file);
  const fd = pinned.reopen(fs.constants.O_RDONLY);
  t.is(fs.readFileSync(fd, 'utf8'), 'pinned');
  fs.closeSync(fd);
});

test('readPinned stays within its tree and refuses files larger than asked', (t) => {
  const dir = tmp(t);
  const root = path.join(dir, 'root');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc/unit'), 'Environment=A=1\n');
  t.is(readPinned(path.join(root, 'etc/unit'), root, 100), 'Environment=A=1\n');
  t.throws(() => readPinned(path.join(root, 'etc/unit'), root, 4), { instanceOf: UnexpectedFileError, message: /larger than/ });
  // a parent directory swapped for a symlink out of the tree
  fs.mkdirSync(path.join(dir, 'host'));
  fs.writeFileSync(path.join(dir, 'host/unit'), 'Environment=SECRET=1\n');
  fs.rmSync(path.join(root, 'etc'), { recursive: true });
  fs.symlinkSync(path.join(dir, 'host'), path.join(root, 'etc'));
  t.throws(() => readPinned(path.join(root, 'etc/unit'), root, 100), { instanceOf: UnexpectedFileError, message: /outside/ });
});

test('readPinned: exactly at the limit, one byte over, empty, and longer than its size says', (t) => {
  const dir = tmp(t);
  const f = path.join(dir, 'f');
  fs.writeFileSync(f, 'x'.repeat(5000));
  t.is(readPinned(f, undefined, 5000), 'x'.repeat(5000));
  t.throws(() => readPinned(f, undefined, 4999), { instanceOf: UnexpectedFileError, message: /larger than/ });
  fs.writeFileSync(f, '');
  t.is(readPinned(f, undefined, 10), '');
  // a file whose size says 0 but which reads longer (as /proc's do): the buffer grows to the limit
  const status = readPinned('/proc/self/status', undefined, 1 << 16);
  t.regex(status, /^Name:/);
  t.true(status.length > 100);
  t.throws(() => readPinned('/proc/self/status', undefined, 10), { instanceOf: UnexpectedFileError, message: /larger than/ });
});

test('FifoFeed: a symlink planted at the stdin FIFO once the pod runs is never followed', async (t) => {
  const dir = tmp(t);
  const fifo = path.join(dir, 'stdin');
  mkfifo(fifo);
  const feed = new FifoFeed(fifo, Readable.from([Buffer.from('hello\n')]));
  t.teardown(() => feed.destroy());
  // the app opens its stdin and reads it to the end
  const app = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  t.teardown(() => fs.closeSync(app));
  feed.readerStarted();
  let got = '';
  for (let i = 0; i < 100 && !got.endsWith('\n'); i++) {
    await sleep(10);
    try {
      const buf = Buffer.alloc(64);
      got += buf.toString('utf8', 0, fs.readSync(app, buf));
    } catch {
      // EAGAIN: not written yet
    }
  }
  t.is(got, 'hello\n');

  // the pod replaces its FIFO with a symlink to a host file
  const trap = bait(dir);
  fs.renameSync(fifo, path.join(dir, 'stdin.old'));
  fs.symlinkSync(trap.file, fifo);
  await sleep(400); // eight of the feeder's 50 ms pulses
  const followed = trap.hit();
  await trap.release();
  t.false(followed, 'the feeder opened the symlink target on the host');
});

test('FifoCopy refuses a symlink where its FIFO should be', (t) => {
  const dir = tmp(t);
  const fifo = path.join(dir, 'stdout');
  mkfifo(path.join(dir, 'real'));
  fs.symlinkSync(path.join(dir, 'real'), fifo);
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  t.throws(() => new FifoCopy(fifo, sink), { instanceOf: UnexpectedFileError });
});

test('rkt status reads the exit statuses the pod wrote, and nothing a symlink among them points at', async (t) => {
  const { Pod } = await import('../../src/pod/pod.js');
  const dir = tmp(t);
  const pod = new Pod(dir, '11111111-2222-3333-4444-555555555555', 'run');
  fs.mkdirSync(pod.paths.statusDir, { recursive: true });
  fs.writeFileSync(path.join(pod.paths.statusDir, 'app'), '3');
  // pointed at a host file holding a number, and at a host FIFO that would block a reader forever
  fs.writeFileSync(path.join(dir, 'host-number'), '42');
  fs.symlinkSync(path.join(dir, 'host-number'), path.join(pod.paths.statusDir, 'leak'));
  mkfifo(path.join(dir, 'host-fifo'));
  fs.symlinkSync(path.join(dir, 'host-fifo'), path.join(pod.paths.statusDir, 'hang'));
  mkfifo(path.join(pod.paths.statusDir, 'fifo'));
  fs.mkdirSync(path.join(pod.paths.statusDir, 'dir'));
  t.deepEqual(pod.appExitStatuses(), { app: 3 });
  t.truthy(pod.exitedAt());
});
