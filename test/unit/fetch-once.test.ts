import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import test, { type ExecutionContext } from 'ava';
import { execa } from 'execa';
import { parseInsecureOptions } from '../../src/config/insecure.js';
import type { GlobalOptions } from '../../src/config/global.js';
import { fetchFile } from '../../src/fetch/fetch.js';
import { Store } from '../../src/store/store.js';
import { Keystore } from '../../src/trust/keystore.js';
import { BadSignatureError } from '../../src/trust/verify.js';
import { tee } from '../../src/util/tee.js';
import { buildAci } from '../helpers/aci.js';
import { Gpg } from '../helpers/gpg.js';

// The image file is read once: what is stored is what the signature was checked over.

const gpg = new Gpg();
const UID = 'Publisher <pub@example.com>';
let publicKey: Buffer;
test.before(async () => {
  publicKey = fs.readFileSync(await gpg.newKey(UID, path.join(gpg.home, 'pub.asc')));
});
test.after.always(() => gpg.cleanup());

async function world(t: ExecutionContext) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fetch-once-'));
  const globals: GlobalOptions = {
    dir: path.join(root, 'data'),
    localConfig: path.join(root, 'etc'),
    systemConfig: path.join(root, 'lib'),
    userConfig: path.join(root, 'user'),
    insecureOptions: parseInsecureOptions(''),
    debug: false,
    trustKeysFromHttps: false,
  };
  await new Keystore(globals).addKey(publicKey, { prefix: 'example.com/once' });
  const store = Store.open(globals.dir);
  t.teardown(() => {
    store.close();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const good = await buildAci(root, { name: 'example.com/once/app', busybox: false, files: { which: 'good' } });
  const evil = await buildAci(root, { name: 'example.com/once/app', busybox: false, files: { which: 'evil' } });
  return { root, globals, store, good, evil };
}

const idOf = (file: string): string => `sha512-${crypto.createHash('sha512').update(fs.readFileSync(file)).digest('hex')}`;

test('an image path swapped while its signature is read: the unsigned image is never stored', async (t) => {
  const { root, globals, store, good, evil } = await world(t);
  const goodSig = fs.readFileSync(await gpg.sign(UID, good));
  const link = path.join(root, 'image.aci');
  fs.symlinkSync(evil, link);
  await execa('mkfifo', [`${link}.asc`]);

  const fetching = fetchFile(store, globals, link).then(
    (id) => ({ id }),
    (err: Error) => ({ err }),
  );
  // Opening the FIFO for writing returns once the fetch opens the signature.
  const sig = await fs.promises.open(`${link}.asc`, 'w');
  fs.symlinkSync(good, `${link}.new`);
  fs.renameSync(`${link}.new`, link);
  await sig.write(goodSig);
  await sig.close();
  const outcome = await fetching;

  const stored = store.listImages().map((i) => i.id);
  t.false(stored.includes(idOf(evil)));
  if ('id' in outcome) t.deepEqual(stored, [idOf(good)]);
  else {
    t.true(outcome.err instanceof BadSignatureError, String(outcome.err));
    t.deepEqual(stored, []);
  }
});

test('bytes after the compressed image, which the import ignores, are still covered by the signature', async (t) => {
  const { root, globals, store } = await world(t);
  const aci = await buildAci(root, { name: 'example.com/once/gz', busybox: false, files: { a: 'a' }, compression: 'gzip' });
  // gzip readers stop at the end of the gzip stream and ignore what follows
  fs.appendFileSync(aci, Buffer.alloc(300_000));
  await gpg.sign(UID, aci);
  const id = await fetchFile(store, globals, aci);
  t.is(store.listImages().length, 1);
  store.removeImage(id);

  const fd = fs.openSync(aci, 'r+');
  fs.writeSync(fd, Buffer.from('x'), 0, 1, fs.fstatSync(fd).size - 1);
  fs.closeSync(fd);
  await t.throwsAsync(fetchFile(store, globals, aci), { instanceOf: BadSignatureError });
  t.is(store.listImages().length, 0);
  t.deepEqual(fs.readdirSync(store.layout.tmpDir), []);
});

test('tee: every branch sees every byte once; a branch that may stop early is skipped after it stops', async (t) => {
  const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024, i));
  const all = Buffer.concat(chunks);
  const seen: Buffer[] = [];
  const slow = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      seen.push(chunk);
      setImmediate(cb);
    },
  });
  const early = new PassThrough({ highWaterMark: 1024 });
  let earlyBytes = 0;
  early.on('data', (c: Buffer) => {
    earlyBytes += c.length;
    if (earlyBytes >= 4 * 64 * 1024) early.destroy();
  });
  await tee(Readable.from(chunks), [{ stream: early, mayStopEarly: true }, { stream: slow }]);
  t.true(Buffer.concat(seen).equals(all));
  t.true(earlyBytes < all.length);
});

test('tee: a branch that must see everything and fails stops the read and fails the others', async (t) => {
  let reads = 0;
  const source = new Readable({
    read() {
      reads++;
      this.push(Buffer.alloc(1024));
    },
  });
  const failing = new Writable({
    write(_chunk, _enc, cb) {
      cb(reads > 3 ? new Error('check failed') : null);
    },
  });
  const other = new PassThrough();
  other.resume();
  await t.throwsAsync(tee(source, [{ stream: other, mayStopEarly: true }, { stream: failing }]), { message: 'check failed' });
  t.true(source.destroyed);
  t.true(other.destroyed);
});
