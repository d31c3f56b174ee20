import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageNotFoundError, RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import type { Store } from '../store/store.js';
import { log } from '../log.js';
import { verifyFileSignature } from './verify.js';
import { classifyImageString, parseImageString } from '../appc/image-ref.js';

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

/** Import an ACI from a local file, verifying its detached signature unless told not to. */
export async function fetchFile(store: Store, globals: GlobalOptions, file: string, signature?: string): Promise<string> {
  const abs = path.resolve(file);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImageNotFoundError(`image file ${file} does not exist`, { cause: err });
    throw new RktError(`image file ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  if (!stat.isFile()) throw new UsageError(`${file} is not a regular file; give the path of an .aci file`);
  const staged = await store.stage(fs.createReadStream(abs));
  try {
    if (globals.insecureOptions.image) {
      log().warn('signature verification has been disabled (--insecure-options=image)');
    } else {
      await verifyFileSignature(globals, staged.manifest.name, abs, signature ?? `${abs}.asc`);
    }
    return store.commit(staged).id;
  } catch (err) {
    store.discard(staged);
    throw err;
  }
}

/**
 * Bring one image argument into the store and return its ID. Remote
 * transports are not part of this build: such arguments fail with a
 * message that says how to get the image in by file.
 */
export async function fetchImage(store: Store, globals: GlobalOptions, arg: string, opts: FetchOptions = {}): Promise<string> {
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
