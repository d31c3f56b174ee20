// One Docker/OCI layer turned into an ACI, as docker2aci did: the layer's
// entries move under rootfs/, whiteouts become deletions, and the ACI's
// pathWhitelist lists every path that exists once this layer is laid over
// the ones below it, so that rendering the layers in order (each layer's
// whitelist applied after it, exact entries, see src/image/whitelist.ts)
// deletes what the whiteouts delete. Unlike docker2aci, a layer without
// whiteouts gets no whitelist: it has nothing to delete, and big images
// would not fit their path lists into ACI manifests.
//
//   dir/.wh.NAME      deletes dir/NAME (and all under it) from lower layers
//   dir/.wh..wh..opq  hides everything lower layers put in dir
//
// The result is checked again by the store's ACI checker like any image;
// absolute and ".." names are refused here already, since prefixing them
// with rootfs/ would otherwise blur them.

import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { ImageFormatError, quote } from '../errors.js';
import type { ImageManifest, Label } from '../appc/types.js';
import { MAX_MANIFEST_SIZE } from '../image/tar-check.js';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
// pax keys worth keeping: file capabilities and user xattrs, as rendering extracts only those.
const KEEP_PAX = /^SCHILY\.xattr\.(?:security\.capability|user\..+)$/;

export interface ConvertedLayer {
  /** Paths (relative, no leading slash) that exist after this layer. */
  paths: Set<string>;
}

export interface LayerAciSpec {
  name: string;
  labels: Label[];
  /** Paths that exist after the layers below. */
  lower: ReadonlySet<string>;
  /** How to name the layer in messages. */
  what: string;
  annotations?: { name: string; value: string }[];
}

function clean(name: string, what: string): string {
  if (name.startsWith('/')) throw new ImageFormatError(`${what}: entry ${quote(name)} has an absolute path; the layer is malformed or hostile`);
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new ImageFormatError(`${what}: entry ${quote(name)} has a ".." component; the layer is malformed or hostile`);
  return parts.join('/');
}

/** Whether `p` or one of its ancestors is in `set` (strict ancestors only when `strict`). */
function underAny(p: string, set: ReadonlySet<string>, strict: boolean): boolean {
  if (set.size === 0) return false;
  if (!strict && set.has(p)) return true;
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) if (set.has(p.slice(0, i))) return true;
  return false;
}

/**
 * Convert an uncompressed layer tar into an uncompressed ACI tar. Returns the
 * ACI stream and a promise of the resulting path set, settled when the input
 * has been read; a failure destroys the output with the same error.
 */
export function convertLayer(input: Readable, spec: LayerAciSpec): { aci: Readable; done: Promise<ConvertedLayer> } {
  const extract = tar.extract();
  const pack = tar.pack();
  const out = Readable.from(pack);
  const own = new Set<string>();
  const deleted = new Set<string>();
  const opaque = new Set<string>();
  pack.entry({ name: 'rootfs', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date(0) });

  extract.on('entry', (header, stream, next) => {
    // a refusal destroys the entry's stream with the extractor's error, which is reported there
    stream.on('error', () => undefined);
    let rel: string;
    try {
      rel = clean(header.name, spec.what);
    } catch (err) {
      stream.resume();
      next(err as Error);
      return;
    }
    const slash = rel.lastIndexOf('/');
    const dir = slash < 0 ? '' : rel.slice(0, slash);
    const base = rel.slice(slash + 1);
    if (base.startsWith(WHITEOUT)) {
      if (base === OPAQUE) opaque.add(dir);
      else if (!base.startsWith(`${WHITEOUT}${WHITEOUT}`)) deleted.add(dir === '' ? base.slice(WHITEOUT.length) : `${dir}/${base.slice(WHITEOUT.length)}`);
      // other ".wh..wh." names are aufs bookkeeping, not content
      stream.resume();
      stream.once('end', () => next());
      return;
    }
    if (rel === '') {
      stream.resume();
      stream.once('end', () => next());
      return;
    }
    own.add(rel);
    const h: Header = {
      name: `rootfs/${rel}`,
      type: header.type === 'contiguous-file' ? 'file' : header.type,
      mode: header.mode,
      uid: header.uid,
      gid: header.gid,
      mtime: header.mtime,
      size: header.type === 'file' || header.type === 'contiguous-file' ? header.size : 0,
      devmajor: header.devmajor,
      devminor: header.devminor,
      linkname: '',
      uname: '',
      gname: '',
    };
    if (header.type === 'link') {
      try {
        h.linkname = `rootfs/${clean(header.linkname ?? '', spec.what)}`;
      } catch (err) {
        stream.resume();
        next(err as Error);
        return;
      }
    } else if (header.type === 'symlink') {
      h.linkname = header.linkname ?? '';
    }
    const pax = Object.entries(header.pax ?? {}).filter(([k]) => KEEP_PAX.test(k));
    if (pax.length > 0) h.pax = Object.fromEntries(pax);
    if (h.type === 'file') {
      const w = pack.entry(h, (err) => next(err ?? undefined));
      stream.pipe(w);
    } else {
      pack.entry(h);
      stream.resume();
      stream.once('end', () => next());
    }
  });

  const done = new Promise<ConvertedLayer>((resolve, reject) => {
    const fail = (err: unknown): void => {
      const e = err instanceof ImageFormatError ? err : new ImageFormatError(`${spec.what} is not a valid tar archive: ${(err as Error).message}`, { cause: err });
      input.destroy();
      extract.destroy();
      out.destroy(e);
      reject(e);
    };
    input.once('error', (err) => {
      extract.destroy();
      out.destroy(err);
      reject(err);
    });
    extract.on('error', fail);
    extract.once('finish', () => {
      try {
        const paths = new Set<string>();
        for (const p of spec.lower) if (!underAny(p, deleted, false) && !underAny(p, opaque, true)) paths.add(p);
        for (const p of own) paths.add(p);
        const manifest = layerManifest(spec, paths, deleted.size > 0 || opaque.size > 0);
        const json = Buffer.from(JSON.stringify(manifest));
        if (json.length > MAX_MANIFEST_SIZE) {
          throw new ImageFormatError(`${spec.what}: the image has ${paths.size} paths, too many to list in an ACI manifest of at most 1 MiB`);
        }
        pack.entry({ name: 'manifest', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: new Date(0) }, json);
        pack.finalize();
        resolve({ paths });
      } catch (err) {
        fail(err);
      }
    });
  });
  done.catch(() => undefined);
  input.pipe(extract);
  return { aci: out, done };
}

function layerManifest(spec: LayerAciSpec, paths: Set<string>, deletes: boolean): ImageManifest {
  const m: ImageManifest = { acKind: 'ImageManifest', acVersion: '0.8.11', name: spec.name, labels: spec.labels };
  // Only a layer that deletes needs a whitelist: after any other, the tree
  // holds exactly what the layers so far put there. An empty whitelist would
  // keep everything, so a layer that leaves nothing lists only "/." (the
  // root itself, exactly), which keeps nothing below it.
  if (deletes) m.pathWhitelist = paths.size > 0 ? [...paths].sort().map((p) => `/${p}`) : ['/.'];
  if (spec.annotations) m.annotations = spec.annotations;
  return m;
}
