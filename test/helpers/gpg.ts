import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

/** A throw-away GnuPG home with helpers to make keys and detached signatures. */
export class Gpg {
  readonly home: string;
  constructor() {
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-gpg-'));
    fs.chmodSync(this.home, 0o700);
  }

  async run(args: string[]): Promise<string> {
    const r = await execa('gpg', ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { env: { GNUPGHOME: this.home } });
    return r.stdout;
  }

  /** Make a signing key and write its armored public half; returns the file. */
  async newKey(uid: string, outFile: string): Promise<string> {
    await this.run(['--quick-gen-key', uid, 'ed25519', 'sign', 'never']);
    fs.writeFileSync(outFile, await this.run(['--armor', '--export', uid]));
    return outFile;
  }

  async sign(uid: string, file: string, sigFile = `${file}.asc`): Promise<string> {
    await this.run(['--yes', '--local-user', uid, '--armor', '--output', sigFile, '--detach-sign', file]);
    return sigFile;
  }

  cleanup(): void {
    void execa('gpgconf', ['--kill', 'gpg-agent'], { env: { GNUPGHOME: this.home }, reject: false }).finally(() => fs.rmSync(this.home, { recursive: true, force: true }));
  }
}
