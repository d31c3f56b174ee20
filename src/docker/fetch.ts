// docker://, oci: and docker-archive: images into the store, converted as
// docker2aci did: one ACI per layer, named by the layer's chain ID (so
// images that share lower layers share their ACIs), and on top an ACI that
// holds no files, only the app and the layers as its dependencies in order.
//
// A layer is fetched under an exclusive lock on its chain ID, after looking
// it up in the store: two fetches of images that share a layer both succeed
// and only one of them downloads it. Each layer ACI is complete and indexed
// before the next is fetched, and the top image last, so a failure leaves
// nothing half-written (complete layers stay for the next attempt).

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { GlobalOptions } from '../config/global.js';
import { loadConfig } from '../config/loader.js';
import { ImageNotFoundError, TrustError } from '../errors.js';
import type { Label } from '../appc/types.js';
import { decompress } from '../image/compression.js';
import { log } from '../log.js';
import type { StagedImage, Store } from '../store/store.js';
import { FileLock } from '../util/lock.js';
import { appOf } from './app-config.js';
import { verified } from './digest.js';
import type { LayerSource, ResolvedImage } from './image.js';
import { convertLayer } from './layer.js';
import { walkTar } from './tar-walk.js';
import { resolveDockerArchive } from './docker-archive.js';
import { resolveOciLayout } from './oci-layout.js';
import { formatDockerRef, parseDockerImageString } from './reference.js';
import { aciNameOf, credentialsFor, resolveRemote } from './remote.js';

/** No uncompressed layer may exceed this; a decompression bomb stops here. */
export const MAX_LAYER_BYTES = 64 * 1024 * 1024 * 1024;

const ARCH: Record<string, string> = { amd64: 'amd64', '386': 'i386', arm64: 'aarch64', ppc64le: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

function appcArch(arch: string, variant?: string): string {
  if (arch === 'arm') return variant === 'v6' ? 'armv6l' : 'armv7l';
  return ARCH[arch] ?? arch;
}

function platformLabels(image: ResolvedImage): Label[] {
  return [
    { name: 'os', value: image.config.os || 'linux' },
    { name: 'arch', value: appcArch(image.config.architecture || 'amd64', image.config.variant) },
  ];
}

/** The OCI chain ID of each layer: the first layer's diff ID, then sha256("<parent chain> <diff ID>"). */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const parent = out[out.length - 1];
    out.push(parent === undefined ? d : `sha256:${crypto.createHash('sha256').update(`${parent} ${d}`).digest('hex')}`);
  }
  return out;
}

export function layerAciName(chainId: string): string {
  return `docker-layer/sha256-${chainId.slice('sha256:'.length)}`;
}

async function stageAndCommit(store: Store, aci: Readable, extra?: Promise<unknown>): Promise<string> {
  let staged: StagedImage;
  // The converter fails this stream with its own error; the store's import
  // reports it, and until then it must not count as unhandled.
  aci.on('error', () => undefined);
  try {
    staged = await store.stage(aci);
    await extra;
  } catch (err) {
    aci.destroy();
    await extra?.catch(() => undefined);
    throw err;
  }
  try {
    return store.commit(staged).id;
  } catch (err) {
    store.discard(staged);
    throw err;
  }
}

interface StoredLayer {
  id: string;
  paths: Set<string>;
}

/**
 * The paths that exist after a stored layer: its whitelist when it has one
 * (it deleted something), else what was there before plus its own entries.
 */
function pathsAfter(store: Store, id: string, lower: ReadonlySet<string>): Set<string> {
  const wl = store.manifest(id).pathWhitelist;
  if (wl) return new Set(wl.map((p) => p.slice(1)).filter((p) => p !== '.' && p !== ''));
  const paths = new Set(lower);
  const file = store.blobPath(id);
  const fd = fs.openSync(file, 'r');
  try {
    walkTar(fd, file, (e) => {
      if (e.name.startsWith('rootfs/')) paths.add(e.name.slice('rootfs/'.length));
    });
  } finally {
    fs.closeSync(fd);
  }
  return paths;
}

async function storeLayer(store: Store, layer: LayerSource, chainId: string, lower: ReadonlySet<string>, labels: Label[]): Promise<StoredLayer> {
  const name = layerAciName(chainId);
  const lock = FileLock.acquire(path.join(store.layout.imageLockDir, name.replace('/', '-')), 'exclusive');
  try {
    const found = store.findByName(name);
    if (found.length > 0) {
      const id = found[found.length - 1]!.id;
      // used again: image gc must age it with the images that depend on it
      store.touch(id);
      log().debug({ layer: layer.what, id }, 'layer already in the store');
      return { id, paths: pathsAfter(store, id, lower) };
    }
    log().debug({ layer: layer.what }, 'fetching layer');
    const raw = await layer.open();
    const tarStream = decompress(raw, { name: layer.what });
    const diff = verified(tarStream, { digest: layer.diffId, max: MAX_LAYER_BYTES, name: `${layer.what} (uncompressed)` });
    const { aci, done } = convertLayer(diff, { name, labels, lower, what: layer.what, annotations: [{ name: 'appc.io/docker/diffid', value: layer.diffId }] });
    const id = await stageAndCommit(store, aci, done);
    return { id, paths: (await done).paths };
  } finally {
    lock.release();
  }
}

function topAci(image: ResolvedImage, layers: { id: string; name: string }[]): Readable {
  const labels: Label[] = [...(image.version ? [{ name: 'version', value: image.version }] : []), ...platformLabels(image)];
  const manifest = {
    acKind: 'ImageManifest',
    acVersion: '0.8.11',
    name: image.name,
    labels,
    app: appOf(image.config),
    dependencies: layers.map((l) => ({ imageName: l.name, imageID: l.id })),
    annotations: [
      ...image.annotations,
      { name: 'appc.io/docker/imageid', value: image.configDigest },
      ...(image.config.entrypoint ? [{ name: 'appc.io/docker/entrypoint', value: JSON.stringify(image.config.entrypoint) }] : []),
      ...(image.config.cmd ? [{ name: 'appc.io/docker/cmd', value: JSON.stringify(image.config.cmd) }] : []),
    ],
  };
  const pack = tar.pack();
  pack.entry({ name: 'manifest', type: 'file', mode: 0o644, mtime: new Date(0) }, JSON.stringify(manifest));
  pack.entry({ name: 'rootfs', type: 'directory', mode: 0o755, mtime: new Date(0) });
  pack.finalize();
  return Readable.from(pack);
}

async function resolve(arg: string, globals: GlobalOptions): Promise<ResolvedImage> {
  const ref = parseDockerImageString(arg);
  switch (ref.transport) {
    case 'docker':
      return resolveRemote(ref, {
        insecureTls: globals.insecureOptions.tls,
        allowHttp: globals.insecureOptions.http,
        credentials: credentialsFor(loadConfig(globals), ref.registry),
      });
    case 'oci':
      return resolveOciLayout(ref);
    case 'docker-archive':
      return resolveDockerArchive(ref);
  }
}

/**
 * Fetch a docker://, oci: or docker-archive: image into the store; returns
 * the top image's ID. A tag can move, so a registry is asked again on every
 * fetch (layers already stored are not downloaded again), except with
 * --pull-policy=never, which takes the newest stored image of that name and
 * tag or fails.
 */
export async function fetchDockerImage(store: Store, globals: GlobalOptions, arg: string, policy: 'never' | 'new' | 'update' = 'new'): Promise<string> {
  const ref = parseDockerImageString(arg);
  if (policy === 'never' && ref.transport === 'docker') {
    const found = store.findByName(aciNameOf(`${ref.registry}/${ref.repository}`), ref.tag ? [{ name: 'version', value: ref.tag }] : []);
    if (found.length === 0) throw new ImageNotFoundError(`${formatDockerRef(ref)} is not in the store and --pull-policy=never forbids fetching it`);
    return found[found.length - 1]!.id;
  }
  if (!globals.insecureOptions.image) {
    throw new TrustError(`${formatDockerRef(ref)} cannot be verified: Docker and OCI images carry no appc signature; fetch it with --insecure-options=image`);
  }
  log().warn('Docker and OCI images are not signed; signature verification is skipped (--insecure-options=image)');
  const image = await resolve(arg, globals);
  const chains = chainIds(image.layers.map((l) => l.diffId));
  const labels = platformLabels(image);
  const stored: { id: string; name: string }[] = [];
  let paths: ReadonlySet<string> = new Set();
  for (const [i, layer] of image.layers.entries()) {
    const got = await storeLayer(store, layer, chains[i]!, paths, labels);
    stored.push({ id: got.id, name: layerAciName(chains[i]!) });
    paths = got.paths;
  }
  return stageAndCommit(store, topAci(image, stored));
}
