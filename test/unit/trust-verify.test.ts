import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { Keystore } from '../../src/trust/keystore.js';
import {
  BadSignatureError,
  KeyValidityError,
  NoTrustedKeyError,
  SignatureMissingError,
  UntrustedSignerError,
  verifySignature,
} from '../../src/trust/verify.js';

// Signatures made by real GnuPG (gpg --detach-sign), checked by our verifier.

class Gpg {
  readonly home = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-vf-gpg-'));

  async run(args: string[], fakedTime?: string): Promise<string> {
    const faked = fakedTime === undefined ? [] : ['--faked-system-time', fakedTime];
    const r = await execa('gpg', ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', ...faked, ...args], { env: { GNUPGHOME: this.home } });
    return r.stdout;
  }

  async gen(uid: string, algo: string, usage = 'sign', expire = 'never', fakedTime?: string): Promise<string> {
    await this.run(['--quick-gen-key', uid, algo, usage, expire], fakedTime);
    const fpr = /^fpr:+([0-9A-F]+):/m.exec(await this.run(['--with-colons', '--list-keys', uid]));
    if (!fpr?.[1]) throw new Error(`no fingerprint for ${uid}`);
    return fpr[1];
  }

  async export(fpr: string): Promise<Buffer> {
    return Buffer.from(await this.run(['--armor', '--export', fpr]));
  }

  /** Detached signature of `file` by key `fpr` (gpg picks its signing subkey if it has one). */
  async sign(fpr: string, file: string, opts: { armor?: boolean; fakedTime?: string; extra?: string[] } = {}): Promise<string> {
    const armor = opts.armor ?? true;
    const out = `${file}.${crypto.randomBytes(4).toString('hex')}.${armor ? 'asc' : 'sig'}`;
    await this.run(['--yes', '-u', fpr, ...(armor ? ['--armor'] : []), ...(opts.extra ?? []), '--output', out, '--detach-sign', file], opts.fakedTime);
    return out;
  }

  async revoke(fpr: string): Promise<void> {
    const rev = fs.readFileSync(path.join(this.home, 'openpgp-revocs.d', `${fpr}.rev`), 'utf8').replace(/^:-----/m, '-----');
    const file = path.join(this.home, `${fpr}.rev.asc`);
    fs.writeFileSync(file, rev);
    await this.run(['--import', file]);
  }

  async cleanup(): Promise<void> {
    await execa('gpgconf', ['--kill', 'gpg-agent'], { env: { GNUPGHOME: this.home }, reject: false });
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

const gpg = new Gpg();
const keys = { rsa: '', ed: '', stranger: '', sub: '', expired: '', revoked: '' };
let revokedBefore: Buffer = Buffer.alloc(0);

test.before(async () => {
  keys.rsa = await gpg.gen('Rsa Signer <rsa@example.com>', 'rsa2048');
  keys.ed = await gpg.gen('Ed Signer <ed@example.com>', 'ed25519');
  keys.stranger = await gpg.gen('Stranger <stranger@example.com>', 'ed25519');
  // A certify-only primary key with a signing subkey, the usual publisher setup.
  keys.sub = await gpg.gen('Sub Signer <sub@example.com>', 'rsa2048', 'cert');
  await gpg.run(['--quick-add-key', keys.sub, 'ed25519', 'sign', 'never']);
  // Valid for one day in January 2020; it signs while still valid.
  keys.expired = await gpg.gen('Old <old@example.com>', 'ed25519', 'sign', '1d', '20200101T000000');
  keys.revoked = await gpg.gen('Gone <gone@example.com>', 'ed25519');
  revokedBefore = await gpg.export(keys.revoked);
});
test.after.always(() => gpg.cleanup());

interface World {
  dir: string;
  ks: Keystore;
  local: string;
  image: string;
}

function world(t: { teardown: (fn: () => void) => void }, size = 64 * 1024): World {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-vf-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const local = path.join(dir, 'etc');
  const ks = new Keystore({ localConfig: local, systemConfig: path.join(dir, 'lib'), userConfig: path.join(dir, 'user') });
  const image = path.join(dir, 'app.aci');
  fs.writeFileSync(image, crypto.randomBytes(size));
  return { dir, ks, local, image };
}

const NAME = 'example.com/app';

/** The image as the stream verifySignature reads once. */
function data(file: string): { data: fs.ReadStream; dataName: string } {
  return { data: fs.createReadStream(file, { highWaterMark: 1 << 20 }), dataName: file };
}

test('an armored RSA signature by a prefix-trusted key verifies', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const sig = await gpg.sign(keys.rsa, w.image);
  const signer = await verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig });
  t.deepEqual(signer, { fingerprint: keys.rsa.toLowerCase(), userIds: ['Rsa Signer <rsa@example.com>'] });
});

test('a binary ed25519 signature by a root key verifies for any name', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.ed), { root: true });
  const sig = await gpg.sign(keys.ed, w.image, { armor: false });
  const signer = await verifySignature({ keystore: w.ks, imageName: 'other.org/thing', ...data(w.image), signaturePath: sig });
  t.is(signer.fingerprint, keys.ed.toLowerCase());
});

test('a signature by a signing subkey verifies against its trusted primary key', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.sub), { prefix: 'example.com' });
  const sig = await gpg.sign(keys.sub, w.image);
  // The issuer is the subkey, not the primary key.
  const issuer = /:signature packet: algo \d+, keyid ([0-9A-F]{16})/.exec(await gpg.run(['--list-packets', sig]))?.[1];
  t.truthy(issuer);
  t.not(issuer, keys.sub.slice(-16));
  const signer = await verifySignature({ keystore: w.ks, imageName: `${NAME}/sub`, ...data(w.image), signaturePath: sig });
  t.is(signer.fingerprint, keys.sub.toLowerCase());
});

test('no trusted key for the name: the message says how to trust one or skip', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const sig = await gpg.sign(keys.rsa, w.image);
  // "example.com/apples" is not under "example.com/app".
  const err = await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: 'example.com/apples', ...data(w.image), signaturePath: sig }), {
    instanceOf: NoTrustedKeyError,
  });
  t.regex(err?.message ?? '', /rkt trust --prefix=example\.com\/apples <key file>/);
  t.regex(err?.message ?? '', /--insecure-options=image/);
});

test('a signature by a key that is not trusted for the name is refused', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  // The stranger is trusted, but for another prefix only.
  await w.ks.addKey(await gpg.export(keys.stranger), { prefix: 'stranger.org' });
  const sig = await gpg.sign(keys.stranger, w.image);
  const err = await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), {
    instanceOf: UntrustedSignerError,
  });
  t.regex(err?.message ?? '', new RegExp(keys.stranger.slice(-16), 'i'));
});

test('changed data is a bad signature', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const sig = await gpg.sign(keys.rsa, w.image, { armor: false });
  // flip a byte: writing a fixed value would leave random data unchanged once in 256 runs
  const fd = fs.openSync(w.image, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, 1000);
  fs.writeSync(fd, Buffer.from([b[0]! ^ 0xff]), 0, 1, 1000);
  fs.closeSync(fd);
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), { instanceOf: BadSignatureError, message: /does not match/ });
});

test('a SHA-1 signature is refused even though the data matches', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const sig = await gpg.sign(keys.rsa, w.image, { extra: ['--digest-algo', 'SHA1'] });
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), {
    instanceOf: BadSignatureError,
    message: /not acceptable: .*SHA1/,
  });
});

test('a signature file that is not a signature is refused', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const junk = path.join(w.dir, 'junk.asc');
  fs.writeFileSync(junk, 'this is not a signature\n');
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: junk }), { instanceOf: BadSignatureError });
});

test('a missing signature file names the path looked for', async (t) => {
  const w = world(t);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const err = await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: `${w.image}.asc` }), {
    instanceOf: SignatureMissingError,
  });
  t.true(err?.message.includes(`"${w.image}.asc"`));
});

test('a key that has expired since it signed is refused', async (t) => {
  const w = world(t);
  // Placed by hand: `rkt trust` itself refuses expired keys.
  const file = path.join(w.local, 'trustedkeys/prefix.d/example.com/app', keys.expired.toLowerCase());
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, await gpg.export(keys.expired));
  const sig = await gpg.sign(keys.expired, w.image, { fakedTime: '20200101T010000' });
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), {
    instanceOf: KeyValidityError,
    message: /expired on 2020-01-02/,
  });
});

test('a key revoked after signing is refused once its revocation is in the keystore', async (t) => {
  const w = world(t);
  const sig = await gpg.sign(keys.revoked, w.image);
  const added = await w.ks.addKey(revokedBefore, { prefix: NAME });
  t.truthy(await verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }));
  await gpg.revoke(keys.revoked);
  // The administrator replaces the trusted copy with the publisher's revoked key.
  fs.writeFileSync(added.path, await gpg.export(keys.revoked));
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), { instanceOf: KeyValidityError, message: /revoked/ });
});

test('a masked key no longer verifies', async (t) => {
  const w = world(t);
  const sys = path.join(w.dir, 'lib/trustedkeys/root.d', keys.ed.toLowerCase());
  fs.mkdirSync(path.dirname(sys), { recursive: true });
  fs.writeFileSync(sys, await gpg.export(keys.ed));
  const sig = await gpg.sign(keys.ed, w.image);
  t.truthy(await verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }));
  fs.mkdirSync(path.join(w.local, 'trustedkeys/root.d'), { recursive: true });
  fs.writeFileSync(path.join(w.local, 'trustedkeys/root.d', keys.ed.toLowerCase()), '');
  await t.throwsAsync(verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig }), { instanceOf: NoTrustedKeyError });
});

test('a 200 MB image is verified as a stream', async (t) => {
  const w = world(t, 0);
  // 200 MiB of incompressible data: one random MiB, varied per copy.
  const fd = fs.openSync(w.image, 'w');
  const chunk = crypto.randomBytes(1 << 20);
  for (let i = 0; i < 200; i++) {
    chunk.writeUInt32BE(i, 0);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  await w.ks.addKey(await gpg.export(keys.rsa), { prefix: NAME });
  const sig = await gpg.sign(keys.rsa, w.image);
  const rssBefore = process.memoryUsage().rss;
  const started = performance.now();
  const signer = await verifySignature({ keystore: w.ks, imageName: NAME, ...data(w.image), signaturePath: sig });
  const ms = performance.now() - started;
  const rssGrowth = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  t.log(`verified 200 MiB in ${ms.toFixed(0)} ms (RSS grew ${rssGrowth.toFixed(0)} MiB)`);
  t.is(signer.fingerprint, keys.rsa.toLowerCase());
  // Streaming: memory must not grow with the image.
  t.true(rssGrowth < 150, `RSS grew ${rssGrowth} MiB`);
});
