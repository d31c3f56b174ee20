import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { execa } from 'execa';
import { RktEnv } from '../helpers/rkt.js';
import { Keystore } from '../../src/trust/keystore.js';

// The real `rkt trust` binary against keys made by real GnuPG.

const gnupgHome = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-cli-gpg-'));
const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'trust-cli-keys-'));
const gpgArgs = ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', ''];
let fpr = '';
let fpr2 = '';
const files = { pub: '', pub2: '', binary: '', secret: '', junk: '' };

async function gpg(args: string[]): Promise<string> {
  return (await execa('gpg', [...gpgArgs, ...args], { env: { GNUPGHOME: gnupgHome } })).stdout;
}

async function genKey(uid: string): Promise<string> {
  await gpg(['--quick-gen-key', uid, 'ed25519', 'sign', 'never']);
  const m = /^fpr:+([0-9A-F]+):/m.exec(await gpg(['--with-colons', '--list-keys', uid]));
  if (!m?.[1]) throw new Error(`no fingerprint for ${uid}`);
  return m[1];
}

test.before(async () => {
  fpr = await genKey('CLI Signer <cli@example.com>');
  fpr2 = await genKey('Second Signer <second@example.com>');
  files.pub = path.join(keyDir, 'pub.asc');
  files.pub2 = path.join(keyDir, 'pub2.asc');
  files.binary = path.join(keyDir, 'pub.gpg');
  files.secret = path.join(keyDir, 'secret.asc');
  files.junk = path.join(keyDir, 'junk.asc');
  await gpg(['--armor', '--output', files.pub, '--export', fpr]);
  await gpg(['--armor', '--output', files.pub2, '--export', fpr2]);
  await gpg(['--output', files.binary, '--export', fpr]);
  await gpg(['--armor', '--output', files.secret, '--export-secret-keys', fpr]);
  fs.writeFileSync(files.junk, 'not a key at all\n');
});

test.after.always(async () => {
  await execa('gpgconf', ['--kill', 'gpg-agent'], { env: { GNUPGHOME: gnupgHome }, reject: false });
  fs.rmSync(gnupgHome, { recursive: true, force: true });
  fs.rmSync(keyDir, { recursive: true, force: true });
});

function env(t: { teardown: (fn: () => void) => void }): RktEnv {
  const e = new RktEnv('rkt-trust-');
  t.teardown(() => e.cleanup());
  return e;
}

function prefixPath(e: RktEnv, prefix: string, fp: string): string {
  return path.join(e.localConfig, 'trustedkeys/prefix.d', prefix, fp.toLowerCase());
}

function nothingWritten(t: { false: (v: boolean) => void }, e: RktEnv): void {
  for (const d of [e.localConfig, e.systemConfig, e.userConfig]) t.false(fs.existsSync(path.join(d, 'trustedkeys')));
}

/** A user error is one line on stderr: no stack, no usage dump. */
function oneLine(stderr: unknown): string {
  const lines = String(stderr).trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line, got:\n${String(stderr)}`);
  return lines[0] ?? '';
}

test('--skip-fingerprint-review trusts a key for a prefix in the local config', async (t) => {
  const e = env(t);
  const r = await e.run(['trust', '--prefix=example.com/app', '--skip-fingerprint-review', files.pub]);
  t.is(r.exitCode, 0, String(r.stderr));
  const target = prefixPath(e, 'example.com/app', fpr);
  t.true(String(r.stderr).includes(`Added key for prefix "example.com/app" at "${target}"`));
  t.notRegex(String(r.stderr), /Are you sure/);
  t.regex(fs.readFileSync(target, 'utf8'), /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
  t.is(r.stdout, '');
  t.false(fs.existsSync(path.join(e.systemConfig, 'trustedkeys')));
  t.false(fs.existsSync(path.join(e.userConfig, 'trustedkeys')));
  // What the CLI wrote is what verification reads.
  const ks = new Keystore(e);
  t.deepEqual((await ks.keysFor('example.com/app/worker')).map((k) => k.fingerprint), [fpr.toLowerCase()]);
});

test('"yes" on stdin after the fingerprint review trusts the key', async (t) => {
  const e = env(t);
  const r = await e.run(['trust', '--prefix', 'example.com/app', files.pub], { input: 'yes\n' });
  t.is(r.exitCode, 0, String(r.stderr));
  const err = String(r.stderr);
  t.true(err.includes('Prefix: "example.com/app"'));
  t.true(err.includes(`Key: "${files.pub}"`));
  const spaced = fpr.match(/.{4}/g) ?? [];
  t.true(err.includes(`GPG key fingerprint is: ${spaced.slice(0, 5).join(' ')}  ${spaced.slice(5).join(' ')}`), err);
  t.true(err.includes('CLI Signer <cli@example.com>'));
  t.true(err.includes('Are you sure you want to trust this key (yes/no)?'));
  t.true(fs.existsSync(prefixPath(e, 'example.com/app', fpr)));
});

test('"y" trusts a binary key as a root key', async (t) => {
  const e = env(t);
  const r = await e.run(['trust', '--root', files.binary], { input: 'y\n' });
  t.is(r.exitCode, 0, String(r.stderr));
  const target = path.join(e.localConfig, 'trustedkeys/root.d', fpr.toLowerCase());
  t.true(String(r.stderr).includes(`Added root key at "${target}"`));
  t.regex(fs.readFileSync(target, 'utf8'), /BEGIN PGP PUBLIC KEY BLOCK/);
});

for (const [label, input] of [
  ['"no"', 'no\n'],
  ['anything but yes', 'sure\n'],
  ['no answer at all', ''],
] as const) {
  test(`${label} on stdin trusts nothing and fails`, async (t) => {
    const e = env(t);
    const r = await e.run(['trust', '--prefix=example.com/app', files.pub], { input });
    t.is(r.exitCode, 254);
    t.regex(String(r.stderr), /Are you sure you want to trust this key/);
    t.regex(String(r.stderr), /rkt: key ".*" was not trusted/);
    nothingWritten(t, e);
  });
}

test('several keys are reviewed one by one; a refused one is not written, the accepted one is', async (t) => {
  const e = env(t);
  const r = await e.run(['trust', '--prefix=example.com', files.pub, files.pub2], { input: 'no\nyes\n' });
  t.is(r.exitCode, 254);
  t.false(fs.existsSync(prefixPath(e, 'example.com', fpr)));
  t.true(fs.existsSync(prefixPath(e, 'example.com', fpr2)));
});

// Arguments are built at run time: the key paths exist only after test.before.
const usage: [string, () => string[], RegExp][] = [
  ['neither --prefix nor --root', () => ['trust', files.pub], /--prefix=NAME .* or --root/],
  ['both --prefix and --root', () => ['trust', '--root', '--prefix=example.com', files.pub], /mutually exclusive/],
  ['--root without a key file', () => ['trust', '--root'], /--root needs a key file/],
  ['an invalid prefix', () => ['trust', '--prefix=../../etc', files.pub], /invalid --prefix/],
];
for (const [label, args, message] of usage) {
  test(`usage error: ${label}`, async (t) => {
    const e = env(t);
    const r = await e.run(args());
    t.is(r.exitCode, 254, String(r.stderr));
    t.regex(oneLine(r.stderr), message);
    nothingWritten(t, e);
  });
}

test('bad key files are one-line errors and nothing is written', async (t) => {
  const e = env(t);
  const cases: [() => string, RegExp][] = [
    [() => path.join(keyDir, 'missing.asc'), /cannot read key file ".*missing\.asc": no such file/],
    [() => keyDir, /cannot read key file .*not a regular file/],
    [() => files.junk, /not an OpenPGP public key/],
    [() => files.secret, /PRIVATE key/],
  ];
  for (const [file, message] of cases) {
    const r = await e.run(['trust', '--prefix=example.com/app', '--skip-fingerprint-review', file()]);
    t.is(r.exitCode, 254, file());
    t.regex(oneLine(r.stderr), message);
  }
  // A bad file anywhere in the list stops everything before the first write.
  const r = await e.run(['trust', '--prefix=example.com/app', '--skip-fingerprint-review', files.pub, files.junk]);
  t.is(r.exitCode, 254);
  nothingWritten(t, e);
});

test('keys over plain http need --insecure-allow-http', async (t) => {
  const e = env(t);
  const server = http.createServer((req, res) => {
    if (req.url === '/pubkeys.gpg') res.end(fs.readFileSync(files.pub));
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const refused = await e.run(['trust', '--prefix=example.com/app', '--skip-fingerprint-review', `${base}/pubkeys.gpg`]);
  t.is(refused.exitCode, 254);
  t.regex(oneLine(refused.stderr), /plain http.*--insecure-allow-http/);
  nothingWritten(t, e);

  const missing = await e.run(['trust', '--prefix=example.com/app', '--insecure-allow-http', '--skip-fingerprint-review', `${base}/nope`]);
  t.regex(oneLine(missing.stderr), /HTTP status 404/);

  const ok = await e.run(['trust', '--prefix=example.com/app', '--insecure-allow-http', `${base}/pubkeys.gpg`], { input: 'yes\n' });
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.true(fs.existsSync(prefixPath(e, 'example.com/app', fpr)));
});
