// One streaming pass over an uncompressed ACI tar: hash it, validate it, and
// pass the bytes on to a sink (the store's temp file, or GNU tar's stdin) no
// further than the checker has approved. Shared by import and render so the
// two can never validate differently.

import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { StreamHasher } from './hasher.js';
import { AciTarChecker, type AciCheckResult, type TarCheckOptions } from './tar-check.js';

export interface ValidatedCopyOptions extends TarCheckOptions {
  /** Sees the hex sha512 of the whole input before the last approved bytes go out; throw to stop. */
  verifyDigest?: (hex: string) => void;
  /**
   * The sink may stop reading early without that being an error (GNU tar
   * stops at the end-of-archive marker): EPIPE then ends forwarding, while
   * hashing and validation still run to the end of the input.
   */
  sinkMayCloseEarly?: boolean;
}

export interface ValidatedCopyResult {
  /** Hex sha512 of every input byte. */
  digest: string;
  size: number;
  check: AciCheckResult;
}

/** Bytes read but not yet passed to the sink. */
class Pending {
  private chunks: Buffer[] = [];
  /** Input offset of the first pending byte. */
  offset = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  /** Take pending bytes below `upTo`, one piece at a time. */
  take(upTo: number): Buffer | undefined {
    const first = this.chunks[0];
    if (!first || this.offset >= upTo) return undefined;
    const n = Math.min(first.length, upTo - this.offset);
    if (n === first.length) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.offset += n;
    return first.subarray(0, n);
  }
}

/**
 * Copy `source` to `sink` through the ACI checker. Ends the sink on success;
 * on failure destroys the sink and the source and rejects.
 */
export async function copyValidated(
  source: AsyncIterable<Buffer> & { destroy(err?: Error): unknown },
  sink: Writable,
  opts: ValidatedCopyOptions = {},
): Promise<ValidatedCopyResult> {
  const checker = new AciTarChecker(opts);
  const hasher = new StreamHasher();
  const pending = new Pending();
  let size = 0;
  let sinkError: Error | undefined;
  let sinkGone = false;
  let wake: (() => void) | undefined;
  const onSinkError = (err: NodeJS.ErrnoException): void => {
    if (opts.sinkMayCloseEarly && err.code === 'EPIPE') sinkGone = true;
    else sinkError ??= err;
    wake?.();
  };
  const onDrain = (): void => wake?.();
  sink.on('error', onSinkError);
  sink.on('drain', onDrain);

  const forward = async (upTo: number): Promise<void> => {
    for (let piece = pending.take(upTo); piece; piece = pending.take(upTo)) {
      if (sinkError) throw sinkError;
      if (sinkGone) continue;
      if (!sink.write(piece)) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          // a sink that closes without 'error' would otherwise never drain
          if (sink.destroyed) resolve();
        });
        wake = undefined;
        if (sink.destroyed && !sinkError && !sinkGone) {
          if (!opts.sinkMayCloseEarly) throw new Error('the output stream closed before the image was written');
          sinkGone = true;
        }
      }
    }
    if (sinkError) throw sinkError;
  };

  try {
    for await (const chunk of source) {
      const behind = hasher.update(chunk);
      if (behind) await behind;
      size += chunk.length;
      pending.push(chunk);
      await checker.write(chunk);
      await forward(checker.approved);
    }
    const digest = await hasher.digest();
    opts.verifyDigest?.(digest);
    const check = await checker.finish();
    await forward(size);
    if (!sinkGone) {
      sink.end();
      await finished(sink).catch((err: NodeJS.ErrnoException) => {
        if (!(opts.sinkMayCloseEarly && err.code === 'EPIPE')) throw sinkError ?? err;
      });
    }
    if (sinkError) throw sinkError;
    return { digest, size, check };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    checker.destroy(e);
    hasher.destroy();
    source.destroy();
    sink.destroy();
    throw e;
  } finally {
    sink.off('drain', onDrain);
    // keep a listener: a late error from a destroyed sink must not crash the process
    sink.off('error', onSinkError);
    sink.on('error', () => undefined);
  }
}
