// An image in a registry, resolved down to its config and layers.

import type { RktConfig } from '../config/loader.js';
import { RktError } from '../errors.js';
import { readAll } from './digest.js';
import { checkDigest, imageManifestFor, resolveLayers, type BlobReader, type ResolvedImage } from './image.js';
import { MAX_MANIFEST_BYTES, type Descriptor } from './manifest.js';
import { DOCKER_HUB, DOCKER_HUB_AUTH_NAMES, formatDockerRef, type RegistryRef } from './reference.js';
import { RegistryClient, type Credentials } from './registry.js';

/** Docker and OCI names into an AC identifier: lowercase, other characters as "_". */
export function aciNameOf(s: string): string {
  const out = s.toLowerCase().replace(/[^a-z0-9._~/-]/g, '_').replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  if (out === '') throw new RktError(`cannot make an image name out of "${s}"`);
  return out;
}

export function credentialsFor(cfg: Pick<RktConfig, 'dockerAuth'>, registry: string): Credentials | undefined {
  const names = registry === DOCKER_HUB ? DOCKER_HUB_AUTH_NAMES : [registry];
  for (const n of names) {
    const e = cfg.dockerAuth.get(n);
    if (e) return e.credentials;
  }
  return undefined;
}

function readerOf(client: RegistryClient): BlobReader {
  const reader: BlobReader = {
    async manifest(desc: Descriptor, where: string) {
      if (desc.size > MAX_MANIFEST_BYTES) throw new RktError(`${where} is ${desc.size} bytes; the limit is ${MAX_MANIFEST_BYTES}`);
      const got = await client.manifest(desc.digest);
      checkDigest(got.bytes, desc.digest, where);
      return got;
    },
    blob: (desc, what) => client.blob(desc, what),
    async readWhole(desc, what) {
      return readAll(await client.blob(desc, what));
    },
  };
  return reader;
}

export async function resolveRemote(ref: RegistryRef, opts: { insecureTls: boolean; allowHttp: boolean; credentials?: Credentials }): Promise<ResolvedImage> {
  const client = new RegistryClient(ref, opts);
  const where = formatDockerRef(ref);
  const reference = ref.digest ?? ref.tag ?? 'latest';
  const top = await client.manifest(reference);
  // By digest, the bytes must be that digest; by tag, the registry's own claim is checked.
  if (ref.digest) checkDigest(top.bytes, ref.digest, `the manifest of ${where}`);
  else if (top.digest?.startsWith('sha256:')) checkDigest(top.bytes, top.digest, `the manifest of ${where} (Docker-Content-Digest)`);
  const reader = readerOf(client);
  const doc = await imageManifestFor(reader, top, where);
  const { config, configDigest, layers } = await resolveLayers(reader, doc, where);
  return {
    name: aciNameOf(`${ref.registry}/${ref.repository}`),
    version: ref.tag ?? undefined,
    config,
    configDigest,
    layers,
    annotations: [
      { name: 'appc.io/docker/registryurl', value: ref.registry },
      { name: 'appc.io/docker/repository', value: ref.repository },
      ...(ref.tag ? [{ name: 'appc.io/docker/tag', value: ref.tag }] : []),
      ...(ref.digest ? [{ name: 'appc.io/docker/manifestdigest', value: ref.digest }] : []),
    ],
  };
}
