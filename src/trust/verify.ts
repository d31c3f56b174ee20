import fs from 'node:fs';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as openpgp from 'openpgp';
import type { KeyID, PublicKey, Signature, VerifyMessageResult } from 'openpgp';
import { RktError, TrustError } from '../errors.js';
import { log } from '../log.js';
import { keyProblem, looksArmored, type Keystore, type TrustedKey } from './keystore.js';

// Verification of an image's detached OpenPGP signature (the ".aci.asc" file
// of appc discovery) against the keys trusted for the image's name.
//
// The signed data comes in as a stream, once: the caller stores the very bytes
// it feeds in, so nobody can swap the file between the check and the import.
// Which keys are trusted depends on the image's name, known only once the
// import has read the manifest; so the data is checked against every key in
// the keystore that issued the signature (usually one), and trust for the
// name is decided at the end, before anything is committed.
//
// The data is never held whole: images reach hundreds of megabytes, and on a
// stream openpgp.js hashes with Node's native crypto: a 200 MiB image verifies
// in 0.2-0.5 s with ~100 MiB RSS, as fast as hashing it alone, versus
// 1.1-1.9 s and ~480 MiB RSS when handed a Buffer.

export interface VerifyStart {
  keystore: Keystore;
  /** Where the signature is, for messages; read from there unless `signatureData` is given. */
  signaturePath: string;
  /** The signature's bytes, when they came from elsewhere (a download). */
  signatureData?: Uint8Array;
  /** How to name the signed data in messages (its path). */
  dataName: string;
}

export interface VerifyOptions extends VerifyStart {
  /** The image's name from its manifest: selects the trusted keys. */
  imageName: string;
  data: Readable;
}

export interface Signer {
  /** Lowercase hex fingerprint of the trusted primary key. */
  fingerprint: string;
  userIds: string[];
}

/** No key at all is trusted for the image's name. */
export class NoTrustedKeyError extends TrustError {}
/** The signature file is missing. */
export class SignatureMissingError extends TrustError {}
/** The signature was made by a key that is not trusted for the image's name. */
export class UntrustedSignerError extends TrustError {}
/** The signature does not match the data, or is not a signature at all. */
export class BadSignatureError extends TrustError {}
/** The signing key is trusted, but revoked or expired. */
export class KeyValidityError extends TrustError {}

const HOW_TO_SKIP = 'or skip verification with --insecure-options=image';

function trustHint(imageName: string): string {
  return `run "rkt trust --prefix=${imageName} <key file>" to trust the publisher's key, ${HOW_TO_SKIP}`;
}

/** A verification under way: feed it the data, then ask for the verdict. */
export interface PendingVerification {
  /** Write the signed data here, all of it, then end it. Applies backpressure. */
  readonly input: Writable;
  /** Once `input` has finished: who signed the data, if the signature is good and by a key trusted for `imageName`. */
  verdict(imageName: string): Promise<Signer>;
}

/** Verify that `data` carries a good detached signature by a key trusted for `imageName`. */
export async function verifySignature(opts: VerifyOptions): Promise<Signer> {
  let pending: PendingVerification;
  try {
    pending = await beginVerification(opts);
  } catch (err) {
    opts.data.destroy();
    throw err;
  }
  await pipeline(opts.data, pending.input).catch((err: Error) => {
    throw err instanceof RktError ? err : new RktError(`cannot read image "${opts.dataName}": ${err.message}`, { cause: err });
  });
  return pending.verdict(opts.imageName);
}

/**
 * Read the signature and start checking data against each key that could
 * have made it. Fails at once if the signature is missing or unreadable.
 */
export async function beginVerification(opts: VerifyStart): Promise<PendingVerification> {
  const { keystore, signaturePath, dataName } = opts;
  const sigBytes = opts.signatureData ?? (await readSignatureFile(signaturePath));
  const signature = await parseSignature(sigBytes, signaturePath);
  const issuers = signature.getSigningKeyIDs();

  // One check per distinct copy of an issuing key: copies of one key (in
  // several config dirs) may differ in subkeys and revocations, and the copy
  // that counts is the one keysFor() picks for the name.
  const checks: KeyCheck[] = [];
  for (const { key } of matchIssuers(await keystore.everyKey(), issuers)) {
    const serialized = serialize(key.key);
    if (checks.some((c) => c.serialized.equals(serialized))) continue;
    checks.push(startCheck(key.key, serialized, await parseSignature(sigBytes, signaturePath), dataName));
  }

  const input = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      Promise.all(checks.map((c) => c.feed.push(bytes))).then(
        () => cb(),
        (err: Error) => cb(err),
      );
    },
    final(cb) {
      for (const c of checks) c.feed.end();
      cb();
    },
    destroy(err, cb) {
      for (const c of checks) c.feed.abort(err ?? new RktError(`checking the signature of "${dataName}" was aborted`));
      cb(err);
    },
  });

  return {
    input,
    async verdict(imageName: string): Promise<Signer> {
      // A verdict on part of the data would vouch for bytes never checked.
      if (!input.writableFinished) throw new Error('signature verdict asked before all of the data was checked');
      const signer = await decide(keystore, imageName, issuers, checks, dataName, signaturePath);
      log().debug({ imageName, fingerprint: signer.fingerprint }, 'signature verified');
      return signer;
    },
  };
}

async function decide(keystore: Keystore, imageName: string, issuers: KeyID[], checks: KeyCheck[], dataName: string, signaturePath: string): Promise<Signer> {
  const trusted = await keystore.keysFor(imageName);
  if (trusted.length === 0) throw new NoTrustedKeyError(`no keys are trusted for image "${imageName}"; ${trustHint(imageName)}`);

  const candidates = matchIssuers(trusted, issuers);
  if (candidates.length === 0) {
    const ids = issuers.map((k) => k.toHex()).join(', ') || 'unknown';
    throw new UntrustedSignerError(
      `image "${imageName}" is signed by key ${ids}, which is not trusted for "${imageName}" (trusted: ${trusted.map((k) => k.fingerprint).join(', ')}); ` +
        `if you trust that key, ${trustHint(imageName)}`,
    );
  }

  // openpgp.js checks the key only as of the signature's creation time; a key
  // revoked since must not keep vouching for images.
  const now = new Date();
  const usable: TrustedKey[] = [];
  let refusal: string | undefined;
  for (const { key, keyID } of candidates) {
    const problem = await keyProblem(key.key, keyID, now);
    if (problem === null) usable.push(key);
    else refusal ??= `key ${key.fingerprint} (${key.userIds[0] ?? 'no user id'}) that signed image "${imageName}" ${problem}; refusing the image. ${validityAdvice(problem, key.path)}`;
  }
  if (usable.length === 0) throw new KeyValidityError(refusal ?? `no usable key signed image "${imageName}"`);

  let firstFailure: string | undefined;
  for (const key of usable) {
    const serialized = serialize(key.key);
    const check = checks.find((c) => c.serialized.equals(serialized));
    if (check === undefined) throw new TrustError(`the trusted key ${key.fingerprint} changed while "${dataName}" was being checked; try again`);
    const result = await check.result;
    for (const sig of result.signatures) {
      if (key.key.getKeys(sig.keyID).length === 0) continue;
      try {
        await sig.verified;
        return { fingerprint: key.fingerprint, userIds: key.userIds };
      } catch (err) {
        firstFailure ??= (err as Error).message;
      }
    }
  }
  // openpgp.js reports a data mismatch with these two messages; anything else
  // (SHA-1, a signature from the future, a key expired when it signed) is a
  // signature we refuse on principle, and saying "corrupted" would mislead.
  if (firstFailure === undefined || /digest did not match|verification failed/i.test(firstFailure)) {
    throw new BadSignatureError(
      `bad signature: "${dataName}" does not match its signature "${signaturePath}"; the image was changed or corrupted, or the signature belongs to another file`,
    );
  }
  throw new BadSignatureError(`signature "${signaturePath}" of "${dataName}" is not acceptable: ${firstFailure}`);
}

function validityAdvice(problem: string, keyPath: string): string {
  if (/revoked/.test(problem)) {
    return `A revoked key vouches for nothing: ask the publisher for the image signed with their new key, and remove "${keyPath}"`;
  }
  return `If the publisher extended or replaced the key, trust the updated key again (its trusted copy is "${keyPath}"), ${HOW_TO_SKIP}`;
}

async function readSignatureFile(signaturePath: string): Promise<Buffer> {
  try {
    return await fs.promises.readFile(signaturePath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new SignatureMissingError(`signature file "${signaturePath}" not found; put the image's detached signature there, ${HOW_TO_SKIP}`);
    }
    throw new TrustError(`cannot read signature file "${signaturePath}": ${(err as Error).message}`, { cause: err });
  }
}

/** Parse a detached signature, armored or binary; anything else is a BadSignatureError. */
export async function parseSignature(data: Uint8Array, signaturePath: string): Promise<Signature> {
  try {
    return looksArmored(data)
      ? await openpgp.readSignature({ armoredSignature: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8') })
      : await openpgp.readSignature({ binarySignature: new Uint8Array(data) });
  } catch (err) {
    throw new BadSignatureError(`"${signaturePath}" is not an OpenPGP signature (${(err as Error).message})`, { cause: err });
  }
}

function serialize(key: PublicKey): Buffer {
  return Buffer.from(key.write());
}

/** Trusted keys whose primary key or a subkey issued one of the signature packets. */
function matchIssuers(trusted: TrustedKey[], issuers: KeyID[]): { key: TrustedKey; keyID: KeyID }[] {
  const out: { key: TrustedKey; keyID: KeyID }[] = [];
  for (const keyID of issuers) {
    for (const key of trusted) {
      if (key.key.getKeys(keyID).length > 0) out.push({ key, keyID });
    }
  }
  return out;
}

/** The data streamed through openpgp.js against one copy of one key. */
interface KeyCheck {
  serialized: Buffer;
  feed: WebFeed;
  /** Settles once the data has been read to the end; the verdicts are then in result.signatures. */
  result: Promise<VerifyMessageResult<openpgp.WebStream<Uint8Array>>>;
}

function startCheck(key: PublicKey, serialized: Buffer, signature: Signature, dataName: string): KeyCheck {
  const feed = new WebFeed();
  const result = (async () => {
    const message = await openpgp.createMessage({ binary: feed.stream });
    const verified = await openpgp.verify({ message, signature, verificationKeys: [key], format: 'binary' });
    // The verdicts settle only once the data has been read to the end.
    const reader = verified.data.getReader();
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
    return verified;
  })().catch((err: Error) => {
    const failure = new TrustError(`cannot check the signature of "${dataName}": ${err.message}`, { cause: err });
    feed.abort(failure);
    throw failure;
  });
  result.catch(() => undefined); // reported by push() or the verdict
  return { serialized, feed, result };
}

/**
 * A web ReadableStream for openpgp.js, fed from a Node stream: push() waits
 * until the reader wants more, so memory stays bounded by a few chunks
 * whatever the size of the data.
 */
class WebFeed {
  readonly stream: ReadableStream<Uint8Array>;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private wanting: (() => void) | undefined;
  private failure: Error | undefined;
  private closed = false;

  constructor() {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => this.wake(),
        cancel: (reason: unknown) => {
          this.failure ??= reason instanceof Error ? reason : new RktError('the signature check stopped reading the data');
          this.closed = true;
          this.wake();
        },
      },
      { highWaterMark: 2 },
    );
  }

  async push(chunk: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error('data pushed after the end');
    this.controller.enqueue(chunk);
    while (!this.failure && (this.controller.desiredSize ?? 0) <= 0) {
      await new Promise<void>((resolve) => (this.wanting = resolve));
    }
    if (this.failure) throw this.failure;
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller.close();
  }

  abort(err: Error): void {
    this.failure ??= err;
    if (!this.closed) {
      this.closed = true;
      this.controller.error(err);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.wanting;
    this.wanting = undefined;
    w?.();
  }
}
