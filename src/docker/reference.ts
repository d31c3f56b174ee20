// Image strings of the Docker and OCI world, as rkt and skopeo users write them:
//
//   docker://[REGISTRY/]REPO[:TAG|@DIGEST]   a registry (Docker Registry HTTP API v2)
//   oci:PATH[:REF]                           an OCI image layout directory
//   docker-archive:PATH[:REPO:TAG]           a `docker save` tarball
//
// For docker://, a first component with a dot or a colon, or "localhost",
// names the registry; otherwise the registry is Docker Hub, whose one-word
// repositories live under "library/", as in docker and rkt.

import { UsageError } from '../errors.js';

export const DOCKER_HUB = 'registry-1.docker.io';
/** The name users give Docker Hub in dockerAuth's "registries", as rkt documents. */
export const DOCKER_HUB_AUTH_NAMES = ['index.docker.io', 'registry-1.docker.io', 'docker.io'];

export interface RegistryRef {
  transport: 'docker';
  /** host[:port] */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export interface OciLayoutRef {
  transport: 'oci';
  path: string;
  /** The org.opencontainers.image.ref.name annotation to pick, if any. */
  ref?: string;
}

export interface DockerArchiveRef {
  transport: 'docker-archive';
  path: string;
  /** "repo:tag" from the archive's RepoTags, if any. */
  ref?: string;
}

export type DockerImageRef = RegistryRef | OciLayoutRef | DockerArchiveRef;

const TRANSPORTS = ['docker://', 'oci:', 'docker-archive:'] as const;

/** True when the image string names one of the transports this module handles. */
export function isDockerTransport(s: string): boolean {
  return TRANSPORTS.some((p) => s.startsWith(p));
}

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
export const DIGEST = /^sha256:[0-9a-f]{64}$/;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;

export function parseDockerImageString(s: string): DockerImageRef {
  if (s.startsWith('docker://')) return parseRegistryRef(s.slice('docker://'.length), s);
  if (s.startsWith('oci:')) {
    const { path, ref } = splitPathRef(s.slice('oci:'.length), s);
    return { transport: 'oci', path, ref };
  }
  if (s.startsWith('docker-archive:')) {
    const { path, ref } = splitPathRef(s.slice('docker-archive:'.length), s);
    return { transport: 'docker-archive', path, ref };
  }
  throw new UsageError(`"${s}" is not a docker://, oci: or docker-archive: image`);
}

/** PATH[:REF]: the reference follows the first colon, as in skopeo (paths with colons cannot be named). */
function splitPathRef(rest: string, whole: string): { path: string; ref?: string } {
  const colon = rest.indexOf(':');
  const path = colon < 0 ? rest : rest.slice(0, colon);
  const ref = colon < 0 ? undefined : rest.slice(colon + 1);
  if (path === '') throw new UsageError(`bad image "${whole}": no path after the transport`);
  if (ref === '') throw new UsageError(`bad image "${whole}": empty reference after "${path}:"`);
  return { path, ref };
}

function parseRegistryRef(rest: string, whole: string): RegistryRef {
  // rkt accepted "docker:///redis" (an empty host part) for Docker Hub.
  const s = rest.replace(/^\/+/, '');
  if (s === '') throw new UsageError(`bad image "${whole}": no repository; use docker://[REGISTRY/]REPO[:TAG|@DIGEST]`);
  let name = s;
  let digest: string | undefined;
  const at = s.indexOf('@');
  if (at >= 0) {
    digest = s.slice(at + 1);
    name = s.slice(0, at);
    if (!DIGEST.test(digest)) throw new UsageError(`bad image "${whole}": "${digest}" is not a sha256:<64 hex digits> digest`);
  }
  let tag: string | undefined;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > slash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG.test(tag)) throw new UsageError(`bad image "${whole}": "${tag}" is not a valid tag`);
  }
  const parts = name.split('/');
  let registry = DOCKER_HUB;
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === 'localhost')) {
    registry = parts.shift()!;
    if (!HOST.test(registry)) throw new UsageError(`bad image "${whole}": "${registry}" is not a registry host[:port]`);
  }
  if (registry === 'docker.io' || registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  for (const c of parts) {
    if (!REPO_COMPONENT.test(c)) {
      throw new UsageError(`bad image "${whole}": repository component "${c}" must be lowercase letters and digits separated by ".", "_", "__" or "-"`);
    }
  }
  const repository = parts.join('/');
  if (repository.length > 255) throw new UsageError(`bad image "${whole}": the repository name is longer than 255 characters`);
  return { transport: 'docker', registry, repository, tag: tag ?? (digest ? undefined : 'latest'), digest };
}

/** The reference as a user would write it again. */
export function formatDockerRef(ref: DockerImageRef): string {
  switch (ref.transport) {
    case 'docker':
      return `docker://${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
    case 'oci':
    case 'docker-archive':
      return `${ref.transport}:${ref.path}${ref.ref ? `:${ref.ref}` : ''}`;
  }
}
