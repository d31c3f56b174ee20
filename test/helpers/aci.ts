import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export const BUSYBOX = '/bin/busybox';

export interface AciSpec {
  name: string;
  labels?: { name: string; value: string }[];
  app?: Record<string, unknown>;
  /** Extra manifest fields (dependencies, pathWhitelist, annotations...). */
  manifest?: Record<string, unknown>;
  /** Install busybox-static with its applets under /bin (default true). */
  busybox?: boolean;
  /** Extra files: path inside rootfs -> content. */
  files?: Record<string, string>;
  /** Modes of some of those files (default 0644): path inside rootfs -> mode. */
  modes?: Record<string, number>;
  /** Compress with gzip, bzip2 or xz. */
  compression?: 'none' | 'gzip' | 'bzip2' | 'xz';
  /** Omit rootfs/ entirely. */
  noRootfs?: boolean;
}

const APPLETS = ['sh', 'true', 'false', 'echo', 'cat', 'ls', 'sleep', 'id', 'env', 'pwd', 'test', 'mkdir', 'touch', 'rm', 'grep', 'wc', 'head', 'stat', 'kill', 'ps', 'mount', 'hostname', 'ip', 'nc', 'wget', 'dd', 'readlink', 'chmod'];

/** Build a real ACI with GNU tar in a temporary directory and return its path. */
export async function buildAci(outDir: string, spec: AciSpec): Promise<string> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'aci-build-'));
  try {
    const manifest = {
      acKind: 'ImageManifest',
      acVersion: '0.8.11',
      name: spec.name,
      labels: spec.labels ?? [
        { name: 'version', value: '1.0.0' },
        { name: 'os', value: 'linux' },
        { name: 'arch', value: 'amd64' },
      ],
      ...(spec.app ? { app: spec.app } : {}),
      ...(spec.manifest ?? {}),
    };
    fs.writeFileSync(path.join(work, 'manifest'), JSON.stringify(manifest));
    const members = ['manifest'];
    if (!spec.noRootfs) {
      const rootfs = path.join(work, 'rootfs');
      fs.mkdirSync(rootfs);
      members.push('rootfs');
      if (spec.busybox ?? true) {
        fs.mkdirSync(path.join(rootfs, 'bin'));
        fs.copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
        fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
        for (const a of APPLETS) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
        fs.mkdirSync(path.join(rootfs, 'etc'));
        fs.writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
        fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n');
      }
      for (const [rel, content] of Object.entries(spec.files ?? {})) {
        const p = path.join(rootfs, rel);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.writeFileSync(p, content);
        const mode = spec.modes?.[rel];
        if (mode !== undefined) fs.chmodSync(p, mode);
      }
    }
    const safe = spec.name.replace(/[^a-zA-Z0-9.-]/g, '_');
    const compression = spec.compression ?? 'none';
    const ext = { none: '', gzip: '.gz', bzip2: '.bz2', xz: '.xz' }[compression];
    const out = path.join(outDir, `${safe}-${Math.random().toString(36).slice(2, 8)}.aci`);
    const tarFile = out + (ext ? '.tar' : '');
    await execa('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', work, '-cf', tarFile, ...members]);
    if (compression !== 'none') {
      const tool = { gzip: 'gzip', bzip2: 'bzip2', xz: 'xz' }[compression];
      await execa('sh', ['-c', `${tool} -c "$1" > "$2" && rm -f "$1"`, 'sh', tarFile, out]);
    }
    return out;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
