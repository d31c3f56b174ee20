import fs from 'node:fs';
import path from 'node:path';
import { execa } from '../util/lazy-execa.js';
import { isErrno } from '../errors.js';
import { log } from '../log.js';
import { NetworkSetupError, oneLine } from './errors.js';

// A pod's network namespace is a named one, created with `ip netns add
// rkt-<uuid>`: the namespace is bind-mounted on /run/netns/rkt-<uuid>, so it
// outlives the process that made it, has a name `ip netns` and `rkt gc` can
// find from the UUID alone, and vanishes at reboot with /run. When the
// creator ran in a private mount namespace (stage1 under stage0), the bind
// mount dies with that namespace: the kernel then frees the namespace and
// its veth ends, and only the empty file is left for gc to remove.

export const NETNS_DIR = '/run/netns';
/** statfs magic of nsfs: what a live namespace bind mount reports. */
const NSFS_MAGIC = 0x6e736673;

export function netnsName(podUuid: string): string {
  return `rkt-${podUuid}`;
}

export function netnsPathOf(name: string): string {
  return path.join(NETNS_DIR, name);
}

/** Is path a namespace bind mount (as opposed to a missing or stale empty file)? */
export function isLiveNetns(p: string): boolean {
  try {
    return fs.statfsSync(p).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** A namespace bind mount, or a process's namespace (/proc/PID/ns/net, a link to "net:[INODE]"). */
export function isNetns(p: string): boolean {
  if (isLiveNetns(p)) return true;
  try {
    return /^net:\[\d+\]$/.test(fs.readlinkSync(p));
  } catch {
    return false;
  }
}

async function ip(args: string[], what: string): Promise<string> {
  const r = await execa('ip', args, { reject: false });
  if (r.failed) throw new NetworkSetupError(oneLine(`${what}: ip ${args.join(' ')} failed: ${String(r.stderr || r.message).trim()}`));
  return String(r.stdout);
}

/**
 * Create the named namespace with its loopback up; returns its path. A
 * stale file left by a crash is replaced; a live namespace of that name is
 * an error, as it belongs to a pod that is still set up.
 */
export async function createNetns(name: string): Promise<string> {
  const p = netnsPathOf(name);
  if (fs.existsSync(p)) {
    if (isLiveNetns(p)) throw new NetworkSetupError(`network namespace ${name} already exists; is the pod already running? (ip netns delete ${name} removes it)`);
    fs.rmSync(p, { force: true });
  }
  await ip(['netns', 'add', name], `cannot create network namespace ${name}`);
  try {
    await ip(['-n', name, 'link', 'set', 'lo', 'up'], `cannot bring up loopback in ${name}`);
  } catch (err) {
    await deleteNetns(p);
    throw err;
  }
  log().debug({ netns: p }, 'network namespace created');
  return p;
}

/** Remove a namespace by path: unmount and unlink; nothing to do when it is already gone. */
export async function deleteNetns(p: string): Promise<void> {
  if (path.dirname(p) === NETNS_DIR && isLiveNetns(p)) {
    const r = await execa('ip', ['netns', 'delete', path.basename(p)], { reject: false });
    if (!r.failed) return;
  }
  if (isLiveNetns(p)) {
    // not under /run/netns, or ip refused: detach the mount ourselves
    const r = await execa('umount', ['--lazy', p], { reject: false });
    if (r.failed && isLiveNetns(p)) throw new NetworkSetupError(oneLine(`cannot unmount network namespace ${p}: ${String(r.stderr).trim()}`));
  }
  try {
    fs.unlinkSync(p);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new NetworkSetupError(`cannot remove network namespace file ${p}: ${(err as Error).message}`);
  }
}

/** argv prefix that runs a command inside the namespace (qemu, a test server...). */
export function inNetns(p: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${p}`, '--', ...argv];
}

/** Run a command in the namespace; throws NetworkSetupError with its stderr when it fails. */
export async function execInNetns(p: string, argv: readonly string[], what: string): Promise<string> {
  const [cmd, ...args] = inNetns(p, argv);
  const r = await execa(cmd!, args, { reject: false });
  if (r.failed) throw new NetworkSetupError(oneLine(`${what}: ${argv.join(' ')} failed: ${String(r.stderr || r.message).trim()}`));
  return String(r.stdout);
}
