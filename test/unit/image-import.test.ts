import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { execa } from 'execa';
import tar from 'tar-stream';
import { ImageFormatError, RktError } from '../../src/errors.js';
import { decompress, detectCompression } from '../../src/image/compression.js';
import { importAci, StoreFullError } from '../../src/image/import.js';
import { buildAci } from '../helpers/aci.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-import-'));
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const TOOLS = { gzip: '.gz', bzip2: '.bz2', xz: '.xz' } as const;
type Tool = keyof typeof TOOLS;

let plainTar: Promise<string> | undefined;
/** One uncompressed busybox ACI and its compressed variants, built once. */
function fixture(): Promise<string> {
  plainTar ??= (async () => {
    const aci = await buildAci(dir, {
      name: 'example.com/import-test',
      app: { exec: ['/bin/sh'], user: '0', group: '0' },
      files: { 'etc/big': crypto.randomBytes(9 << 20).toString('base64'), [`${'nested/'.repeat(20)}leaf`]: 'x' },
    });
    for (const [tool, ext] of Object.entries(TOOLS)) {
      await execa('sh', ['-c', `${tool} -c "$1" > "$1${ext}"`, 'sh', aci]);
    }
    return aci;
  })();
  return plainTar;
}

function sha512(file: string): string {
  return crypto.createHash('sha512').update(fs.readFileSync(file)).digest('hex');
}

async function importFile(file: string, sinkPath = path.join(dir, `out-${crypto.randomBytes(4).toString('hex')}`)) {
  const result = await importAci(fs.createReadStream(file), fs.createWriteStream(sinkPath), { name: path.basename(file) });
  return { result, sinkPath };
}

function truncated(file: string, fraction: number): string {
  const data = fs.readFileSync(file);
  const out = `${file}.cut${fraction}`;
  fs.writeFileSync(out, data.subarray(0, Math.floor(data.length * fraction)));
  return out;
}

function corrupted(file: string): string {
  const data = Buffer.from(fs.readFileSync(file));
  for (let i = Math.floor(data.length / 2); i < data.length / 2 + 64; i++) data[i] = data[i]! ^ 0x5a;
  const out = `${file}.corrupt`;
  fs.writeFileSync(out, data);
  return out;
}

/**
 * Decoder children (xz, bzip2) of this process that are still around. Tests
 * that use it are serial: concurrent tests would have decoders of their own.
 */
function decoderChildren(): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && (comm === 'xz' || comm === 'bzip2')) found.push(`${pid} ${comm}`);
    } catch {
      // gone already
    }
  }
  return found;
}

async function noDecoderLeft(t: import('ava').ExecutionContext): Promise<void> {
  for (let i = 0; i < 40 && decoderChildren().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(decoderChildren(), []);
}

test('the image ID is the sha512 of the uncompressed tar, whatever the compression', async (t) => {
  const aci = await fixture();
  const expected = `sha512-${sha512(aci)}`;
  for (const file of [aci, ...Object.values(TOOLS).map((ext) => aci + ext)]) {
    const { result, sinkPath } = await importFile(file);
    t.is(result.id, expected, file);
    t.is(result.size, fs.statSync(aci).size);
    t.is(result.manifest.name, 'example.com/import-test');
    t.deepEqual(JSON.parse(result.manifestJson.toString()).app.exec, ['/bin/sh']);
    t.true(fs.readFileSync(sinkPath).equals(fs.readFileSync(aci)), 'the sink holds the uncompressed tar');
  }
  const { stdout } = await execa('sha512sum', [aci]);
  t.is(expected, `sha512-${stdout.split(' ')[0]}`);
});

test('compression is detected from content, not the file name', async (t) => {
  const aci = await fixture();
  const misnamed = path.join(dir, 'really-xz.tar.gz');
  fs.copyFileSync(`${aci}.xz`, misnamed);
  const { result } = await importFile(misnamed);
  t.is(result.id, `sha512-${sha512(aci)}`);
  t.is(detectCompression(fs.readFileSync(`${aci}.bz2`).subarray(0, 512)), 'bzip2');
  t.is(detectCompression(fs.readFileSync(aci).subarray(0, 512)), 'none');
});

for (const tool of Object.keys(TOOLS) as Tool[]) {
  test.serial(`a truncated or corrupt ${tool} stream is an ImageFormatError, never a hang or partial success`, async (t) => {
    t.timeout(60_000);
    const aci = await fixture();
    for (const file of [truncated(aci + TOOLS[tool], 0.6), truncated(aci + TOOLS[tool], 0.001), corrupted(aci + TOOLS[tool])]) {
      const sinkPath = path.join(dir, `partial-${tool}`);
      const err = await t.throwsAsync(importFile(file, sinkPath), { instanceOf: ImageFormatError }, file);
      t.regex(err?.message ?? '', /corrupt or truncated|truncated|not a valid ACI/, file);
    }
    await noDecoderLeft(t);
  });
}

test('anything that is not a tar is an unknown format', async (t) => {
  const cases: [string, Buffer, RegExp][] = [
    ['zip', Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(600)]), /zip archive/],
    ['empty', Buffer.alloc(0), /empty file/],
    ['random', crypto.randomBytes(4096), /unknown format \(first bytes/],
    ['zstd', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(100)]), /zstd/],
  ];
  for (const [name, data, re] of cases) {
    const file = path.join(dir, `${name}.aci`);
    fs.writeFileSync(file, data);
    const err = await t.throwsAsync(importFile(file), { instanceOf: ImageFormatError });
    t.regex(err?.message ?? '', /is not an ACI: unknown format/);
    t.regex(err?.message ?? '', re);
  }
});

test('malicious content inside a compressed image is refused', async (t) => {
  const pack = tar.pack();
  pack.entry({ name: 'manifest' }, JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/evil' }));
  pack.entry({ name: 'rootfs/', type: 'directory' });
  pack.entry({ name: 'rootfs/etc', type: 'symlink', linkname: '/etc' });
  pack.entry({ name: 'rootfs/etc/cron.d/x' }, '* * * * * root sh');
  pack.finalize();
  const file = path.join(dir, 'evil.aci');
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  fs.writeFileSync(file, Buffer.concat(chunks));
  await execa('gzip', ['-f', file]);
  const err = await t.throwsAsync(importFile(`${file}.gz`), { instanceOf: ImageFormatError });
  t.regex(err?.message ?? '', /entry "rootfs\/etc\/cron.d\/x": path passes through "rootfs\/etc", a symlink/);
});

test('a full disk in the store is reported as such, with the bytes written', async (t) => {
  const aci = await fixture();
  const err = await t.throwsAsync(
    importAci(fs.createReadStream(`${aci}.gz`), fs.createWriteStream('/dev/full'), { name: 'img.aci' }),
    { instanceOf: StoreFullError },
  );
  t.true(err instanceof RktError);
  t.regex(err?.message ?? '', /not enough disk space in the image store for this image: .* after \d+ bytes/);
});

test.serial('a failing sink or source rejects, destroys the streams and stops the decoder', async (t) => {
  const aci = await fixture();
  const source = fs.createReadStream(`${aci}.xz`);
  let writes = 0;
  const sink = new Writable({
    write(_chunk, _enc, cb) {
      if (++writes === 2) cb(Object.assign(new Error('I/O error'), { code: 'EIO' }));
      else cb();
    },
  });
  const err = await t.throwsAsync(importAci(source, sink));
  t.is((err as NodeJS.ErrnoException).code, 'EIO');
  t.true(source.destroyed);
  t.true(sink.destroyed);
  await noDecoderLeft(t);

  // a source that fails mid-way keeps its own error (it is not a format problem)
  const data = fs.readFileSync(`${aci}.bz2`);
  const failing = new PassThrough();
  failing.write(data.subarray(0, data.length >> 1));
  setTimeout(() => failing.destroy(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })), 50);
  const err2 = await t.throwsAsync(importAci(failing, new PassThrough().resume()));
  t.regex(err2?.message ?? '', /connection reset|corrupt or truncated/);
  await noDecoderLeft(t);
});

test('a slow sink gets every byte, in order (backpressure)', async (t) => {
  const aci = await fixture();
  const got: Buffer[] = [];
  const sink = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      setImmediate(cb);
    },
  });
  const result = await importAci(fs.createReadStream(`${aci}.gz`), sink);
  t.true(Buffer.concat(got).equals(fs.readFileSync(aci)));
  t.is(result.size, fs.statSync(aci).size);
});

test.serial('destroying the decompressed stream early kills the decoder', async (t) => {
  const aci = await fixture();
  for (const ext of ['.xz', '.bz2', '.gz']) {
    const source = fs.createReadStream(aci + ext);
    const out = decompress(source, { name: 'x' });
    await new Promise<void>((resolve) => out.once('data', () => resolve()));
    out.destroy();
    await new Promise((r) => setTimeout(r, 20));
    t.true(source.destroyed, ext);
  }
  await noDecoderLeft(t);
  const aborted = new AbortController();
  const out = decompress(Readable.from([fs.readFileSync(`${aci}.xz`)]), { signal: aborted.signal });
  aborted.abort();
  await t.throwsAsync(async () => {
    for await (const _ of out) void _;
  }, { message: /aborted/ });
  await noDecoderLeft(t);
});
