import { printable } from '../errors.js';
import { log, say } from '../log.js';
import { formatFingerprint, readPublicKey, type Keystore } from './keystore.js';
import { readKeySource } from './keysource.js';
import { parseSignature } from './verify.js';

// rkt's --trust-keys-from-https: when an image found by discovery is signed
// by a key not yet trusted for its name, the keys its discovery page offers
// (ac-discovery-pubkeys) are fetched, and the one that made the signature is
// trusted for the image's name without review, if it came over https with
// the certificate checked. That trusts whoever controls the name's web
// server today, so each key trusted this way is announced on stderr.

export interface AutoTrust {
  keystore: Keystore;
  /** The image name: the prefix the key is trusted for. */
  name: string;
  signature: Uint8Array;
  keyUrls: readonly string[];
}

/** Returns the fingerprints trusted now (none when the signer was already trusted or not offered). */
export async function trustSignerFromHttps({ keystore, name, signature, keyUrls }: AutoTrust): Promise<string[]> {
  const issuers = (await parseSignature(signature, `signature of ${name}`)).getSigningKeyIDs();
  const trusted = await keystore.keysFor(name);
  if (trusted.some((k) => issuers.some((id) => k.key.getKeys(id).length > 0))) return [];

  const added: string[] = [];
  for (const url of keyUrls) {
    if (!url.startsWith('https://')) {
      log().debug({ url }, '--trust-keys-from-https: not an https key URL, skipped');
      continue;
    }
    let source;
    try {
      source = await readKeySource(url, { allowHttp: false });
    } catch (err) {
      log().debug({ url, err: (err as Error).message }, '--trust-keys-from-https: key not fetched');
      continue;
    }
    const key = await readPublicKey(source.data, `key ${printable(url, 300)}`);
    if (!issuers.some((id) => key.getKeys(id).length > 0)) {
      log().debug({ url, fingerprint: key.getFingerprint() }, '--trust-keys-from-https: key did not make the signature, skipped');
      continue;
    }
    const stored = await keystore.addKey(source.data, { prefix: name });
    say(
      `warning: trusting key ${formatFingerprint(stored.fingerprint)} (${printable(key.getUserIDs()[0] ?? 'no user id')}) for prefix "${name}" ` +
        `without review, because it was fetched over https from ${printable(url, 300)} (--trust-keys-from-https); it is kept at ${stored.path}`,
    );
    added.push(stored.fingerprint);
  }
  return added;
}
