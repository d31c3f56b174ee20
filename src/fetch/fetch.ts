import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { ImageNotFoundError, RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import type { StagedImage, Store } from '../store/store.js';
import { log } from '../log.js';
import { stageVerified } from './verify.js';
import { classifyImageString, parseImageString } from '../appc/image-ref.js';
import { isDockerTransport } from '../docker/reference.js';

export type PullPolicy = 'never' | 'new' | 'update';

export interface FetchOptions {
  /** Detached signature file given with --signature (applies to the first file image). */
  signature?: string;
  pullPolicy?: PullPolicy;
}

export function parsePullPolicy(value: string | undefined): PullPolicy {
  if (value === undefined || value === 'new' || value === 'never' || value === 'update') return value ?? 'new';
  throw new UsageError(`unknown --pull-policy "${value}"; use never, new or update`);
}

/**
 * Import an ACI from a local file, verifying its detached signature unless
 * told not to. The file is opened and read once (see stageVerified): a second
 * open could find other bytes there.
 */
export async function fetchFile(store: Store, globals: GlobalOptions, file: string, signature?: string): Promise<string> {
  const abs = path.resolve(file);
  const source = await openImageFile(abs, file);
  let staged: StagedImage;
  if (globals.insecureOptions.image) {
    log().warn('signature verification has been disabled (--insecure-options=image)');
    staged = await store.stage(source);
  } else {
    staged = await stageVerified(store, globals, { source, name: abs, signaturePath: signature ?? `${abs}.asc` });
  }
  try {
    return store.commit(staged).id;
  } catch (err) {
    store.discard(staged);
    throw err;
  }
}

/** The image file as a stream over one open file description; a pipe is fine too, as it is read once. */
async function openImageFile(abs: string, file: string): Promise<Readable> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(abs, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImageNotFoundError(`image file ${file} does not exist`, { cause: err });
    if (isErrno(err, 'EISDIR')) throw new UsageError(`${file} is not a regular file; give the path of an .aci file`);
    throw new RktError(`image file ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  const st = await handle.stat();
  if (!st.isFile() && !st.isFIFO()) {
    await handle.close();
    throw new UsageError(`${file} is not a regular file; give the path of an .aci file`);
  }
  return handle.createReadStream({ highWaterMark: 1 << 20 });
}

/**
 * Bring one image argument into the store and return its ID. Of the remote
 * transports only the Docker and OCI ones are part of this build: other
 * URLs fail with a message that says how to get the image in by file.
 */
export async function fetchImage(store: Store, globals: GlobalOptions, arg: string, opts: FetchOptions = {}): Promise<string> {
  // docker://, oci: and docker-archive: (src/docker)
  if (isDockerTransport(arg)) {
    const { fetchDockerImage } = await import('../docker/fetch.js');
    return fetchDockerImage(store, globals, arg, opts.pullPolicy);
  }
  const kind = classifyImageString(arg, (p) => fs.existsSync(p));
  switch (kind) {
    case 'id':
      return store.resolveIdPrefix(arg);
    case 'path':
      return fetchFile(store, globals, arg, opts.signature);
    case 'url': {
      if (arg.startsWith('file://')) return fetchFile(store, globals, fileURLToPath(arg), opts.signature);
      const scheme = arg.slice(0, arg.indexOf(':'));
      throw new RktError(`fetching ${scheme}:// images is not supported by this rkt; download the ACI (and its .asc) and fetch the file`);
    }
    case 'name':
      return fetchByName(store, arg, opts.pullPolicy ?? 'new');
  }
}

async function fetchByName(store: Store, arg: string, policy: PullPolicy): Promise<string> {
  const ref = parseImageString(arg);
  if (policy !== 'update') {
    const found = store.findByName(ref.name, ref.labels);
    if (found.length > 0) return found[found.length - 1]!.id;
  }
  if (policy === 'never') throw new ImageNotFoundError(`image ${arg} is not in the store and --pull-policy=never forbids fetching it`);
  throw new ImageNotFoundError(`image ${arg} is not in the store, and appc discovery over the network is not supported by this rkt; fetch the ACI file instead`);
}
