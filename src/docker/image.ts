// What the conversion needs from any of the three sources (a registry, an
// OCI layout, a docker save archive): the image config and, per layer, its
// diff ID and a way to read its (possibly compressed) bytes, already
// verified against the descriptor where the source states one.

import type { Readable } from 'node:stream';
import { ImageDocumentError, parseImageConfig, parseManifestOrIndex, selectPlatform, type Descriptor, type ImageConfig, type ImageManifestDoc, type PlatformWanted } from './manifest.js';
import { sha256Of } from './digest.js';

export interface LayerSource {
  diffId: string;
  /** How to name the layer in messages. */
  what: string;
  open(): Promise<Readable>;
}

export interface ResolvedImage {
  /** ACI name of the image (an AC identifier). */
  name: string;
  /** The version label: the tag, or the ref asked for. */
  version?: string;
  config: ImageConfig;
  configDigest: string;
  layers: LayerSource[];
  annotations: { name: string; value: string }[];
}

/** Where manifests and blobs come from, by digest. */
export interface BlobReader {
  /** A manifest (or index) by digest, read whole and checked against the digest. */
  manifest(desc: Descriptor, where: string): Promise<{ bytes: Buffer; mediaType?: string }>;
  /** A blob's bytes, verified against the descriptor's digest and size. */
  blob(desc: Descriptor, what: string): Promise<Readable>;
  readWhole(desc: Descriptor, what: string): Promise<Buffer>;
}

export const DEFAULT_PLATFORM: PlatformWanted = { os: 'linux', architecture: 'amd64' };

/** Check a document fetched by digest against that digest. */
export function checkDigest(bytes: Buffer, digest: string, where: string): void {
  const got = sha256Of(bytes);
  if (got !== digest) throw new ImageDocumentError(`${where} does not match its digest: expected ${digest}, got ${got}; the source is corrupt or hostile`);
}

/** From a top-level manifest or index down to the image manifest for the platform. */
export async function imageManifestFor(
  reader: BlobReader,
  top: { bytes: Buffer; mediaType?: string },
  where: string,
  platform: PlatformWanted = DEFAULT_PLATFORM,
): Promise<ImageManifestDoc> {
  let doc = parseManifestOrIndex(top.bytes, where, top.mediaType);
  // An index may name another index (nested, as OCI allows); a few levels are plenty.
  for (let depth = 0; doc.kind === 'index'; depth++) {
    if (depth >= 4) throw new ImageDocumentError(`${where}: indexes nest deeper than 4 levels`);
    const desc = selectPlatform(doc, platform, where);
    const next = await reader.manifest(desc, `${where}: manifest ${desc.digest}`);
    doc = parseManifestOrIndex(next.bytes, `${where}: manifest ${desc.digest}`, next.mediaType ?? desc.mediaType);
  }
  return doc;
}

/** Config and layers of an image manifest. */
export async function resolveLayers(
  reader: BlobReader,
  doc: ImageManifestDoc,
  where: string,
): Promise<{ config: ImageConfig; configDigest: string; layers: LayerSource[] }> {
  const configBytes = await reader.readWhole(doc.config, `the image config of ${where}`);
  const config = parseImageConfig(configBytes, `the image config of ${where}`);
  if (config.diffIds.length !== doc.layers.length) {
    throw new ImageDocumentError(`${where}: the manifest lists ${doc.layers.length} layers but the config ${config.diffIds.length}; the image is malformed`);
  }
  const layers = doc.layers.map((desc, i): LayerSource => {
    const what = `layer ${i + 1} (${desc.digest.slice(0, 19)}) of ${where}`;
    return { diffId: config.diffIds[i]!, what, open: () => reader.blob(desc, what) };
  });
  return { config, configDigest: doc.config.digest, layers };
}
