// AC Name and AC Identifier (spec/types.md).
//
// The spec's regular expressions allow a single separator between
// alphanumeric runs, but its own examples ("example.com/~user/app_v1") and
// the reference implementation accept runs of separators as long as the
// first and last characters are alphanumeric. Manifests written by rkt and
// acbuild rely on the latter, so that is the rule enforced here.

import { RktError } from '../errors.js';

const ACNAME_CHARS = /^[a-z0-9-]+$/;
const ACIDENTIFIER_CHARS = /^[a-z0-9._~/-]+$/;
const ALNUM = /[a-z0-9]/;

function alnumEdges(s: string): boolean {
  return ALNUM.test(s[0]!) && ALNUM.test(s[s.length - 1]!);
}

/** Lowercase letters, digits and '-', starting and ending with a letter or digit. */
export function isACName(s: string): boolean {
  return s.length > 0 && ACNAME_CHARS.test(s) && alnumEdges(s);
}

/** Like an AC Name, with '.', '_', '~' and '/' also allowed inside. */
export function isACIdentifier(s: string): boolean {
  return s.length > 0 && ACIDENTIFIER_CHARS.test(s) && alnumEdges(s);
}

/**
 * Force a string into a valid AC Name: lowercase it, turn every other
 * character into '-', and strip dashes from both ends. Runs of dashes stay
 * as they are, so the result matches what rkt derives from the same input.
 * Throws when nothing usable is left (e.g. "___").
 */
export function sanitizeACName(s: string): string {
  const out = s
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '');
  if (out === '') throw new RktError(`cannot make an app name out of "${s}": it has no letter or digit; give a name with --name`);
  return out;
}

/**
 * The app name rkt gives an image that was not named on the command line:
 * the last path component of the image name, sanitized
 * ("example.com/my_app" becomes "my-app").
 */
export function appNameFromImageName(imageName: string): string {
  const parts = imageName.split('/');
  return sanitizeACName(parts[parts.length - 1]!);
}
