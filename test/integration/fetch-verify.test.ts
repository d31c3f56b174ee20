import test, { type ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { execa, execaSync } from 'execa';
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
  const none = await env.run(['fetch', '--full', aci]);
  t.not(none.exitCode, 0);
  t.regex(String(none.stderr), /rkt trust --prefix/);

  // a key for another prefix does not count
  t.is((await env.run(['trust', '--prefix=example.com/other', '--skip-fingerprint-review', evil])).exitCode, 0);
  t.not((await env.run(['fetch', '--full', aci])).exitCode, 0);

  t.is((await env.run(['trust', '--prefix=example.com/signed', '--skip-fingerprint-review', good])).exitCode, 0);
  const ok = await env.run(['fetch', '--full', aci]);
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.regex(String(ok.stdout), /^sha512-[0-9a-f]{128}$/m);
  t.regex(String(ok.stderr), /signature verified/);

  // a signature by an untrusted key, given with --signature
  const other = await buildAci(env.root, { name: 'example.com/signed/app2' });
  const evilSig = await gpg.sign('Evil <evil@example.com>', other, env.file('evil-sig.asc'));
  const untrusted = await env.run(['fetch', '--full', `--signature=${evilSig}`, other]);
  t.not(untrusted.exitCode, 0);
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 1);

  // data changed after signing
  await gpg.sign('Good <good@example.com>', other);
  fs.appendFileSync(other, Buffer.alloc(1024));
  const tampered = await env.run(['fetch', '--full', other]);
  t.not(tampered.exitCode, 0);
  t.is(String(tampered.stderr).trim().split('\n').length, 1);
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 1);
});

/** Hex sha512 of an uncompressed ACI: its image ID in the store. */
function imageId(file: string): string {
  return `sha512-${crypto.createHash('sha512').update(fs.readFileSync(file)).digest('hex')}`;
}

async function storedIds(env: RktEnv): Promise<string[]> {
  const list = await env.run(['image', 'list', '--format=json']);
  return (JSON.parse(String(list.stdout)) as { id: string }[]).map((i) => i.id);
}

/** A world with a trusted key, a signed image and an unsigned one of the same name. */
async function raceWorld(t: ExecutionContext) {
  const env = new RktEnv();
  const gpg = new Gpg();
  t.teardown(() => {
    env.cleanup();
    gpg.cleanup();
  });
  const key = await gpg.newKey('Good <good@example.com>', env.file('good.key'));
  t.is((await env.run(['trust', '--prefix=example.com/race', '--skip-fingerprint-review', key])).exitCode, 0);
  const good = await buildAci(env.root, { name: 'example.com/race/app', busybox: false, files: { which: 'good' } });
  const evil = await buildAci(env.root, { name: 'example.com/race/app', busybox: false, files: { which: 'evil' } });
  const goodSig = fs.readFileSync(await gpg.sign('Good <good@example.com>', good));
  return { env, good, evil, goodSig };
}

// rkt used to open the image twice: once to store it, once to check the
// signature. Here the image path is a symlink to an unsigned image, swapped
// for the signed one at the moment rkt opens the signature (a FIFO, so the
// test knows that moment exactly): the old code stored the unsigned image and
// said "signature verified".
test('the signature is checked over the bytes that are stored, even when the file is swapped meanwhile', async (t) => {
  const { env, good, evil, goodSig } = await raceWorld(t);
  const link = env.file('image.aci');
  fs.symlinkSync(evil, link);
  execaSync('mkfifo', [`${link}.asc`]);

  const fetching = env.run(['fetch', '--full', link]);
  const sig = await fs.promises.open(`${link}.asc`, 'w'); // returns once rkt opens the signature
  fs.symlinkSync(good, `${link}.new`);
  fs.renameSync(`${link}.new`, link);
  await sig.write(goodSig);
  await sig.close();
  const r = await fetching;

  const ids = await storedIds(env);
  t.false(ids.includes(imageId(evil)), `the unsigned image was stored; rkt said: ${String(r.stderr)}`);
  if (r.exitCode === 0) t.deepEqual(ids, [imageId(good)]);
  else t.deepEqual(ids, []);
});

// Read once, a pipe works as an image file too, and is checked over what was read.
test('an image read from a pipe is verified over the bytes read from it', async (t) => {
  const { env, good, evil, goodSig } = await raceWorld(t);
  const sigFile = env.file('good.asc');
  fs.writeFileSync(sigFile, goodSig);
  for (const image of [evil, good]) {
    const fifo = env.file(`pipe-${image === good ? 'good' : 'evil'}.aci`);
    execaSync('mkfifo', [fifo]);
    const feeder = execa('sh', ['-c', 'cat "$1" > "$2"', 'sh', image, fifo], { reject: false });
    const r = await env.run(['fetch', '--full', `--signature=${sigFile}`, fifo]);
    feeder.kill('SIGKILL');
    await feeder;
    const ids = await storedIds(env);
    t.false(ids.includes(imageId(evil)), String(r.stderr));
    if (image === good) {
      t.is(r.exitCode, 0, String(r.stderr));
      t.deepEqual(ids, [imageId(good)]);
    } else {
      t.not(r.exitCode, 0);
      t.regex(String(r.stderr), /bad signature/);
    }
  }
});
