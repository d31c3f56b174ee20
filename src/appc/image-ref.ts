// Image strings as rkt's command line takes them:
//
//   example.com/app                      a name
//   example.com/app:1.0                  a name and its "version" label
//   example.com/app,version=1.0,os=linux a name and labels
//   example.com/app:1.0,arch=amd64       both
//   sha512-0123abcd...                   an image ID, possibly shortened
//   ./app.aci  /tmp/app.aci              a file
//   docker://busybox  https://x/app.aci  a URL

import { UsageError } from '../errors.js';
import { isACIdentifier } from './acname.js';
import type { Label } from './types.js';

/** An image string that does not follow the name[:version][,label=value...] syntax. */
export class ImageRefError extends UsageError {}

export interface ImageRef {
  name: string;
  /** The "version" label (from ":version" or ",version=") comes first, the rest in the order given. */
  labels: Label[];
}

// 128 hex digits is a full SHA-512; rkt shortens IDs to 64 and users type prefixes.
const IMAGE_ID = /^sha512-[0-9a-f]{1,128}$/;
const URL_SCHEME = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

/** "sha512-" followed by 1 to 128 lowercase hex digits: a full or shortened image ID. */
export function isImageId(s: string): boolean {
  return IMAGE_ID.test(s);
}

export type ImageStringKind = 'id' | 'url' | 'path' | 'name';

/**
 * Guess what an image string is, in rkt's order: an ID, a URL, an absolute
 * path; then a colon means a versioned name; then a leading dot or an .aci
 * suffix means a path; then, if the caller can look, an existing file is a
 * path; anything else is a name. Only "scheme://" counts as a URL, so that
 * "busybox:1.0" is a name and not a URL with the scheme "busybox".
 */
export function classifyImageString(s: string, isFile?: (path: string) => boolean): ImageStringKind {
  if (isImageId(s)) return 'id';
  if (URL_SCHEME.test(s)) return 'url';
  if (s.startsWith('/')) return 'path';
  if (s.includes(':')) return 'name';
  if (s.startsWith('.') || s.endsWith('.aci')) return 'path';
  if (isFile?.(s) === true) return 'path';
  return 'name';
}

/** True when the string is a URL with a scheme and "//" (docker://..., https://...). */
export function looksLikeURL(s: string): boolean {
  return classifyImageString(s) === 'url';
}

/** True when the string reads as a file path without looking at the filesystem. */
export function looksLikePath(s: string): boolean {
  return classifyImageString(s) === 'path';
}

/** Parse a name with optional version and labels. Throws ImageRefError with the rule that failed. */
export function parseImageString(s: string): ImageRef {
  if (s === '') throw new ImageRefError('empty image name');
  const [head = '', ...pairs] = s.split(',');
  const colons = s.split(':').length - 1;
  if (colons > 1) throw new ImageRefError(`bad image string "${s}": a colon may appear at most once, between the name and the version`);
  if (colons === 1 && !head.includes(':')) {
    throw new ImageRefError(`bad image string "${s}": the colon must come right after the name, before any ",label=value"`);
  }

  const [name = '', version] = head.split(':');
  if (!isACIdentifier(name)) {
    throw new ImageRefError(
      `bad image name "${name}" in "${s}": names use lowercase letters, digits and "-._~/", and start and end with a letter or digit`,
    );
  }
  const labels: Label[] = [];
  if (version !== undefined) {
    if (version === '') throw new ImageRefError(`bad image string "${s}": empty version after ":"`);
    labels.push({ name: 'version', value: version });
  }
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq < 0) throw new ImageRefError(`bad image string "${s}": "${pair}" is not of the form label=value`);
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    if (!isACIdentifier(key)) throw new ImageRefError(`bad image string "${s}": "${key}" is not a valid label name`);
    if (key === 'name') throw new ImageRefError(`bad image string "${s}": the name goes first, not as a "name=" label`);
    if (value === '') throw new ImageRefError(`bad image string "${s}": label "${key}" has an empty value`);
    if (labels.some((l) => l.name === key)) throw new ImageRefError(`bad image string "${s}": label "${key}" is given more than once`);
    labels.push({ name: key, value });
  }
  // Keep "version" first whichever way it was written, so equal refs format equally.
  labels.sort((a, b) => Number(b.name === 'version') - Number(a.name === 'version'));
  return { name, labels };
}

/** The inverse of parseImageString: name[:version][,label=value...]. */
export function formatImageString(ref: ImageRef): string {
  const version = ref.labels.find((l) => l.name === 'version');
  const rest = ref.labels.filter((l) => l.name !== 'version').map((l) => `,${l.name}=${l.value}`);
  return `${ref.name}${version === undefined ? '' : `:${version.value}`}${rest.join('')}`;
}

/** How rkt shows an image in lists: "name:version", or just the name when there is no version label. */
export function nameWithVersion(manifest: { name: string; labels?: readonly Label[] | undefined }): string {
  const version = manifest.labels?.find((l) => l.name === 'version')?.value;
  return version === undefined || version === '' ? manifest.name : `${manifest.name}:${version}`;
}
