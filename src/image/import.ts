// Import of an ACI into the store: one streaming pass that detects and
// undoes compression, computes the image ID over the uncompressed tar,
// validates every entry, and spools the uncompressed tar to the store's sink.

import type { Readable, Writable } from 'node:stream';
import { RktError, isErrno } from '../errors.js';
import type { ImageManifest } from '../appc/types.js';
import { decompress } from './compression.js';
import { copyValidated } from './validated-copy.js';

export interface ImportedAci {
  /** Image ID: "sha512-" + hex sha512 of the uncompressed tar. */
  id: string;
  manifest: ImageManifest;
  /** The manifest exactly as stored in the image. */
  manifestJson: Buffer;
  /** Bytes of the uncompressed tar written to the sink. */
  size: number;
}

export interface ImportOptions {
  /** How to name the image in messages (a path or URL). */
  name?: string;
  signal?: AbortSignal;
}

/** The store's disk filled up while an image was being written into it. */
export class StoreFullError extends RktError {
  readonly bytesWritten: number;
  constructor(bytesWritten: number, cause: unknown) {
    const mib = (bytesWritten / (1024 * 1024)).toFixed(1);
    super(
      `not enough disk space in the image store for this image: the disk filled up after ${bytesWritten} bytes (${mib} MiB) ` +
        'of its uncompressed tar were written; free some space (for example with "rkt gc" and "rkt image gc") or use --dir on a larger disk, then retry',
      { cause },
    );
    this.bytesWritten = bytesWritten;
  }
}

/**
 * Read an ACI from `source` (compressed or not) and write its uncompressed
 * tar to `sink`, which is ended on success and destroyed on failure; `source`
 * is consumed, and destroyed on failure. Rejects with ImageFormatError for
 * anything that is not a well-formed, safe ACI.
 */
export async function importAci(source: Readable, sink: Writable, opts: ImportOptions = {}): Promise<ImportedAci> {
  const name = opts.name ?? 'image';
  const tarStream = decompress(source, { name, signal: opts.signal });
  try {
    const { digest, size, check } = await copyValidated(tarStream, sink, { name });
    return { id: `sha512-${digest}`, manifest: check.manifest, manifestJson: check.manifestJson, size };
  } catch (err) {
    tarStream.destroy();
    if (isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT')) {
      const written = (sink as Partial<{ bytesWritten: number }>).bytesWritten;
      throw new StoreFullError(typeof written === 'number' ? written : 0, err);
    }
    throw err;
  }
}
