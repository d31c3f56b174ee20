import { mountOf, readMountinfo, unescapeMountinfo, type MountInfo } from './mounts.js';

// The layers of an overlayfs mount, read back from its options in
// mountinfo. The kernel shows each layer's path as it was given at mount
// time (where "\" escapes a ":" or "," in a path), and escapes that again
// as \ooo (backslash, comma, space, ...).

export class OverlayOptionsError extends Error {}

/** An overlay's layers: `upper` (if any) over `lower`, topmost first. */
export interface OverlayLayers {
  upper?: string;
  lower: string[];
}

// overlayfs's option names; a comma is an option separator only before one of them
const KEY = /^(lowerdir\+?|upperdir|workdir|datadir\+|default_permissions|redirect_dir|index|uuid|nfs_export|userxattr|xino|metacopy|verity|volatile|fsync|ro|rw)(=|$)/;

/** Split super options at the commas that separate options (a raw comma inside a path does not). */
export function splitOverlayOptions(options: string): string[] {
  const out: string[] = [];
  for (const piece of options.split(',')) {
    if (out.length > 0 && !KEY.test(piece)) out[out.length - 1] += ',' + piece;
    else out.push(piece);
  }
  return out;
}

/** Split at the ":" that "\" does not escape, and drop the escapes. */
function splitLayers(list: string): string[] {
  const layers: string[] = [];
  let cur = '';
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (c === '\\' && i + 1 < list.length) cur += list[++i];
    else if (c === ':') {
      layers.push(cur);
      cur = '';
    } else cur += c;
  }
  layers.push(cur);
  return layers;
}

/** The layers named by an overlay's super options (as in mountinfo). */
export function parseOverlayOptions(options: string): OverlayLayers {
  const lower: string[] = [];
  let upper: string | undefined;
  for (const opt of splitOverlayOptions(options)) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = unescapeMountinfo(opt.slice(eq + 1));
    if (key === 'lowerdir' || key === 'lowerdir+') {
      const layers = key === 'lowerdir' ? splitLayers(value) : [value];
      // "::" starts the data-only layers, which are not part of the merged tree
      if (layers.some((l) => l === '')) throw new OverlayOptionsError('the overlay has data-only lower layers');
      lower.push(...layers);
    } else if (key === 'datadir+') {
      throw new OverlayOptionsError('the overlay has data-only lower layers');
    } else if (key === 'upperdir') {
      upper = value;
    }
  }
  if (lower.length === 0) throw new OverlayOptionsError('the overlay names no lower layer');
  if ([upper, ...lower].some((l) => l !== undefined && !l.startsWith('/'))) throw new OverlayOptionsError('the overlay names a layer by a relative path');
  return { ...(upper === undefined ? {} : { upper }), lower };
}

/**
 * The layers of the overlay mounted at `dir` (an absolute path without
 * symlinks), topmost first, or undefined when `dir` is not the root of an
 * overlay mount. Throws when it is one whose layers cannot be used.
 */
export function overlayLayersAt(dir: string, table: MountInfo[] = readMountinfo()): { mount: MountInfo; layers: string[] } | undefined {
  const mount = mountOf(dir, table);
  if (mount === undefined || mount.fsType !== 'overlay') return undefined;
  if (mount.mountPoint !== dir || mount.root !== '/') throw new OverlayOptionsError(`${dir} is inside an overlay mounted at ${mount.mountPoint}, not its root`);
  const { upper, lower } = parseOverlayOptions(mount.superOptions);
  return { mount, layers: upper === undefined ? lower : [upper, ...lower] };
}
