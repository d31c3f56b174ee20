import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import * as openpgp from 'openpgp';
import { TrustError } from '../../src/errors.js';
import { Keystore } from '../../src/trust/keystore.js';
import { BadSignatureError, parseSignature, verifySignature } from '../../src/trust/verify.js';
import { assertTypedError, fuzzAsync, fuzzParams, withinMsAsync } from '../helpers/fuzz.js';

// Property tests of signature handling: a detached signature comes with the
// image, from wherever the image came from. Whatever its bytes, the verdict
// is a signer or a TrustError, never a crash or a hang.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fuzz-sig-'));
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const NAME = 'example.com/app';
const DATA = Buffer.from('the image bytes\n'.repeat(100));
const keystore = new Keystore({ localConfig: path.join(dir, 'etc'), systemConfig: path.join(dir, 'lib'), userConfig: path.join(dir, 'user') });
let armored = '';
let binary = Buffer.alloc(0);

test.before(async () => {
  const { privateKey, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'ed25519Legacy', userIDs: [{ name: 'Fuzz', email: 'fuzz@example.com' }], format: 'object' });
  await keystore.addKey(Buffer.from(publicKey.armor()), { prefix: NAME });
  const message = await openpgp.createMessage({ binary: DATA });
  armored = (await openpgp.sign({ message, signingKeys: privateKey, detached: true })) as string;
  binary = Buffer.from((await openpgp.sign({ message, signingKeys: privateKey, detached: true, format: 'binary' })) as Uint8Array);
});

/** Signature bytes: random, the real ones damaged, or armor around junk. */
function signatureBytes(): fc.Arbitrary<Buffer> {
  const damage = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 });
  return fc.oneof(
    fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.boolean(), damage).map(([arm, edits]) => {
      const b = Buffer.from(arm ? Buffer.from(armored) : binary);
      for (const [at, byte] of edits) b[at % b.length] = byte;
      return b;
    }),
    fc.tuple(fc.boolean(), fc.nat(), fc.nat()).map(([arm, a, z]) => {
      const b = arm ? Buffer.from(armored) : binary;
      const from = a % b.length;
      return b.subarray(from, from + (z % (b.length - from + 1)));
    }),
    fc.base64String({ maxLength: 300 }).map((s) => Buffer.from(`-----BEGIN PGP SIGNATURE-----\n\n${s}\n-----END PGP SIGNATURE-----\n`)),
  );
}

test('the undamaged signatures verify', async (t) => {
  for (const sig of [Buffer.from(armored), binary]) {
    const file = path.join(dir, 'good.asc');
    fs.writeFileSync(file, sig);
    t.is((await verifySignature({ keystore, imageName: NAME, data: Readable.from([DATA]), dataName: 'image', signaturePath: file })).userIds[0], 'Fuzz <fuzz@example.com>');
  }
});

test('parseSignature: any bytes give a signature or a BadSignatureError', async (t) => {
  await fuzzAsync(
    t,
    fc.asyncProperty(signatureBytes(), async (bytes) => {
      try {
        await withinMsAsync(2000, 'parseSignature', () => parseSignature(bytes, 'image.aci.asc'));
      } catch (err) {
        assertTypedError(err, BadSignatureError, bytes);
      }
    }),
  );
});

test('verifySignature: any signature file gives a signer or a TrustError', async (t) => {
  let n = 0;
  await fuzzAsync(
    t,
    fc.asyncProperty(signatureBytes(), async (bytes) => {
      const file = path.join(dir, `sig-${n++}.asc`);
      fs.writeFileSync(file, bytes);
      try {
        await withinMsAsync(5000, 'verifySignature', () => verifySignature({ keystore, imageName: NAME, data: Readable.from([DATA]), dataName: 'image', signaturePath: file }));
      } catch (err) {
        assertTypedError(err, TrustError, bytes);
      } finally {
        fs.rmSync(file);
      }
    }),
    fuzzParams(0.5),
  );
});
