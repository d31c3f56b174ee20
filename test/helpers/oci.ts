import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { packTar, type Entry } from './tar.js';
import { BUSYBOX } from './aci.js';

// OCI image layouts and `docker save` archives built by hand, byte by byte,
// so tests know exactly what each layer holds (whiteouts included).

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export function sha256(buf: Buffer | string): string {
  return `sha256:${crypto.createHash('sha256').update(buf).digest('hex')}`;
}

export interface ImageSpec {
  /** Each layer's entries, lowest first. */
  layers: Entry[][];
  /** The config's "config" object (Entrypoint, Cmd, Env, User...). */
  config?: Record<string, unknown>;
  architecture?: string;
  /** Layers go in uncompressed instead of gzip. */
  uncompressed?: boolean;
}

export interface BuiltImage {
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  configDigest: string;
  layers: { blob: Buffer; digest: string; tar: Buffer; diffId: string }[];
}

const APPLETS = ['sh', 'cat', 'ls', 'echo', 'id', 'env', 'pwd', 'test', 'find', 'sort', 'true'];

/** A layer with busybox and a minimal /etc, enough to run a shell. */
export function busyboxLayer(): Entry[] {
  return [
    { name: 'bin/', type: 'directory', mode: 0o755 },
    { name: 'bin/busybox', data: fs.readFileSync(BUSYBOX), mode: 0o755 },
    ...APPLETS.map((a): Entry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n', mode: 0o644 },
    { name: 'etc/group', data: 'root:x:0:\napp:x:1000:\nstaff:x:50:\n', mode: 0o644 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
}

export async function buildImage(spec: ImageSpec): Promise<BuiltImage> {
  const layers = [];
  for (const entries of spec.layers) {
    const tar = await packTar(entries);
    const blob = spec.uncompressed ? tar : zlib.gzipSync(tar);
    layers.push({ blob, digest: sha256(blob), tar, diffId: sha256(tar) });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: spec.architecture ?? 'amd64',
      os: 'linux',
      config: spec.config ?? {},
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({
        mediaType: spec.uncompressed ? 'application/vnd.oci.image.layer.v1.tar' : 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: l.digest,
        size: l.blob.length,
      })),
    }),
  );
  return { manifest, manifestDigest: sha256(manifest), config, configDigest: sha256(config), layers };
}

function putBlob(dir: string, buf: Buffer): string {
  const digest = sha256(buf);
  const file = path.join(dir, 'blobs', 'sha256', digest.slice(7));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, buf);
  return digest;
}

/** Write images into an OCI image layout at `dir`, each under its ref name. */
export function writeOciLayout(dir: string, images: Record<string, BuiltImage>): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const manifests = [];
  for (const [ref, img] of Object.entries(images)) {
    putBlob(dir, img.config);
    for (const l of img.layers) putBlob(dir, l.blob);
    putBlob(dir, img.manifest);
    manifests.push({ mediaType: OCI_MANIFEST, digest: img.manifestDigest, size: img.manifest.length, annotations: { 'org.opencontainers.image.ref.name': ref } });
  }
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
}

/** A `docker save` style archive of one image (layers stored uncompressed, as docker does). */
export async function dockerSaveArchive(file: string, img: BuiltImage, repoTag: string): Promise<void> {
  const cfgName = `${img.configDigest.slice(7)}.json`;
  const layerNames = img.layers.map((l) => `${l.diffId.slice(7)}/layer.tar`);
  const entries: Entry[] = [
    { name: cfgName, data: img.config },
    ...img.layers.flatMap((l, i): Entry[] => [{ name: `${l.diffId.slice(7)}/`, type: 'directory' }, { name: layerNames[i]!, data: l.tar }]),
    { name: 'manifest.json', data: JSON.stringify([{ Config: cfgName, RepoTags: [repoTag], Layers: layerNames }]) },
  ];
  fs.writeFileSync(file, await packTar(entries));
}
