// A `docker save` tarball: manifest.json names, per image, its config file,
// its RepoTags and its layer tars, all members of the same (uncompressed)
// archive. The archive is indexed once by walking its headers, and members
// are then read in place; layer bytes are checked against the config's diff
// IDs while they are converted.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ImageNotFoundError, RktError, isErrno, quote, whyUnreadable } from '../errors.js';
import { readAt, walkTar } from './tar-walk.js';
import { sha256Of } from './digest.js';
import type { ResolvedImage } from './image.js';
import { ImageDocumentError, MAX_CONFIG_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES, parseImageConfig } from './manifest.js';
import type { DockerArchiveRef } from './reference.js';
import { parseDockerImageString } from './reference.js';
import { aciNameOf } from './remote.js';

const MAX_MEMBERS = 100_000;

interface Member {
  offset: number;
  size: number;
}

/** Names of the archive's regular files, with where their data lies. */
export function indexArchive(fd: number, file: string): Map<string, Member> {
  const members = new Map<string, Member>();
  walkTar(fd, file, (e) => {
    if (e.typeflag !== '0' && e.typeflag !== '\0') return;
    members.set(e.name, { offset: e.dataAt, size: e.size });
    if (members.size > MAX_MEMBERS) throw new ImageDocumentError(`${file} has more than ${MAX_MEMBERS} members; it is not a docker save archive`);
  });
  return members;
}

function memberBytes(fd: number, members: Map<string, Member>, name: string, max: number, where: string): Buffer {
  const m = members.get(name);
  if (!m) throw new ImageDocumentError(`${where}: ${quote(name)} is missing from the archive`);
  if (m.size > max) throw new ImageDocumentError(`${where}: ${quote(name)} is ${m.size} bytes; the limit is ${max}`);
  return readAt(fd, m.offset, m.size, where);
}

interface SaveEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function parseSaveManifest(bytes: Buffer, where: string): SaveEntry[] {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ImageDocumentError(`${where}: manifest.json is not valid JSON`);
  }
  if (!Array.isArray(v) || v.length === 0) throw new ImageDocumentError(`${where}: manifest.json must be a non-empty list`);
  return v.map((e: unknown, i) => {
    const o = e as Record<string, unknown>;
    const ok = typeof o === 'object' && o !== null && typeof o.Config === 'string' && Array.isArray(o.Layers) && o.Layers.every((l) => typeof l === 'string');
    if (!ok) throw new ImageDocumentError(`${where}: manifest.json entry ${i} needs "Config" and "Layers"`);
    const tags = Array.isArray(o.RepoTags) ? o.RepoTags.filter((t): t is string => typeof t === 'string') : [];
    if ((o.Layers as string[]).length > MAX_LAYERS) throw new ImageDocumentError(`${where}: more than ${MAX_LAYERS} layers`);
    return { Config: o.Config as string, RepoTags: tags, Layers: o.Layers as string[] };
  });
}

function pickEntry(entries: SaveEntry[], ref: DockerArchiveRef, where: string): SaveEntry {
  if (ref.ref !== undefined) {
    const entry = entries.find((e) => e.RepoTags.includes(ref.ref!) || e.RepoTags.includes(`docker.io/library/${ref.ref}`));
    if (entry) return entry;
    const tags = entries.flatMap((e) => e.RepoTags);
    throw new ImageNotFoundError(`${where} has no image tagged ${quote(ref.ref)} (it has: ${tags.map((t) => quote(t)).join(', ') || 'no tags'})`);
  }
  if (entries.length === 1) return entries[0]!;
  throw new ImageNotFoundError(`${where} holds ${entries.length} images; name one with docker-archive:${ref.path}:REPO:TAG`);
}

export async function resolveDockerArchive(ref: DockerArchiveRef): Promise<ResolvedImage> {
  const file = path.resolve(ref.path);
  const where = `the docker archive ${ref.path}`;
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImageNotFoundError(`${where} does not exist`, { cause: err });
    throw new RktError(`${where} ${whyUnreadable(err)}`, { cause: err });
  }
  let members: Map<string, Member>;
  let entries: SaveEntry[];
  let configBytes: Buffer;
  let entry: SaveEntry | undefined;
  try {
    if (!fs.fstatSync(fd).isFile()) throw new RktError(`${where} is not a regular file; give the path of a "docker save" tarball`);
    const magic = Buffer.alloc(6);
    fs.readSync(fd, magic, 0, 6, 0);
    if ((magic[0] === 0x1f && magic[1] === 0x8b) || magic.toString('latin1', 0, 3) === 'BZh' || magic.toString('latin1', 1, 6) === '7zXZ\0') {
      throw new RktError(`${where} is compressed; decompress it first (docker save writes a plain tar)`);
    }
    members = indexArchive(fd, where);
    entries = parseSaveManifest(memberBytes(fd, members, 'manifest.json', MAX_MANIFEST_BYTES, where), where);
    entry = pickEntry(entries, ref, where);
    configBytes = memberBytes(fd, members, entry.Config, MAX_CONFIG_BYTES, where);
  } finally {
    fs.closeSync(fd);
  }
  const config = parseImageConfig(configBytes, `the image config of ${where}`);
  if (config.diffIds.length !== entry.Layers.length) {
    throw new ImageDocumentError(`${where}: manifest.json lists ${entry.Layers.length} layers but the config ${config.diffIds.length}`);
  }
  const layers = entry.Layers.map((name, i) => {
    const m = members.get(name.split('/').filter((c) => c !== '' && c !== '.').join('/'));
    if (!m) throw new ImageDocumentError(`${where}: layer ${quote(name)} is missing from the archive`);
    const what = `layer ${i + 1} of ${where}`;
    return {
      diffId: config.diffIds[i]!,
      what,
      open: async (): Promise<Readable> => (m.size === 0 ? Readable.from([]) : fs.createReadStream(file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 })),
    };
  });
  const tag = ref.ref ?? entry.RepoTags[0];
  let name = aciNameOf(path.basename(file).replace(/\.tar$/, ''));
  let version = 'latest';
  if (tag) {
    const parsed = parseDockerImageString(`docker://${tag}`);
    if (parsed.transport === 'docker') {
      name = aciNameOf(`${parsed.registry}/${parsed.repository}`);
      version = parsed.tag ?? version;
    }
  }
  return { name, version, config, configDigest: sha256Of(configBytes), layers, annotations: [{ name: 'appc.io/docker/archive', value: file }] };
}
