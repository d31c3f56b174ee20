// Content addressing of blobs: every byte read from a registry or a file is
// hashed on the way through and counted against the size its descriptor
// states, so a blob that is longer, shorter or other than announced fails
// before its end reaches the store.

import crypto from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { RktError, printable } from '../errors.js';

export class DigestMismatchError extends RktError {}

export interface Expected {
  /** "sha256:<hex>"; undefined to only measure. */
  digest?: string;
  /** Exact size in bytes, if known. */
  size?: number;
  /** Upper bound when the size is not known. */
  max?: number;
  /** How to name the blob in messages. */
  name: string;
}

/** A pass-through that fails the stream as soon as the bytes break `expected`. */
export class VerifyingStream extends Transform {
  private readonly hash = crypto.createHash('sha256');
  private bytes = 0;
  private result: string | undefined;
  constructor(private readonly expected: Expected) {
    super({ highWaterMark: 1 << 20 });
  }

  /** "sha256:<hex>" of everything that went through, once the stream ended. */
  get digest(): string | undefined {
    return this.result;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    const limit = this.expected.size ?? this.expected.max;
    if (limit !== undefined && this.bytes > limit) {
      const what = this.expected.size !== undefined ? `the ${limit} bytes its descriptor states` : `the limit of ${limit} bytes`;
      cb(new DigestMismatchError(`${this.expected.name} is longer than ${what}; the source is broken or hostile`));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.expected.size !== undefined && this.bytes !== this.expected.size) {
      cb(new DigestMismatchError(`${this.expected.name} ended after ${this.bytes} of ${this.expected.size} bytes; the download was cut short, try again`));
      return;
    }
    this.result = `sha256:${this.hash.digest('hex')}`;
    if (this.expected.digest !== undefined && this.result !== this.expected.digest) {
      cb(new DigestMismatchError(`${this.expected.name} does not match its digest: expected ${this.expected.digest}, got ${this.result}; the source is corrupt or hostile`));
      return;
    }
    cb();
  }
}

/** `source` through a VerifyingStream; destroying either end destroys both. */
export function verified(source: Readable, expected: Expected): VerifyingStream {
  const v = new VerifyingStream(expected);
  source.once('error', (err) => v.destroy(interrupted(err, expected.name)));
  v.once('close', () => {
    if (!source.destroyed) source.destroy();
  });
  source.pipe(v);
  return v;
}

/** A failure of the underlying connection or file, as a one-line error. */
export function interrupted(err: Error, name: string): RktError {
  if (err instanceof RktError) return err;
  return new RktError(`reading ${name} was interrupted (${printable(err.message, 100)}); try again`, { cause: err });
}

/** Read a whole (verified, bounded) stream into memory. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function sha256Of(bytes: Buffer): string {
  return `sha256:${crypto.createHash('sha256').update(bytes).digest('hex')}`;
}
