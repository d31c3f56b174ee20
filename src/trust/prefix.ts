import { isACIdentifier } from '../appc/acname.js';

// Image names and trust prefixes become directories under
// trustedkeys/prefix.d, so besides being AC identifiers (appc spec/types.md)
// their path segments must be real directory names: the shared AC identifier
// check allows runs of separators, which would let "a/../b" climb out of
// prefix.d. Kept free of openpgp so that `rkt trust` can check flags cheaply.

/** True if `s` can name a trust prefix, e.g. "example.com/app". */
export function isTrustPrefix(s: string): boolean {
  return isACIdentifier(s) && s.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}
