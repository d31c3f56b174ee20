import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { needCommand } from './prereqs.js';

// Debian's docker-registry (the reference registry, distribution 2.8) run by
// a test: its own config file, storage dir and loopback port; TLS from a
// throw-away CA and htpasswd (bcrypt) auth when asked. The caller kills it
// in teardown with stop().

export interface TestCA {
  /** The CA certificate: give it to rkt as NODE_EXTRA_CA_CERTS and to skopeo in a cert dir. */
  caCert: string;
  cert: string;
  key: string;
  /** A directory holding ca.crt, for skopeo's --dest-cert-dir / --src-cert-dir. */
  certDir: string;
}

/** A CA and a server certificate for 127.0.0.1 (and localhost) signed by it, made with openssl. */
export async function makeTestCA(dir: string): Promise<TestCA> {
  needCommand('openssl', 'openssl');
  fs.mkdirSync(dir, { recursive: true });
  const p = (f: string): string => path.join(dir, f);
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=rkt-test-ca', '-keyout', p('ca.key'), '-out', p('ca.crt')]);
  await execa('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', p('server.key'), '-out', p('server.csr')]);
  fs.writeFileSync(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  await execa('openssl', ['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', p('ext.cnf'), '-out', p('server.crt')]);
  const certDir = p('certs.d');
  fs.mkdirSync(certDir);
  fs.copyFileSync(p('ca.crt'), path.join(certDir, 'ca.crt'));
  return { caCert: p('ca.crt'), cert: p('server.crt'), key: p('server.key'), certDir };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface RegistryOptions {
  tls?: TestCA;
  /** user -> password, written with htpasswd -B. */
  users?: Record<string, string>;
}

export class TestRegistry {
  private constructor(readonly host: string, readonly dir: string, private readonly proc: ChildProcess, readonly logFile: string) {}

  static async start(dir: string, opts: RegistryOptions = {}): Promise<TestRegistry> {
    const bin = needCommand('docker-registry', 'docker-registry');
    fs.mkdirSync(dir, { recursive: true });
    const port = await freePort();
    const lines = ['version: 0.1', 'log:', '  level: info', 'storage:', '  filesystem:', `    rootdirectory: ${path.join(dir, 'storage')}`, 'http:', `  addr: 127.0.0.1:${port}`];
    if (opts.tls) lines.push('  tls:', `    certificate: ${opts.tls.cert}`, `    key: ${opts.tls.key}`);
    if (opts.users) {
      needCommand('htpasswd', 'apache2-utils');
      const file = path.join(dir, 'htpasswd');
      fs.writeFileSync(file, '');
      for (const [u, pw] of Object.entries(opts.users)) await execa('htpasswd', ['-B', '-b', file, u, pw]);
      lines.push('auth:', '  htpasswd:', '    realm: rkt-test', `    path: ${file}`);
    }
    const config = path.join(dir, 'config.yml');
    fs.writeFileSync(config, `${lines.join('\n')}\n`);
    const logFile = path.join(dir, 'registry.log');
    const log = fs.openSync(logFile, 'w');
    const proc = spawn(bin, ['serve', config], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const reg = new TestRegistry(`127.0.0.1:${port}`, dir, proc, logFile);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`docker-registry exited at start: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
      const up = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (up) return reg;
      if (Date.now() > deadline) {
        reg.stop();
        throw new Error('docker-registry did not listen within 30s');
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** How many GETs of this blob the registry has served (from its access log). */
  blobGets(digest: string): number {
    const log = fs.readFileSync(this.logFile, 'utf8');
    return log.split('\n').filter((l) => l.includes(`GET /v2/`) && l.includes(`/blobs/${digest}`) && /http.response.status=(200|307)|"status":200| 200 /.test(l)).length;
  }

  stop(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** Push an OCI layout image into a registry with skopeo. */
export async function skopeoPush(layoutDir: string, ref: string, dest: string, opts: { tls?: TestCA; creds?: string } = {}): Promise<void> {
  needCommand('skopeo', 'skopeo');
  const args = ['copy', '--quiet', '--insecure-policy', `oci:${layoutDir}:${ref}`, `docker://${dest}`];
  if (opts.tls) args.splice(2, 0, `--dest-cert-dir=${opts.tls.certDir}`);
  else args.splice(2, 0, '--dest-tls-verify=false');
  if (opts.creds) args.splice(2, 0, `--dest-creds=${opts.creds}`);
  await execa('skopeo', args);
}
