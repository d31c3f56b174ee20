// The appc path whitelist: after an image is composed over its dependencies,
// only the listed paths survive in the rootfs.
//
// Semantics chosen where the spec is silent: a listed path keeps itself and,
// when it is a directory, everything under it (the spec's own example lists
// "/etc/systemd/system/"); the directories leading to a listed path are kept
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
  const ancestors = new Set<string>();
  for (const entry of whitelist) {
    if (!entry.startsWith('/')) throw new ImageFormatError(`pathWhitelist entry "${entry}" is not an absolute path`);
    const parts = entry.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.includes('..')) throw new ImageFormatError(`pathWhitelist entry "${entry}" contains ".."`);
    if (parts.length === 0) return; // "/" keeps everything
    keep.add(parts.join('/'));
    for (let i = 1; i < parts.length; i++) ancestors.add(parts.slice(0, i).join('/'));
  }
  const st = await fsp.lstat(rootfsDir);
  if (!st.isDirectory()) throw new RktError(`cannot apply the path whitelist: ${rootfsDir} is not a directory`);
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
