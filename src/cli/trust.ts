import type { Command } from 'commander';
import { RktError, UsageError } from '../errors.js';
import { isTrustPrefix } from '../trust/prefix.js';
import { globalsOf } from './context.js';

// `rkt trust`: add a public key to the local keystore, for an image name
// prefix or (--root) for every image. Like rkt, everything it says goes to
// stderr: there is no machine output, and the prompt must show even when
// stdout is redirected. openpgp is loaded inside the action, never at start-up.

interface TrustFlags {
  prefix?: string;
  root: boolean;
  skipFingerprintReview: boolean;
  insecureAllowHttp: boolean;
}

function say(line: string): void {
  process.stderr.write(line + '\n');
}

/** Reads answers line by line from stdin, only once a question is actually asked. */
class Answers {
  private lines: AsyncIterator<string> | undefined;
  private close: (() => void) | undefined;

  async ask(question: string): Promise<string | undefined> {
    process.stderr.write(question);
    if (this.lines === undefined) {
      const readline = await import('node:readline');
      const rl = readline.createInterface({ input: process.stdin, terminal: false });
      this.lines = rl[Symbol.asyncIterator]();
      this.close = () => rl.close();
    }
    const next = await this.lines.next();
    // A terminal echoes the user's newline; piped answers are not echoed, so end the prompt line ourselves.
    if (next.done || !process.stdin.isTTY) process.stderr.write('\n');
    return next.done ? undefined : next.value;
  }

  done(): void {
    this.close?.();
  }
}

function checkFlags(flags: TrustFlags, keyfiles: string[]): void {
  if (flags.root && flags.prefix !== undefined) {
    throw new UsageError('--root and --prefix are mutually exclusive: a key is trusted either for one prefix or for every image');
  }
  if (!flags.root && flags.prefix === undefined) {
    throw new UsageError('say what to trust the key for: --prefix=NAME (images named NAME or below it) or --root (every image)');
  }
  if (flags.prefix !== undefined && !isTrustPrefix(flags.prefix)) {
    throw new UsageError(`invalid --prefix "${flags.prefix}": use an image name prefix like "example.com/app" (lowercase letters, digits and -._~/)`);
  }
  if (keyfiles.length === 0 && flags.root) throw new UsageError('--root needs a key file: rkt trust --root KEYFILE');
}

/** No key file: the keys the prefix's discovery page offers (ac-discovery-pubkeys), as in rkt. */
async function discoverKeyLocations(prefix: string, net: { allowHttp: boolean; insecureTls: boolean; credentials?: (url: URL) => Record<string, string> | undefined }): Promise<string[]> {
  const { discoverPubkeys } = await import('../fetch/discovery.js');
  say(`Searching for the public keys of "${prefix}" (appc discovery)...`);
  const urls = await discoverPubkeys(prefix, net);
  for (const u of urls) say(`Found public key location: ${u}`);
  return urls;
}

export function register(program: Command): void {
  program
    .command('trust')
    .description('trust a public key for verifying images, for a name prefix or for every image')
    .argument('[keyfile...]', 'public key file(s) or http(s) URLs of keys; with none, --prefix finds them by appc discovery')
    .option('--prefix <prefix>', 'image name prefix to limit trust to, e.g. example.com/app')
    .option('--root', 'trust the key for every image (root key); needs a key file', false)
    .option('--skip-fingerprint-review', 'accept the key without fingerprint confirmation', false)
    .option('--insecure-allow-http', 'allow fetching keys over plain http', false)
    .action(async (keyfiles: string[], flags: TrustFlags, cmd: Command) => {
      checkFlags(flags, keyfiles);
      const globals = globalsOf(cmd);
      const { Keystore, readPublicKey, formatFingerprint } = await import('../trust/keystore.js');
      const { readKeySource } = await import('../trust/keysource.js');

      // Read and parse every key before asking anything or writing anything:
      // a typo in the third file must not leave the first two half-trusted.
      // rkt's --insecure-options=pubkey is the global form of --insecure-allow-http for keys
      const allowHttp = flags.insecureAllowHttp || globals.insecureOptions.http || globals.insecureOptions.pubkey;
      const insecureTls = globals.insecureOptions.tls;
      if (insecureTls) say('rkt: warning: TLS verification has been disabled (--insecure-options=tls): a key fetched this way may be anyone\'s; check its fingerprint');
      let locations = keyfiles;
      if (locations.length === 0) {
        const { credentialsFor } = await import('../fetch/auth.js');
        const { loadConfig } = await import('../config/loader.js');
        locations = await discoverKeyLocations(flags.prefix!, { allowHttp, insecureTls, credentials: credentialsFor(loadConfig(globals).auth) });
      }
      const keys = [];
      for (const location of locations) {
        const source = await readKeySource(location, { allowHttp, insecureTls });
        keys.push({ source, key: await readPublicKey(source.data, `key file "${location}"`) });
      }

      const keystore = new Keystore(globals);
      const scope = flags.prefix === undefined ? 'every image (root key)' : `prefix "${flags.prefix}"`;
      const answers = new Answers();
      const refused: string[] = [];
      try {
        for (const { source, key } of keys) {
          say(flags.prefix === undefined ? 'Root key: trusted for every image' : `Prefix: "${flags.prefix}"`);
          say(`Key: "${source.location}"`);
          say(`GPG key fingerprint is: ${formatFingerprint(key.getFingerprint())}`);
          for (const sub of key.subkeys) say(`    Subkey fingerprint: ${formatFingerprint(sub.getFingerprint())}`);
          for (const uid of key.getUserIDs()) say(`\t${uid}`);

          const unreviewed = flags.skipFingerprintReview || (globals.trustKeysFromHttps && source.https);
          if (!unreviewed) {
            const answer = (await answers.ask('Are you sure you want to trust this key (yes/no)? '))?.trim().toLowerCase();
            if (answer !== 'yes' && answer !== 'y') {
              say(`Not trusting "${source.location}".`);
              refused.push(source.location);
              continue;
            }
          }
          say(`Trusting "${source.location}" for ${scope}${unreviewed ? ' without fingerprint review' : ' after fingerprint review'}.`);
          const added = await keystore.addKey(source.data, flags.root ? { root: true } : { prefix: flags.prefix });
          say(flags.prefix === undefined ? `Added root key at "${added.path}"` : `Added key for prefix "${flags.prefix}" at "${added.path}"`);
        }
      } finally {
        answers.done();
      }
      if (refused.length > 0) {
        const what = refused.length === 1 ? `key "${refused[0]}" was` : `${refused.length} keys were`;
        throw new RktError(`${what} not trusted: answer "yes" after checking the fingerprint with the key's publisher`);
      }
    });
}
