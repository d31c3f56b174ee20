import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { bundleEntrypoint, copyNativeAddons, repoRoot, runAsBuildScript, stage1Manifest, writeAci } from '../src/stage1-common/image-build.js';
import { parseSyscallFilterListing } from './seccomp.js';
import type { Entrypoint } from '../src/stage1/contract.js';

// Builds stage1-coreos.aci, the nspawn flavor (rkt's historical name for
// it). Its rootfs is at once the home of the entrypoints (run on the host)
// and, per pod, the container's root that systemd-nspawn boots:
//   /                 systemd 252 from this machine's Debian packages, as the
//                     kvm guest has it (guest/build-image.sh), minus the kvm
//                     guest's agent and units, plus systemd-run and
//                     dbus-daemon (rkt enter) and stage1-nspawn/image/
//   /rkt/syscalls.json  the system calls and groups this systemd knows
//   /nspawn/<entry>   a /bin/sh launcher per entrypoint, running /nspawn/<entry>.mjs
// The launchers are not at the root as in fly: this rootfs is a container's
// root, where /run is a mount point. The tar is uncompressed with fixed
// owners, order and mtimes, so the same inputs give the same image ID.
//
// Usage: node dist/stage1-nspawn/build.js [OUTPUT.aci]   (as root: the container's files must be root's)

/** Each entrypoint and its file under /nspawn (and stage1-nspawn/main/). */
const ENTRYPOINTS: readonly (readonly [Entrypoint, string])[] = [
  ['run', 'run'],
  ['enter', 'enter'],
  ['stop', 'stop'],
  ['gc', 'gc'],
  ['attach', 'attach'],
  ['appAdd', 'app-add'],
  ['appStart', 'app-start'],
  ['appStop', 'app-stop'],
  ['appRm', 'app-rm'],
];
const IMAGE_NAME = 'coreos.com/rkt/stage1-coreos';

/** What the kvm guest image has that a container does not need. */
const KVM_ONLY = [
  'rkt/bin/rkt-agent',
  'usr/lib/systemd/system/rkt-agent.service',
  'usr/lib/systemd/system/rkt-stdout.socket',
  'usr/lib/systemd/system/rkt-stderr.socket',
  'usr/lib/systemd/system/rkt-report.socket',
];

/** Host binaries added to the guest image's systemd, with the libraries they link. */
const EXTRA_BINARIES = ['/usr/bin/systemd-run', '/usr/bin/dbus-daemon'];

/**
 * systemd and its libraries as the kvm guest has them, by guest/build-image.sh
 * itself. The recipe also compiles the kvm guest agent, which a container
 * does not run: it is run from a copy next to a stand-in agent/build.sh, so
 * that this image neither needs the agent nor breaks while it is being
 * changed.
 */
async function guestBase(root: string, work: string, rootfs: string): Promise<void> {
  const recipe = path.join(work, 'guest-recipe');
  fs.mkdirSync(path.join(recipe, 'agent'), { recursive: true });
  fs.copyFileSync(path.join(root, 'guest', 'build-image.sh'), path.join(recipe, 'build-image.sh'));
  fs.chmodSync(path.join(recipe, 'build-image.sh'), 0o755);
  await execa('cp', ['-R', '--preserve=mode', path.join(root, 'guest', 'image'), path.join(recipe, 'image')]);
  fs.writeFileSync(path.join(recipe, 'agent', 'build.sh'), '#!/bin/sh\n# stand-in: the nspawn stage1 has no guest agent\n: > "$1"\n', { mode: 0o755 });
  await execa(path.join(recipe, 'build-image.sh'), [rootfs], { stdio: ['ignore', 'inherit', 'inherit'] });
  fs.rmSync(recipe, { recursive: true, force: true });
}

function launcher(entry: string): string {
  // The entrypoints run on the host, with the host's node (>= 20, on PATH);
  // `exec` keeps the pid stage0 started.
  return `#!/bin/sh\n# rkt stage1-coreos (nspawn) ${entry} entrypoint. Requires node >= 20 on the host PATH.\nexec node "\${0%/*}/${entry}.mjs" "$@"\n`;
}

export function nspawnManifest(): object {
  return stage1Manifest(IMAGE_NAME, Object.fromEntries(ENTRYPOINTS.map(([e, file]) => [e, `/nspawn/${file}`])));
}

/** Copy a host file to the same canonical path in the rootfs, dereferencing symlinks (as guest/build-image.sh does). */
function copyCanonical(rootfs: string, file: string): void {
  const dir = fs.realpathSync(path.dirname(file));
  const dest = path.join(rootfs, dir, path.basename(file));
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.copyFileSync(fs.realpathSync(file), dest);
  fs.chmodSync(dest, fs.statSync(file).mode & 0o7777);
}

async function addBinaries(rootfs: string): Promise<void> {
  const libs = new Set<string>();
  for (const bin of EXTRA_BINARIES) {
    if (!fs.existsSync(bin)) throw new Error(`${bin} not found (apt-get install ${bin.endsWith('dbus-daemon') ? 'dbus-daemon' : 'systemd'})`);
    copyCanonical(rootfs, bin);
    const { stdout } = await execa('ldd', [bin]);
    for (const line of String(stdout).split('\n')) {
      const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
      if (m) libs.add(m[1]!);
    }
  }
  for (const lib of libs) copyCanonical(rootfs, lib);
  // the loader cache guest/build-image.sh made does not know the new libraries yet
  await execa('ldconfig', ['-r', rootfs, '-f', '/etc/ld.so.conf', '-C', '/etc/ld.so.cache']);
}

/** systemd's syscall table, for checking seccomp isolators before boot (see seccomp.ts). */
async function syscallTable(): Promise<string> {
  const { stdout } = await execa('systemd-analyze', ['syscall-filter', '--no-pager'], { env: { SYSTEMD_COLORS: '0' } });
  const table = parseSyscallFilterListing(String(stdout));
  if (table.known.length < 100 || !table.groups['system-service']) throw new Error('systemd-analyze syscall-filter gave no usable table');
  return JSON.stringify(table) + '\n';
}

export async function buildStage1Nspawn(output: string): Promise<string> {
  const root = repoRoot(import.meta.url);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-nspawn-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    fs.mkdirSync(rootfs, { mode: 0o755 });
    fs.chmodSync(work, 0o755);
    fs.chmodSync(rootfs, 0o755);
    await guestBase(root, work, rootfs);
    for (const f of KVM_ONLY) fs.rmSync(path.join(rootfs, f), { force: true });
    await addBinaries(rootfs);
    await execa('cp', ['-R', '--preserve=mode', '--remove-destination', `${path.join(root, 'stage1-nspawn', 'image')}/.`, `${rootfs}/`]);
    fs.writeFileSync(path.join(rootfs, 'rkt', 'syscalls.json'), await syscallTable(), { mode: 0o644 });
    const dir = path.join(rootfs, 'nspawn');
    fs.mkdirSync(dir, { mode: 0o755 });
    for (const [, e] of ENTRYPOINTS) {
      await bundleEntrypoint(path.join(root, 'stage1-nspawn', 'main', `${e}.ts`), path.join(dir, `${e}.mjs`));
      fs.writeFileSync(path.join(dir, e), launcher(e));
      fs.chmodSync(path.join(dir, e), 0o755);
    }
    copyNativeAddons(root, dir);
    return await writeAci(work, nspawnManifest(), output);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

runAsBuildScript(import.meta.url, 'stage1-coreos.aci', buildStage1Nspawn);
