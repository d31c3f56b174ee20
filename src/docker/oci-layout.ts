// An OCI image layout directory (image-spec's image-layout.md): oci-layout,
// index.json and blobs/<alg>/<hex>. The image is picked by its
// org.opencontainers.image.ref.name annotation, or is the only one.

import fs from 'node:fs';
import path from 'node:path';
import { ImageNotFoundError, RktError, isErrno, quote, whyUnreadable } from '../errors.js';
import { readAll, verified } from './digest.js';
import { checkDigest, imageManifestFor, resolveLayers, type BlobReader, type ResolvedImage } from './image.js';
import { ImageDocumentError, MAX_MANIFEST_BYTES, parseManifestOrIndex, type Descriptor } from './manifest.js';
import type { OciLayoutRef } from './reference.js';
import { aciNameOf } from './remote.js';

const REF_NAME = 'org.opencontainers.image.ref.name';

function readSmall(file: string, max: number, what: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImageNotFoundError(`${what}: ${file} does not exist; is this an OCI image layout?`, { cause: err });
    throw new RktError(`${what}: ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new RktError(`${what}: ${file} is not a regular file`);
    if (st.size > max) throw new ImageDocumentError(`${what}: ${file} is ${st.size} bytes; the limit is ${max}`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const n = fs.readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    fs.closeSync(fd);
  }
}

/** Blobs of a layout directory, verified like downloads: the directory may come from anywhere. */
export function layoutReader(dir: string): BlobReader {
  const blobPath = (desc: Descriptor): string => path.join(dir, 'blobs', 'sha256', desc.digest.slice('sha256:'.length));
  return {
    async manifest(desc, where) {
      const bytes = readSmall(blobPath(desc), MAX_MANIFEST_BYTES, where);
      checkDigest(bytes, desc.digest, where);
      return { bytes, mediaType: desc.mediaType };
    },
    async blob(desc, what) {
      const file = blobPath(desc);
      const stream = fs.createReadStream(file, { highWaterMark: 1 << 20 });
      await new Promise<void>((resolve, reject) => {
        stream.once('open', () => resolve());
        stream.once('error', (err) => reject(new RktError(`${what}: ${file} ${whyUnreadable(err)}`, { cause: err })));
      });
      return verified(stream, { digest: desc.digest, size: desc.size, name: what });
    },
    async readWhole(desc, what) {
      return readAll(await this.blob(desc, what));
    },
  };
}

export async function resolveOciLayout(ref: OciLayoutRef): Promise<ResolvedImage> {
  const dir = path.resolve(ref.path);
  const where = `the OCI layout ${ref.path}`;
  const layout = readSmall(path.join(dir, 'oci-layout'), 4096, where);
  let version: unknown;
  try {
    version = (JSON.parse(layout.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    throw new ImageDocumentError(`${where}: oci-layout is not valid JSON`);
  }
  if (typeof version !== 'string' || !version.startsWith('1.')) throw new ImageDocumentError(`${where}: unsupported imageLayoutVersion ${quote(String(version))}`);
  const indexBytes = readSmall(path.join(dir, 'index.json'), MAX_MANIFEST_BYTES, where);
  const index = parseManifestOrIndex(indexBytes, `${where}: index.json`, 'application/vnd.oci.image.index.v1+json');
  if (index.kind !== 'index') throw new ImageDocumentError(`${where}: index.json is not an image index`);
  let chosen: Descriptor | undefined;
  if (ref.ref !== undefined) {
    chosen = index.manifests.find((m) => m.annotations?.[REF_NAME] === ref.ref);
    if (!chosen) {
      const names = index.manifests.map((m) => m.annotations?.[REF_NAME]).filter((n): n is string => n !== undefined);
      throw new ImageNotFoundError(`${where} has no image named ${quote(ref.ref)} (it has: ${names.map((n) => quote(n)).join(', ') || 'no named images'})`);
    }
  } else if (index.manifests.length === 1) {
    chosen = index.manifests[0];
  } else {
    throw new ImageNotFoundError(`${where} holds ${index.manifests.length} images; name one with oci:${ref.path}:REF`);
  }
  const reader = layoutReader(dir);
  const top = await reader.manifest(chosen!, `${where}: manifest ${chosen!.digest}`);
  const doc = await imageManifestFor(reader, top, where);
  const { config, configDigest, layers } = await resolveLayers(reader, doc, where);
  return {
    name: aciNameOf(path.basename(dir)),
    version: ref.ref ?? 'latest',
    config,
    configDigest,
    layers,
    annotations: [{ name: 'appc.io/oci/layout', value: dir }],
  };
}
