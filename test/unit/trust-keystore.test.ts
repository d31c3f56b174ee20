import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { Keystore, KeyFormatError, formatFingerprint } from '../../src/trust/keystore.js';
import { isTrustPrefix } from '../../src/trust/prefix.js';
import { TrustError, UsageError } from '../../src/errors.js';

// Keys come from real GnuPG in a private GNUPGHOME, as a publisher would make them.

class Gpg {
  readonly home = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-ks-gpg-'));

  async run(args: string[], fakedTime?: string): Promise<string> {
    const faked = fakedTime === undefined ? [] : ['--faked-system-time', fakedTime];
    const r = await execa('gpg', ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', ...faked, ...args], {
      env: { GNUPGHOME: this.home },
      encoding: 'buffer',
      // binary output (keys, signatures) may end in a newline byte that is data
      stripFinalNewline: false,
    });
    return Buffer.from(r.stdout).toString('latin1');
  }

  /** Generate a key; returns its fingerprint (uppercase, as gpg prints it). */
  async gen(uid: string, algo: string, usage = 'sign', expire = 'never', fakedTime?: string): Promise<string> {
    await this.run(['--quick-gen-key', uid, algo, usage, expire], fakedTime);
    const colons = await this.run(['--with-colons', '--list-keys', uid]);
    const fpr = /^fpr:+([0-9A-F]+):/m.exec(colons);
    if (!fpr?.[1]) throw new Error(`no fingerprint for ${uid}`);
    return fpr[1];
  }

  async export(fpr: string, armor = true): Promise<Buffer> {
    const r = await execa('gpg', ['--batch', ...(armor ? ['--armor'] : []), '--export', fpr], { env: { GNUPGHOME: this.home }, encoding: 'buffer', stripFinalNewline: false });
    return Buffer.from(r.stdout);
  }

  async exportSecret(fpr: string): Promise<Buffer> {
    return Buffer.from(await this.run(['--armor', '--export-secret-keys', fpr]), 'latin1');
  }

  /** Apply the revocation certificate gpg made at key generation. */
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
const keys = { rsa: '', ed: '', other: '', expired: '', revoked: '' };

test.before(async () => {
  keys.rsa = await gpg.gen('Rsa Signer <rsa@example.com>', 'rsa2048');
  keys.ed = await gpg.gen('Ed Signer <ed@example.com>', 'ed25519');
  keys.other = await gpg.gen('Other <other@example.com>', 'ed25519');
  keys.expired = await gpg.gen('Old <old@example.com>', 'ed25519', 'sign', '1d', '20200101T000000');
  keys.revoked = await gpg.gen('Gone <gone@example.com>', 'ed25519');
  await gpg.revoke(keys.revoked);
});
test.after.always(() => gpg.cleanup());

function world(t: { teardown: (fn: () => void) => void }): { root: string; ks: Keystore; dirs: { localConfig: string; systemConfig: string; userConfig: string } } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-ks-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const dirs = { localConfig: path.join(root, 'etc'), systemConfig: path.join(root, 'lib'), userConfig: path.join(root, 'user') };
  return { root, ks: new Keystore(dirs), dirs };
}

/** Place a key file by hand, the way an administrator or distribution pre-populates the store. */
function place(dir: string, rel: string, data: Buffer | string): string {
  const file = path.join(dir, 'trustedkeys', rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
  return file;
}

test('a prefix key is stored armored under prefix.d/<prefix>/<lowercase fingerprint> in the local config', async (t) => {
  const { ks, dirs } = world(t);
  const added = await ks.addKey(await gpg.export(keys.rsa), { prefix: 'example.com/app' });
  t.is(added.fingerprint, keys.rsa.toLowerCase());
  t.is(added.path, path.join(dirs.localConfig, 'trustedkeys/prefix.d/example.com/app', keys.rsa.toLowerCase()));
  t.regex(fs.readFileSync(added.path, 'utf8'), /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
  t.is(fs.statSync(added.path).mode & 0o777, 0o644);
  // Only the key file: the atomic write leaves no temporary sibling behind.
  t.deepEqual(fs.readdirSync(path.dirname(added.path)), [keys.rsa.toLowerCase()]);
});

test('a root key goes to root.d; a binary key is accepted and stored armored', async (t) => {
  const { ks, dirs } = world(t);
  const added = await ks.addKey(await gpg.export(keys.ed, false), { root: true });
  t.is(added.path, path.join(dirs.localConfig, 'trustedkeys/root.d', keys.ed.toLowerCase()));
  t.regex(fs.readFileSync(added.path, 'utf8'), /BEGIN PGP PUBLIC KEY BLOCK/);
  const found = await ks.keysFor('anything.org/whatever');
  t.deepEqual(found.map((k) => [k.fingerprint, k.prefix, k.level]), [[keys.ed.toLowerCase(), null, 'local']]);
  t.deepEqual(found[0]?.userIds, ['Ed Signer <ed@example.com>']);
});

test('prefix keys match at path-segment boundaries only', async (t) => {
  const { ks } = world(t);
  await ks.addKey(await gpg.export(keys.rsa), { prefix: 'example.com/app' });
  const fp = keys.rsa.toLowerCase();
  const fps = async (name: string) => (await ks.keysFor(name)).map((k) => k.fingerprint);
  t.deepEqual(await fps('example.com/app'), [fp]);
  t.deepEqual(await fps('example.com/app/sub'), [fp]);
  t.deepEqual(await fps('example.com/app/sub/deeper'), [fp]);
  t.deepEqual(await fps('example.com/apples'), []);
  t.deepEqual(await fps('example.com'), []);
  t.deepEqual(await fps('other.com/app'), []);
});

test('keys are read from system, local and user config dirs', async (t) => {
  const { ks, dirs } = world(t);
  place(dirs.systemConfig, `root.d/${keys.rsa.toLowerCase()}`, await gpg.export(keys.rsa));
  place(dirs.userConfig, `prefix.d/example.com/${keys.ed.toLowerCase()}`, await gpg.export(keys.ed));
  place(dirs.localConfig, `prefix.d/example.com/app/${keys.other.toLowerCase()}`, await gpg.export(keys.other));
  const found = await ks.keysFor('example.com/app');
  t.deepEqual(
    found.map((k) => [k.level, k.prefix]).sort(),
    [['local', 'example.com/app'], ['system', null], ['user', 'example.com']].sort(),
  );
  const listed = await ks.list();
  t.is(listed.length, 3);
  t.true(listed.every((e) => !e.mask && e.userIds.length === 1));
});

test('an empty file in the local config masks a key shipped in the system config', async (t) => {
  const { ks, dirs } = world(t);
  const fp = keys.rsa.toLowerCase();
  place(dirs.systemConfig, `prefix.d/coreos.com/${fp}`, await gpg.export(keys.rsa));
  place(dirs.systemConfig, `root.d/${keys.ed.toLowerCase()}`, await gpg.export(keys.ed));
  t.is((await ks.keysFor('coreos.com/etcd')).length, 2);
  place(dirs.localConfig, `prefix.d/coreos.com/${fp}`, '');
  t.deepEqual((await ks.keysFor('coreos.com/etcd')).map((k) => k.fingerprint), [keys.ed.toLowerCase()]);
  // A mask scoped to one prefix leaves the root key trusted elsewhere...
  place(dirs.localConfig, `prefix.d/coreos.com/${keys.ed.toLowerCase()}`, '');
  t.deepEqual(await ks.keysFor('coreos.com/etcd'), []);
  t.is((await ks.keysFor('example.com/x')).length, 1);
  // ...and a lower-precedence mask does not hide a key trusted above it.
  place(dirs.systemConfig, `root.d/${keys.other.toLowerCase()}`, '');
  place(dirs.userConfig, `root.d/${keys.other.toLowerCase()}`, await gpg.export(keys.other));
  t.deepEqual((await ks.keysFor('example.com/x')).map((k) => k.fingerprint).sort(), [keys.ed.toLowerCase(), keys.other.toLowerCase()].sort());
  t.true((await ks.list()).some((e) => e.mask && e.fingerprint === fp));
});

test('re-trusting a key overwrites it and trusting it clears a local mask', async (t) => {
  const { ks, dirs } = world(t);
  const fp = keys.rsa.toLowerCase();
  place(dirs.localConfig, `prefix.d/example.com/app/${fp}`, '');
  t.deepEqual(await ks.keysFor('example.com/app'), []);
  await ks.addKey(await gpg.export(keys.rsa), { prefix: 'example.com/app' });
  await ks.addKey(await gpg.export(keys.rsa), { prefix: 'example.com/app' });
  t.is((await ks.keysFor('example.com/app')).length, 1);
});

test('a key file whose name is not its fingerprint fails loudly; other names are ignored', async (t) => {
  const { ks, dirs } = world(t);
  place(dirs.localConfig, 'root.d/README', 'not a key');
  place(dirs.localConfig, 'root.d/.hidden', 'not a key');
  t.deepEqual(await ks.keysFor('example.com/app'), []);
  place(dirs.localConfig, `root.d/${keys.ed.toLowerCase()}`, await gpg.export(keys.rsa));
  const err = await t.throwsAsync(ks.keysFor('example.com/app'), { instanceOf: TrustError });
  t.regex(err?.message ?? '', /holds key .* not .*rename/);
});

test('private keys, non-keys and several keys in one file are refused', async (t) => {
  const { ks, dirs } = world(t);
  const priv = await t.throwsAsync(ks.addKey(await gpg.exportSecret(keys.rsa), { root: true }), { instanceOf: KeyFormatError });
  t.regex(priv?.message ?? '', /PRIVATE key/);
  await t.throwsAsync(ks.addKey(Buffer.from('hello'), { root: true }), { instanceOf: KeyFormatError, message: /not an OpenPGP public key/ });
  await t.throwsAsync(ks.addKey(Buffer.alloc(0), { root: true }), { instanceOf: KeyFormatError, message: /empty/ });
  const two = Buffer.concat([await gpg.export(keys.rsa, false), await gpg.export(keys.ed, false)]);
  await t.throwsAsync(ks.addKey(two, { root: true }), { instanceOf: KeyFormatError, message: /holds 2 keys/ });
  t.false(fs.existsSync(path.join(dirs.localConfig, 'trustedkeys')));
});

test('revoked and expired keys are refused at trust time', async (t) => {
  const { ks } = world(t);
  await t.throwsAsync(ks.addKey(await gpg.export(keys.revoked), { root: true }), { instanceOf: KeyFormatError, message: /revoked/ });
  await t.throwsAsync(ks.addKey(await gpg.export(keys.expired), { root: true }), { instanceOf: KeyFormatError, message: /expired on 2020-01-02/ });
});

test('prefix and root are exclusive, one is required, and the prefix must be an AC identifier', async (t) => {
  const { ks } = world(t);
  const key = await gpg.export(keys.rsa);
  await t.throwsAsync(ks.addKey(key, { root: true, prefix: 'example.com' }), { instanceOf: UsageError });
  await t.throwsAsync(ks.addKey(key, {}), { instanceOf: UsageError });
  for (const bad of ['../etc', 'example.com/../x', 'Example.com', 'example.com/', '/abs', 'a//b', '']) {
    await t.throwsAsync(ks.addKey(key, { prefix: bad }), { instanceOf: UsageError }, bad);
  }
  await t.throwsAsync(ks.keysFor('../../etc'), { instanceOf: TrustError });
});

test('helpers: trust prefixes and fingerprint display', (t) => {
  t.true(isTrustPrefix('sub-domain.example.com/org/product/release'));
  t.true(isTrustPrefix('example.com/~user/app_v1'));
  for (const bad of ['example.com/../etc', 'a//b', 'a/./b', 'Example.com', '/abs', 'x/']) t.false(isTrustPrefix(bad), bad);
  t.is(formatFingerprint('8b86de38890ddb7291867b025210bd8888182190'), '8B86 DE38 890D DB72 9186  7B02 5210 BD88 8818 2190');
});
