// The appc path whitelist: after an image is composed over its dependencies,
// only the listed paths survive in the rootfs.
//
// Semantics chosen where the spec is silent: a listed path keeps itself; one
// written with a trailing slash ("/etc/systemd/system/", as in the spec's own
// example) keeps everything under it too, while a directory listed without
// one keeps only the children that are listed themselves, as rkt matched
// whitelist entries exactly (converted Docker layers rely on that: their
// whitelist lists every surviving path, so that whited-out files under a
// surviving directory go). The directories leading to a listed path are kept
// so it stays reachable; everything else goes, empty directories included.
// Symlinks are never followed: one on the way to a listed path is kept as a
// symlink, and whatever it points at survives only if listed itself.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { ImageFormatError, RktError } from '../errors.js';

/** Prune `rootfsDir` to the whitelist. An empty whitelist keeps everything. */
export async function applyPathWhitelist(rootfsDir: string, whitelist: string[]): Promise<void> {
  if (whitelist.length === 0) return;
  const keep = new Set<string>();
  const exact = new Set<string>();
  const ancestors = new Set<string>();
  for (const entry of whitelist) {
    if (!entry.startsWith('/')) throw new ImageFormatError(`pathWhitelist entry "${entry}" is not an absolute path`);
    const parts = entry.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.includes('..')) throw new ImageFormatError(`pathWhitelist entry "${entry}" contains ".."`);
    if (parts.length === 0) {
      if (entry.endsWith('/')) return; // "/" keeps everything
      continue;
    }
    (entry.endsWith('/') ? keep : exact).add(parts.join('/'));
    for (let i = 1; i < parts.length; i++) ancestors.add(parts.slice(0, i).join('/'));
  }
  const st = await fsp.lstat(rootfsDir);
  if (!st.isDirectory()) throw new RktError(`cannot apply the path whitelist: ${rootfsDir} is not a directory`);
  // an exact entry is kept like a directory on the way to something listed
  for (const p of exact) ancestors.add(p);
  await prune(rootfsDir, '', keep, ancestors);
}

async function prune(root: string, rel: string, keep: Set<string>, ancestors: Set<string>): Promise<void> {
  // readdir's file types come from lstat semantics, so a symlink is never
  // mistaken for the directory it points at.
  const dirents = await fsp.readdir(rel ? path.join(root, rel) : root, { withFileTypes: true });
  for (const d of dirents) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (keep.has(r)) continue;
    if (ancestors.has(r)) {
      if (d.isDirectory()) await prune(root, r, keep, ancestors);
      continue;
    }
    // fs.rm removes symlinks themselves and never descends through them
    await fsp.rm(path.join(root, r), { recursive: true, force: true });
  }
}
