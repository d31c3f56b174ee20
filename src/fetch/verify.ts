import fs from 'node:fs';
import type { GlobalOptions } from '../config/global.js';
import { TrustError } from '../errors.js';

/** Check a detached signature against the keys trusted for the image's name. */
export async function verifyFileSignature(globals: GlobalOptions, imageName: string, dataPath: string, signaturePath: string): Promise<void> {
  if (!fs.existsSync(signaturePath)) {
    throw new TrustError(`no signature for ${dataPath}: looked for ${signaturePath}; pass --signature=FILE, or skip verification with --insecure-options=image`);
  }
  const { Keystore } = await import('../trust/keystore.js');
  const { verifySignature } = await import('../trust/verify.js');
  const keystore = new Keystore({ localConfig: globals.localConfig, systemConfig: globals.systemConfig, userConfig: globals.userConfig });
  const signer = await verifySignature({ keystore, imageName, dataPath, signaturePath });
  process.stderr.write(`image: signature verified:\n${signer.userIds.map((u) => `  ${u}\n`).join('')}`);
}
