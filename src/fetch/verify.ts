// A signed image's import: the file is read once, and each chunk goes both to
// the store's staging and to the signature check, so the signature vouches
// for exactly the bytes that are stored. Nothing is indexed before the
// verdict: the staged blob is committed by the caller, or discarded here.

import { PassThrough, type Readable } from 'node:stream';
import type { GlobalOptions } from '../config/global.js';
import type { StagedImage, Store } from '../store/store.js';
import { tee } from '../util/tee.js';
import { ImageFormatError } from '../errors.js';

export interface SignedSource {
  source: Readable;
  /** How to name the image in messages (its path). */
  name: string;
  signaturePath: string;
  /** The signature's bytes, if downloaded rather than read from `signaturePath`. */
  signatureData?: Uint8Array;
  /**
   * Bytes the source may still send after the image's archive has ended
   * (they are signed too, so they are read); a network source that goes on
   * and on past its end is cut off here instead of being read forever.
   */
  maxTrailing?: number;
}

/** Stage an image from `source` and check its detached signature against the keys trusted for its name. */
export async function stageVerified(store: Store, globals: GlobalOptions, { source, name, signaturePath, signatureData, maxTrailing }: SignedSource): Promise<StagedImage> {
  const { Keystore } = await import('../trust/keystore.js');
  const { beginVerification, SignatureMissingError } = await import('../trust/verify.js');
  const keystore = new Keystore({ localConfig: globals.localConfig, systemConfig: globals.systemConfig, userConfig: globals.userConfig });
  let pending: Awaited<ReturnType<typeof beginVerification>>;
  try {
    pending = await beginVerification({ keystore, signaturePath, signatureData, dataName: name });
  } catch (err) {
    source.destroy();
    if (err instanceof SignatureMissingError) {
      throw new SignatureMissingError(`no signature for ${name}: looked for ${signaturePath}; pass --signature=FILE, or skip verification with --insecure-options=image`);
    }
    throw err;
  }

  const toStore = new PassThrough({ highWaterMark: 1 << 20 });
  // The importer may stop reading at the end of its archive; the check must still see every byte.
  const feeding = tee(source, [{ stream: toStore, mayStopEarly: true }, { stream: pending.input }]);
  // A source that fails early (a download cut off) rejects this before it is awaited below,
  // while staging is still cleaning up: marked as handled, it cannot end the process first.
  feeding.catch(() => undefined);
  let staged: StagedImage;
  try {
    staged = await store.stage(toStore);
  } catch (err) {
    pending.input.destroy();
    source.destroy();
    await feeding.catch(() => undefined);
    throw err;
  }
  const trailing = maxTrailing === undefined ? undefined : boundTrailing(source, maxTrailing, name);
  try {
    toStore.destroy();
    await feeding;
    const signer = await pending.verdict(staged.manifest.name);
    process.stderr.write(`image: signature verified:\n${signer.userIds.map((u) => `  ${u}\n`).join('')}`);
    return staged;
  } catch (err) {
    store.discard(staged);
    throw err;
  } finally {
    trailing?.();
  }
}

/** From now on, let at most `max` more bytes come from `source`; returns the function that stops counting. */
function boundTrailing(source: Readable, max: number, name: string): () => void {
  let seen = 0;
  const count = (chunk: Buffer): void => {
    seen += chunk.length;
    if (seen > max) source.destroy(new ImageFormatError(`image ${name} goes on for more than ${max} bytes past the end of its archive; it is not an ACI`));
  };
  source.on('data', count);
  return () => source.off('data', count);
}
