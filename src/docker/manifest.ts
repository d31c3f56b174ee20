// The JSON documents of an image: manifests (Docker schema 2, OCI), indexes
// and manifest lists, and the image config. All of it comes from a registry
// or a file the user does not control: every field is checked for type and
// size before anything uses it, and unknown fields are ignored.

import { RktError, quote } from '../errors.js';
import { DIGEST } from './reference.js';

export const MEDIA = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  schema1: 'application/vnd.docker.distribution.manifest.v1+json',
  schema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** What a registry is asked for, in order of preference. */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest];

export const LAYER_TYPES: readonly string[] = [MEDIA.dockerLayer, MEDIA.ociLayer, MEDIA.ociLayerGzip, 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'];

/** Caps on documents read whole into memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
export const MAX_LAYERS = 127;

export class ImageDocumentError extends RktError {}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageManifestDoc {
  kind: 'manifest';
  config: Descriptor;
  layers: Descriptor[];
}

export interface IndexDoc {
  kind: 'index';
  manifests: Descriptor[];
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  diffIds: string[];
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  user?: string;
  exposedPorts?: string[];
  volumes?: string[];
  labels?: Record<string, string>;
}

type Obj = Record<string, unknown>;

function fail(where: string, rule: string): never {
  throw new ImageDocumentError(`${where}: ${rule}`);
}

function parseJson(bytes: Buffer, where: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    fail(where, `not valid JSON (${(err as Error).message.slice(0, 100)})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'not a JSON object');
  return v as Obj;
}

function str(o: Obj, key: string, where: string, required: true): string;
function str(o: Obj, key: string, where: string, required?: boolean): string | undefined;
function str(o: Obj, key: string, where: string, required = false): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) fail(where, `"${key}" is missing`);
    return undefined;
  }
  if (typeof v !== 'string') fail(where, `"${key}" must be a string`);
  if (v.length > 65536) fail(where, `"${key}" is longer than 64 KiB`);
  return v;
}

function strList(o: Obj, key: string, where: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) fail(where, `"${key}" must be a list of strings`);
  return v as string[];
}

function keysOf(o: Obj, key: string, where: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) fail(where, `"${key}" must be an object`);
  return Object.keys(v as Obj);
}

function parseDescriptor(v: unknown, where: string): Descriptor {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'a descriptor must be an object');
  const o = v as Obj;
  const digest = str(o, 'digest', where, true);
  if (!DIGEST.test(digest)) fail(where, `digest ${quote(digest)} is not sha256:<64 hex digits> (other algorithms are not supported)`);
  const size = o.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) fail(where, '"size" must be a non-negative integer');
  const d: Descriptor = { mediaType: str(o, 'mediaType', where) ?? '', digest, size };
  if (o.platform !== undefined && o.platform !== null) {
    const p = o.platform as Obj;
    if (typeof p !== 'object' || Array.isArray(p)) fail(where, '"platform" must be an object');
    d.platform = { os: str(p, 'os', where, true), architecture: str(p, 'architecture', where, true), variant: str(p, 'variant', where) };
  }
  if (o.annotations && typeof o.annotations === 'object' && !Array.isArray(o.annotations)) {
    d.annotations = Object.fromEntries(Object.entries(o.annotations as Obj).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  return d;
}

/** A manifest or an index; `mediaType` is the Content-Type it came with, if any. */
export function parseManifestOrIndex(bytes: Buffer, where: string, mediaType?: string): ImageManifestDoc | IndexDoc {
  const o = parseJson(bytes, where);
  const type = str(o, 'mediaType', where) ?? mediaType?.split(';')[0]?.trim() ?? '';
  if (o.schemaVersion === 1 || type === MEDIA.schema1 || type === MEDIA.schema1Signed) {
    fail(where, 'Docker image manifest schema 1 is not supported; push the image again with a current docker, skopeo or buildah (schema 2 or OCI)');
  }
  if (o.schemaVersion !== 2) fail(where, `unsupported schemaVersion ${quote(String(o.schemaVersion))}`);
  if (Array.isArray(o.manifests) || type === MEDIA.ociIndex || type === MEDIA.dockerList) {
    if (!Array.isArray(o.manifests)) fail(where, '"manifests" must be a list');
    if (o.manifests.length > 1024) fail(where, 'more than 1024 manifests in an index');
    return { kind: 'index', manifests: o.manifests.map((m, i) => parseDescriptor(m, `${where}: manifests[${i}]`)) };
  }
  if (!Array.isArray(o.layers)) fail(where, '"layers" must be a list');
  if (o.layers.length > MAX_LAYERS) fail(where, `${o.layers.length} layers; at most ${MAX_LAYERS} are supported`);
  const config = parseDescriptor(o.config, `${where}: config`);
  if (config.size > MAX_CONFIG_BYTES) fail(where, `the image config is ${config.size} bytes; the limit is ${MAX_CONFIG_BYTES}`);
  const layers = o.layers.map((l, i) => parseDescriptor(l, `${where}: layers[${i}]`));
  for (const [i, l] of layers.entries()) {
    if (l.mediaType === MEDIA.dockerForeignLayer) fail(where, `layers[${i}] is a foreign layer (Windows base images are not supported)`);
    if (l.mediaType !== '' && !LAYER_TYPES.includes(l.mediaType)) fail(where, `layers[${i}] has the unsupported media type ${quote(l.mediaType)}`);
  }
  return { kind: 'manifest', config, layers };
}

export interface PlatformWanted {
  os: string;
  architecture: string;
  variant?: string;
}

/** The manifest of an index for the platform; the first match wins, as in docker. */
export function selectPlatform(index: IndexDoc, want: PlatformWanted, where: string): Descriptor {
  const candidates = index.manifests.filter((m) => m.mediaType !== MEDIA.ociIndex && m.mediaType !== MEDIA.dockerList);
  const found = candidates.find(
    (m) => m.platform && m.platform.os === want.os && m.platform.architecture === want.architecture && (want.variant === undefined || m.platform.variant === want.variant),
  );
  if (found) return found;
  const have = candidates.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}` : 'unknown')).join(', ');
  throw new ImageDocumentError(`${where} has no image for ${want.os}/${want.architecture}${want.variant ? `/${want.variant}` : ''} (it has: ${have || 'none'})`);
}

export function parseImageConfig(bytes: Buffer, where: string): ImageConfig {
  const o = parseJson(bytes, where);
  const c = (o.config ?? {}) as Obj;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) fail(where, '"config" must be an object');
  const rootfs = o.rootfs as Obj | undefined;
  if (typeof rootfs !== 'object' || rootfs === null) fail(where, '"rootfs" is missing');
  const diffIds = strList(rootfs, 'diff_ids', `${where}: rootfs`) ?? [];
  for (const d of diffIds) if (!DIGEST.test(d)) fail(where, `diff_id ${quote(d)} is not sha256:<64 hex digits>`);
  const labels = c.Labels && typeof c.Labels === 'object' && !Array.isArray(c.Labels)
    ? Object.fromEntries(Object.entries(c.Labels as Obj).filter((e): e is [string, string] => typeof e[1] === 'string'))
    : undefined;
  return {
    architecture: str(o, 'architecture', where) ?? '',
    os: str(o, 'os', where) ?? '',
    variant: str(o, 'variant', where),
    diffIds,
    entrypoint: strList(c, 'Entrypoint', where),
    cmd: strList(c, 'Cmd', where),
    env: strList(c, 'Env', where),
    workingDir: str(c, 'WorkingDir', where),
    user: str(c, 'User', where),
    exposedPorts: keysOf(c, 'ExposedPorts', where),
    volumes: keysOf(c, 'Volumes', where),
    labels,
  };
}
