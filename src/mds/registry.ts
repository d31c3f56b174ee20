import crypto from 'node:crypto';
import { parseImageManifest } from '../appc/image-manifest.js';
import { parsePodManifest, podApp } from '../appc/pod-manifest.js';
import type { Annotation, ImageManifest, PodManifest } from '../appc/types.js';
import { TOKEN_PATTERN } from './protocol.js';

// The metadata service's memory: the pods registered by `rkt run
// --mds-register`, each reachable only through its own secret token. Every
// lookup an app makes starts from a token and ends inside that token's pod,
// so no request can name another pod's data. Nothing is kept on disk: a
// restarted service knows no pod (as rkt's).


/** Pods one service holds at most; a registration beyond it is refused. */
export const MAX_PODS = 4096;

export class RegistryError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface RegisteredApp {
  imageManifest: ImageManifest;
  /** The manifest's JSON as served. */
  imageManifestJson: string;
}

export interface RegisteredPod {
  uuid: string;
  manifest: PodManifest;
  manifestJson: string;
  apps: Map<string, RegisteredApp>;
}

// Tokens are looked up by their digest: a hash-table probe on the token
// itself would leak, by timing, how much of a guess matched a stored key.
function tokenKey(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isPodUuid(s: string): boolean {
  return UUID.test(s);
}

export class PodRegistry {
  private readonly byToken = new Map<string, RegisteredPod>();
  private readonly byUuid = new Map<string, { key: string; pod: RegisteredPod }>();

  get size(): number {
    return this.byUuid.size;
  }

  /** Register (or re-register, with a new token) a pod; the manifest is checked as strictly as stage0 checks it. */
  addPod(uuid: string, token: string, manifestBytes: Buffer): void {
    if (!isPodUuid(uuid)) throw new RegistryError(400, 'the pod UUID is malformed');
    if (!TOKEN_PATTERN.test(token)) throw new RegistryError(400, 'the token must be 32 to 128 characters of A-Z, a-z, 0-9, "-" and "_"');
    let manifest: PodManifest;
    try {
      manifest = parsePodManifest(manifestBytes);
    } catch (err) {
      throw new RegistryError(400, (err as Error).message);
    }
    const key = tokenKey(token);
    const holder = this.byToken.get(key);
    if (holder && holder.uuid !== uuid) throw new RegistryError(409, 'the token is already in use by another pod');
    if (!this.byUuid.has(uuid) && this.byUuid.size >= MAX_PODS) throw new RegistryError(503, `the service already holds ${MAX_PODS} pods`);
    this.removePod(uuid);
    const pod: RegisteredPod = { uuid, manifest, manifestJson: JSON.stringify(manifest), apps: new Map() };
    this.byToken.set(key, pod);
    this.byUuid.set(uuid, { key, pod });
  }

  /** An app's image manifest; only apps the pod manifest names can be registered. */
  addApp(uuid: string, app: string, manifestBytes: Buffer): void {
    const entry = this.byUuid.get(uuid);
    if (!entry) throw new RegistryError(404, 'no pod with this UUID is registered');
    if (!podApp(entry.pod.manifest, app)) throw new RegistryError(404, 'the pod has no app of this name');
    let imageManifest: ImageManifest;
    try {
      imageManifest = parseImageManifest(manifestBytes);
    } catch (err) {
      throw new RegistryError(400, (err as Error).message);
    }
    entry.pod.apps.set(app, { imageManifest, imageManifestJson: JSON.stringify(imageManifest) });
  }

  /** True if the pod was registered. */
  removePod(uuid: string): boolean {
    const entry = this.byUuid.get(uuid);
    if (!entry) return false;
    this.byUuid.delete(uuid);
    this.byToken.delete(entry.key);
    return true;
  }

  /** The pod a token belongs to, if any. */
  podOf(token: string): RegisteredPod | undefined {
    if (!TOKEN_PATTERN.test(token)) return undefined;
    return this.byToken.get(tokenKey(token));
  }
}

/** The image's annotations overridden by the pod manifest's for the app (spec/ace.md). */
export function mergedAppAnnotations(pod: RegisteredPod, app: string, image: ImageManifest): Annotation[] {
  const merged = new Map<string, string>();
  for (const a of image.annotations ?? []) merged.set(a.name, a.value);
  for (const a of podApp(pod.manifest, app)?.annotations ?? []) merged.set(a.name, a.value);
  return [...merged].map(([name, value]) => ({ name, value }));
}
