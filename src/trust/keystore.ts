import fs from 'node:fs';
import path from 'node:path';
import * as openpgp from 'openpgp';
import type { KeyID, PublicKey } from 'openpgp';
import { TrustError, UsageError, isErrno } from '../errors.js';
import { log } from '../log.js';
import { writeFileAtomic } from '../util/atomic.js';
import { isTrustPrefix } from './prefix.js';

// rkt's keystore: trusted OpenPGP public keys on disk, one file per key, named
// after the lowercase hex fingerprint of the primary key.
//
//   <config>/trustedkeys/root.d/<fp>                  trusted for every image
//   <config>/trustedkeys/prefix.d/<acidentifier>/<fp> trusted for images named
//                                                     <acidentifier> or below it
//
// Three config dirs are read, in increasing precedence: system (the OS
// distribution's), local (the administrator's, where `rkt trust` writes) and
// user. An EMPTY file named after a fingerprint masks that key: the
// administrator can disable a key the distribution shipped without editing
// /usr/lib. A mask applies to keys from its own and lower-precedence dirs, for
// the images its location covers (root.d: all; prefix.d/<p>: names under <p>).

export type ConfigLevel = 'system' | 'local' | 'user';

/** Lowest precedence first: a later level may mask keys of an earlier one. */
const LEVELS: readonly ConfigLevel[] = ['system', 'local', 'user'];

export interface KeystoreDirs {
  localConfig: string;
  systemConfig: string;
  userConfig: string;
}

/** One file in a trustedkeys directory. */
export interface KeyFileEntry {
  fingerprint: string;
  path: string;
  level: ConfigLevel;
  /** The ACIdentifier prefix the key is trusted for; null for a root.d key. */
  prefix: string | null;
  /** An empty file: disables the fingerprint instead of trusting it. */
  mask: boolean;
  /** User IDs of the key; empty for masks. */
  userIds: string[];
}

/** A key that is trusted for a given image name. */
export interface TrustedKey extends KeyFileEntry {
  mask: false;
  key: PublicKey;
}

/** A key file that cannot be used: unreadable, not a public key, or of the wrong kind. */
export class KeyFormatError extends TrustError {}


// v4 fingerprints are 40 hex digits, v6 ones 64. Anything else in a
// trustedkeys dir (editor backups, our own atomic-write temp files) is not a key.
const FINGERPRINT_NAME = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

/** "8B86 DE38 890D DB72 9186  7B02 5210 BD88 8818 2190", the way gpg and rkt show it. */
export function formatFingerprint(fingerprint: string): string {
  const groups = fingerprint.toUpperCase().match(/.{1,4}/g) ?? [];
  const half = Math.ceil(groups.length / 2);
  return `${groups.slice(0, half).join(' ')}  ${groups.slice(half).join(' ')}`;
}

/**
 * ASCII armor or binary OpenPGP? Armored files may carry a few lines of text
 * before the armor header (openpgp.js skips them), so look a little way in.
 */
export function looksArmored(data: Uint8Array): boolean {
  return Buffer.from(data.buffer, data.byteOffset, Math.min(data.length, 4096)).toString('latin1').includes('-----BEGIN PGP ');
}

/**
 * Parse exactly one OpenPGP public key, armored or binary. `source` names the
 * input in error messages. Private keys are refused outright: trusting needs
 * only the public half, and a secret key has no business in /etc/rkt.
 */
export async function readPublicKey(data: Uint8Array, source: string): Promise<PublicKey> {
  if (data.length === 0) throw new KeyFormatError(`${source}: empty file, not an OpenPGP public key`);
  let keys: openpgp.Key[];
  try {
    keys = looksArmored(data)
      ? await openpgp.readKeys({ armoredKeys: Buffer.from(data).toString('utf8') })
      : await openpgp.readKeys({ binaryKeys: data });
  } catch (err) {
    throw new KeyFormatError(`${source}: not an OpenPGP public key (${(err as Error).message}); export one with "gpg --armor --export <key id>"`, { cause: err });
  }
  const key = keys[0];
  if (key === undefined || keys.length !== 1) {
    throw new KeyFormatError(`${source}: holds ${keys.length} keys; give rkt one key per file so that each is reviewed and trusted on its own`);
  }
  if (key.isPrivate()) {
    throw new KeyFormatError(`${source}: is a PRIVATE key; never hand it out. Give rkt the public key: "gpg --armor --export ${key.getFingerprint()}"`);
  }
  return key.toPublic();
}

/**
 * Why `key` cannot sign at `date` (or sign as subkey `keyID`), in words for a
 * user; null if it can. openpgp.js only says "could not find a valid signing
 * key", so revocation and expiry are asked separately.
 */
export async function keyProblem(key: PublicKey, keyID: KeyID | undefined, date: Date): Promise<string | null> {
  let failure: Error;
  try {
    await key.getSigningKey(keyID, date);
    return null;
  } catch (err) {
    failure = err as Error;
  }
  if (await key.isRevoked(undefined, undefined, date)) return 'has been revoked';
  const expires = await key.getExpirationTime();
  if (expires instanceof Date && expires.getTime() <= date.getTime()) return `expired on ${expires.toISOString()}`;
  const sub = keyID === undefined ? undefined : key.getSubkeys(keyID)[0];
  if (sub !== undefined) {
    try {
      await sub.verify(date);
    } catch (err) {
      const msg = (err as Error).message;
      if (/revoked/i.test(msg)) return `has its signing subkey ${sub.getKeyID().toHex()} revoked`;
      if (/expired/i.test(msg)) return `has its signing subkey ${sub.getKeyID().toHex()} expired`;
    }
  }
  return `cannot sign: ${failure.message}`;
}

export class Keystore {
  private readonly dirs: Record<ConfigLevel, string>;

  constructor(dirs: KeystoreDirs) {
    this.dirs = { system: dirs.systemConfig, local: dirs.localConfig, user: dirs.userConfig };
  }

  private rootDir(level: ConfigLevel): string {
    return path.join(this.dirs[level], 'trustedkeys', 'root.d');
  }

  private prefixDir(level: ConfigLevel, prefix?: string): string {
    const base = path.join(this.dirs[level], 'trustedkeys', 'prefix.d');
    return prefix === undefined ? base : path.join(base, ...prefix.split('/'));
  }

  /**
   * Trust a public key for images under `prefix`, or for every image with
   * `root`, by writing it into the LOCAL config dir. The stored file is the
   * re-armored public key alone: rkt reads armored keys, and re-encoding drops
   * whatever else the input carried.
   */
  async addKey(data: Uint8Array, opts: { prefix?: string; root?: boolean }): Promise<{ fingerprint: string; path: string }> {
    const { prefix, root = false } = opts;
    if (root && prefix !== undefined) throw new UsageError('a key is trusted either for a prefix or as a root key, not both');
    if (!root && prefix === undefined) throw new UsageError('say what to trust the key for: a prefix, or every image (root)');
    if (prefix !== undefined && !isTrustPrefix(prefix)) {
      throw new UsageError(`invalid prefix "${prefix}": an image name prefix like "example.com/app" (lowercase letters, digits and -._~/, no empty, "." or ".." segments)`);
    }
    const key = await readPublicKey(data, 'key');
    const fingerprint = key.getFingerprint().toLowerCase();
    // A key that can no longer sign would only make verification fail later, with a less clear message.
    const problem = await keyProblem(key, undefined, new Date());
    if (problem !== null) throw new KeyFormatError(`key ${fingerprint} ${problem}; refusing to trust it`);

    const dir = prefix === undefined ? this.rootDir('local') : this.prefixDir('local', prefix);
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    const target = path.join(dir, fingerprint);
    writeFileAtomic(target, key.armor(), 0o644);
    log().debug({ fingerprint, path: target }, 'trusted key stored');
    return { fingerprint, path: target };
  }

  /**
   * The keys trusted for an image name: root.d keys plus the prefix.d keys of
   * every prefix of the name at a path-segment boundary ("example.com/app"
   * covers "example.com/app" and "example.com/app/sub", not "example.com/apples").
   */
  async keysFor(imageName: string): Promise<TrustedKey[]> {
    if (!isTrustPrefix(imageName)) throw new TrustError(`cannot look up trusted keys for "${imageName}": not a valid image name`);
    const segments = imageName.split('/');
    const prefixes = segments.map((_, i) => segments.slice(0, i + 1).join('/'));

    const entries: KeyFileEntry[] = [];
    for (const level of LEVELS) {
      entries.push(...(await this.scanDir(level, this.rootDir(level), null)));
      for (const p of prefixes) entries.push(...(await this.scanDir(level, this.prefixDir(level, p), p)));
    }

    // Highest level holding a mask for each fingerprint.
    const maskLevel = new Map<string, number>();
    for (const e of entries) {
      if (e.mask) maskLevel.set(e.fingerprint, Math.max(maskLevel.get(e.fingerprint) ?? -1, LEVELS.indexOf(e.level)));
    }
    // One entry per fingerprint: the last one seen wins, i.e. the highest
    // level and, within it, the most specific prefix (an updated copy of a key
    // placed by the administrator overrides the distribution's).
    const chosen = new Map<string, KeyFileEntry>();
    for (const e of entries) {
      if (e.mask) continue;
      if ((maskLevel.get(e.fingerprint) ?? -1) >= LEVELS.indexOf(e.level)) continue;
      chosen.set(e.fingerprint, e);
    }
    const out: TrustedKey[] = [];
    for (const e of chosen.values()) {
      const key = await this.loadKeyFile(e.path, e.fingerprint);
      out.push({ ...e, mask: false, key, userIds: key.getUserIDs() });
    }
    return out;
  }

  /** Every key file and mask in every config dir, for display; keys are parsed and checked. */
  async list(): Promise<KeyFileEntry[]> {
    const out = await this.allEntries();
    for (const e of out) {
      if (!e.mask) e.userIds = (await this.loadKeyFile(e.path, e.fingerprint)).getUserIDs();
    }
    return out;
  }

  /**
   * Every key in every config dir, whatever it is trusted for and masked or
   * not: the candidates to check a signature with while the image's name is
   * not known yet. Only keysFor() says whom to trust. A key file that does
   * not parse is left out here; keysFor() reports it when it matters.
   */
  async everyKey(): Promise<TrustedKey[]> {
    const out: TrustedKey[] = [];
    for (const e of await this.allEntries()) {
      if (e.mask) continue;
      try {
        const key = await this.loadKeyFile(e.path, e.fingerprint);
        out.push({ ...e, mask: false, key, userIds: key.getUserIDs() });
      } catch (err) {
        log().debug({ path: e.path, err: (err as Error).message }, 'skipping unusable key file');
      }
    }
    return out;
  }

  private async allEntries(): Promise<KeyFileEntry[]> {
    const out: KeyFileEntry[] = [];
    for (const level of LEVELS) {
      out.push(...(await this.scanDir(level, this.rootDir(level), null)));
      for (const prefix of await prefixDirsUnder(this.prefixDir(level))) {
        out.push(...(await this.scanDir(level, this.prefixDir(level, prefix), prefix)));
      }
    }
    return out;
  }

  /** Key files and masks directly in `dir` (not below it); a missing dir is simply empty. */
  private async scanDir(level: ConfigLevel, dir: string, prefix: string | null): Promise<KeyFileEntry[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw new TrustError(`cannot read trusted keys in "${dir}": ${(err as Error).message}`, { cause: err });
    }
    const out: KeyFileEntry[] = [];
    for (const name of names.sort()) {
      if (!FINGERPRINT_NAME.test(name)) {
        if (!name.startsWith('.')) log().debug({ path: path.join(dir, name) }, 'ignoring file not named after a key fingerprint');
        continue;
      }
      const file = path.join(dir, name);
      // stat, not lstat: administrators may symlink keys into place.
      let st: fs.Stats;
      try {
        st = await fs.promises.stat(file);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw new TrustError(`cannot read trusted key "${file}": ${(err as Error).message}`, { cause: err });
        log().warn(`ignoring trusted key "${file}": it does not exist (a dangling symlink?)`);
        continue;
      }
      if (!st.isFile()) continue;
      out.push({ fingerprint: name, path: file, level, prefix, mask: st.size === 0, userIds: [] });
    }
    return out;
  }

  /**
   * Parse a stored key and insist it is the key its name claims: a file whose
   * content does not match its fingerprint name is a misconfiguration that
   * must fail loudly, never silently trust some other key.
   */
  private async loadKeyFile(file: string, fingerprint: string): Promise<PublicKey> {
    let data: Buffer;
    try {
      data = await fs.promises.readFile(file);
    } catch (err) {
      throw new TrustError(`cannot read trusted key "${file}": ${(err as Error).message}`, { cause: err });
    }
    const key = await readPublicKey(data, `trusted key "${file}"`);
    const actual = key.getFingerprint().toLowerCase();
    if (actual !== fingerprint) {
      throw new TrustError(`trusted key "${file}" holds key ${actual}, not ${fingerprint}; rename the file to its key's fingerprint or remove it`);
    }
    return key;
  }
}

/** ACIdentifier prefixes that have a directory under prefix.d, e.g. "example.com", "example.com/app". */
async function prefixDirsUnder(base: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    let dirents: fs.Dirent[];
    try {
      dirents = await fs.promises.readdir(path.join(base, rel), { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return;
      throw new TrustError(`cannot read trusted keys in "${path.join(base, rel)}": ${(err as Error).message}`, { cause: err });
    }
    for (const d of dirents.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!d.isDirectory()) continue;
      const sub = rel === '' ? d.name : `${rel}/${d.name}`;
      if (!isTrustPrefix(sub)) continue;
      out.push(sub);
      await walk(sub);
    }
  };
  await walk('');
  return out;
}
