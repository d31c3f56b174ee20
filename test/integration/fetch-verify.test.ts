import test from 'ava';
import fs from 'node:fs';
import { RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { Gpg } from '../helpers/gpg.js';

test('fetch verifies signatures against keys trusted for the image name prefix', async (t) => {
  const env = new RktEnv();
  const gpg = new Gpg();
  t.teardown(() => {
    env.cleanup();
    gpg.cleanup();
  });
  const aci = await buildAci(env.root, { name: 'example.com/signed/app' });
  const good = await gpg.newKey('Good <good@example.com>', env.file('good.asc'));
  const evil = await gpg.newKey('Evil <evil@example.com>', env.file('evil.asc'));
  await gpg.sign('Good <good@example.com>', aci);

  // no key trusted yet
  const none = await env.run(['fetch', aci]);
  t.not(none.exitCode, 0);
  t.regex(String(none.stderr), /rkt trust --prefix/);

  // a key for another prefix does not count
  t.is((await env.run(['trust', '--prefix=example.com/other', '--skip-fingerprint-review', evil])).exitCode, 0);
  t.not((await env.run(['fetch', aci])).exitCode, 0);

  t.is((await env.run(['trust', '--prefix=example.com/signed', '--skip-fingerprint-review', good])).exitCode, 0);
  const ok = await env.run(['fetch', aci]);
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.regex(String(ok.stdout), /^sha512-[0-9a-f]{128}$/m);
  t.regex(String(ok.stderr), /signature verified/);

  // a signature by an untrusted key, given with --signature
  const other = await buildAci(env.root, { name: 'example.com/signed/app2' });
  const evilSig = await gpg.sign('Evil <evil@example.com>', other, env.file('evil-sig.asc'));
  const untrusted = await env.run(['fetch', `--signature=${evilSig}`, other]);
  t.not(untrusted.exitCode, 0);
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 1);

  // data changed after signing
  await gpg.sign('Good <good@example.com>', other);
  fs.appendFileSync(other, Buffer.alloc(1024));
  const tampered = await env.run(['fetch', other]);
  t.not(tampered.exitCode, 0);
  t.is(String(tampered.stderr).trim().split('\n').length, 1);
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 1);
});
