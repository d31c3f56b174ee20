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
import type { RktConfig } from '../config/loader.js';
import type { PullPolicy } from './policy.js';
import { isDockerTransport } from '../docker/reference.js';

export { parsePullPolicy, type PullPolicy } from './policy.js';

export interface FetchOptions {
  /** Detached signature given with --signature: a file, or (for remote images) a URL. */
  signature?: string;
  pullPolicy?: PullPolicy;
  /** The loaded configuration (auth.d), if the caller has it; loaded when needed otherwise. */
  config?: RktConfig;
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
 * Bring one image argument into the store and return its ID. One entry per
 * transport; each lives in its own module.
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
      const scheme = arg.slice(0, arg.indexOf(':')).toLowerCase();
      if (scheme === 'file') return fetchFile(store, globals, fileURLToPath(arg), opts.signature);
      if (scheme === 'https' || scheme === 'http') return withDependencies(store, globals, await (await import('./by-url.js')).fetchByUrl(store, globals, arg, opts), opts);
      throw new UsageError(`fetching ${scheme}:// images is not supported by this rkt; use https://, a name (appc discovery), or a file`);
    }
    case 'name':
      return withDependencies(store, globals, await (await import('./by-name.js')).fetchByName(store, globals, parseImageString(arg), opts), opts);
  }
}

/** Images from the network bring their dependencies (./deps.ts); local files do not reach out. */
async function withDependencies(store: Store, globals: GlobalOptions, id: string, opts: FetchOptions): Promise<string> {
  await (await import('./deps.js')).fetchDependencies(store, globals, id, opts);
  return id;
}
