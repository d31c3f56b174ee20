import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../src/util/atomic.js';
import type { HostIds } from '../src/stage1-common/pod-ids.js';

// qemu's jail, in the spirit of Firecracker's jailer: everything that needs
// root is done by a small root shell before qemu starts, and qemu itself
// runs with nothing:
//
//   - its own mount namespace, whose root holds only what qemu opens: /usr
//     read-only (qemu, its libraries and firmware; the host's /bin, /lib...
//     links, or directories shown read-only), the kernel read-only, the
//     pod's qemu directory (sockets, FIFOs, console log), the sockets it
//     connects to (virtiofsd's), and on a tmpfs /dev the device nodes it
//     needs (null, urandom; kvm and net/tun when used), made in the jail and,
//     for kvm and tun, owned by the pod's uid: no device node of the host
//     changes. The host's tree is unmounted (pivot_root), so no path leads
//     back to it; no /proc, no /sys (the mount points /proc and /.old stay,
//     empty). The root itself is a directory of the pod (qemu-root/,
//     root's), laid out beforehand by the run entrypoint with an fstab of
//     every mount, so that the launcher runs few programs: each costs a
//     millisecond or two.
//   - its own pid namespace (it is PID 1 there and sees no other process),
//     IPC and UTS namespaces; the pod's network namespace (where its taps
//     are).
//   - the pod's cgroups, joined before qemu allocates anything.
//   - an unprivileged uid and gid of its own (pod-ids.ts), no supplementary
//     groups, every capability set empty (the bounding set too) and
//     no_new_privs, so that nothing it executes could regain any; qemu then
//     adds its own seccomp filter (-sandbox, qemu.ts).
//
// The launcher is util-linux (unshare, setpriv, mount, pivot_root) and two
// /bin/sh scripts; node cannot unshare itself. The first script builds the
// root and pivots into it; it then becomes, through `unshare --pid`, the
// parent that waits for qemu: it stays root, outside qemu's pid namespace,
// so that qemu cannot signal it. It reports qemu's pid (in the host's
// namespace) on fd 4 and ends as qemu ended: with its exit status, or killed
// by the signal that killed qemu (`unshare --fork` would turn a SIGKILL
// into "exit status 1"). qemu's parent-death signal is set after its uid
// changes (a change of uid clears it), so qemu dies with the waiter, and the
// waiter (through the launcher's own setpriv) with the run entrypoint.

/** The jail's root in the pod directory: its mount points, laid out by prepareJailRoot. */
export const JAIL_ROOT = 'qemu-root';

/** The fd on which the launcher writes qemu's pid. */
export const PID_FD = 4;

export interface JailDevice {
  path: string;
  major: number;
  minor: number;
  /** Owned by the pod's ids, mode 0600 (kvm, tun); else root's, mode 0666 (null, urandom). */
  private: boolean;
}

export interface JailSpec {
  /** The jail's root directory on the host (prepareJailRoot lays it out). */
  root: string;
  ids: HostIds;
  /** Working directory inside the jail: the pod directory's path (relative socket paths resolve there). */
  cwd: string;
  /** Host files and directories shown at the same path, read-only. */
  readOnly: string[];
  /** Host files and directories shown at the same path, writable (as far as their own modes allow). */
  writable: string[];
  /** Host symlinks recreated at the same path (the host's /bin -> usr/bin and the like). */
  links: { path: string; target: string }[];
  devices: JailDevice[];
  /** cgroup.procs files the launcher writes itself into, before qemu starts. */
  cgroupProcs: string[];
}

// Every mount is in one fstab, mounted by one `mount -a`: each program the
// launcher runs costs a millisecond or two of the pod's start.
const BUILD = `set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
root=$1 fstab=$2 uid=$3 gid=$4 cwd=$5 wait=$6
shift 6
mount -a -T "$fstab"
cd "$root"
own=
while [ "$1" != -- ]; do
  case $1 in
  dir)
    mkdir ".$2"
    shift 2 ;;
  dev)
    if [ "$5" = private ]; then
      mknod -m 0600 ".$2" c "$3" "$4"
      own="$own .$2"
    else
      mknod -m 0666 ".$2" c "$3" "$4"
    fi
    shift 5 ;;
  cgroup)
    echo 0 > "$2"
    shift 2 ;;
  *)
    echo "rkt qemu jail: unknown step $1" >&2
    exit 125 ;;
  esac
done
shift
# device paths are jail.ts's own (/dev/kvm, /dev/net/tun): no spaces to split on
[ -z "$own" ] || chown "$uid:$gid" $own
pivot_root . .old
umount -l /.old
umount /proc
cd "$cwd"
exec unshare --pid -- /bin/sh -c "$wait" rkt-qemu-wait "$uid" "$gid" "$@"
`;

const WAIT = `uid=$1 gid=$2
shift 2
setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL -- "$@" ${PID_FD}>&- &
q=$!
echo "$q" >&${PID_FD}
# fd 3 is qemu's (its console socket): the waiter lets go of it
exec 3>&- ${PID_FD}>&-
wait "$q"
s=$?
[ "$s" -le 128 ] || kill -$((s - 128)) $$
exit "$s"
`;

/** Directories on the jail's /dev (a tmpfs) that its device nodes need, parents first. */
function devDirs(spec: JailSpec): string[] {
  const dirs = new Set<string>();
  for (const d of spec.devices) {
    for (let p = path.dirname(d.path); p !== '/dev' && p !== '/'; p = path.dirname(p)) dirs.add(p);
  }
  return [...dirs].sort((a, b) => a.length - b.length);
}

/** The jail's steps after its mounts, as arguments of the build script. */
export function jailSteps(spec: JailSpec): string[] {
  return [
    ...spec.cgroupProcs.flatMap((p) => ['cgroup', p]),
    ...devDirs(spec).flatMap((d) => ['dir', d]),
    ...spec.devices.flatMap((d) => ['dev', d.path, String(d.major), String(d.minor), d.private ? 'private' : 'shared']),
  ];
}

/** A path as a field of fstab(5): space, tab, newline and backslash in octal. */
export function fstabField(p: string): string {
  return p.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * The jail's mounts, in order: its root bound on itself (pivot_root wants a
 * mount point), a tmpfs /dev for the device nodes, what it shows of the
 * host, and a /proc for umount to find the old root by (unmounted again).
 */
export function jailFstab(spec: JailSpec): string {
  const f = fstabField;
  const inRoot = (p: string): string => f(path.join(spec.root, p));
  return [
    `${f(spec.root)} ${f(spec.root)} none bind 0 0`,
    `rkt-qemu-dev ${inRoot('/dev')} tmpfs mode=0755,size=64k,nr_inodes=64 0 0`,
    ...spec.readOnly.map((p) => `${f(p)} ${inRoot(p)} none bind,ro,nosuid,nodev 0 0`),
    ...spec.writable.map((p) => `${f(p)} ${inRoot(p)} none bind,nosuid,nodev 0 0`),
    `proc ${inRoot('/proc')} proc nosuid,nodev,noexec 0 0`,
    '',
  ].join('\n');
}

/** Where prepareJailRoot writes the jail's fstab: next to its root. */
export function jailFstabPath(spec: JailSpec): string {
  return `${spec.root}.fstab`;
}

/**
 * Lay out the jail's root on the host: the mount points of what it shows
 * (a directory or an empty file, as the host's is), the host's links, /dev,
 * and the mount points of /proc and the old root the launcher needs on its
 * way in. Only ever adds: the mounts on it are made in qemu's own mount
 * namespace and are never seen here, so it holds nothing but these.
 */
export function prepareJailRoot(spec: JailSpec): void {
  for (const d of ['dev', 'proc', '.old']) fs.mkdirSync(path.join(spec.root, d), { recursive: true, mode: 0o755 });
  for (const l of spec.links) {
    const link = path.join(spec.root, l.path);
    fs.mkdirSync(path.dirname(link), { recursive: true, mode: 0o755 });
    if (!fs.lstatSync(link, { throwIfNoEntry: false })) fs.symlinkSync(l.target, link);
  }
  for (const p of [...spec.readOnly, ...spec.writable]) {
    const target = path.join(spec.root, p);
    fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
    if (fs.statSync(p).isDirectory()) fs.mkdirSync(target, { recursive: true, mode: 0o755 });
    else if (!fs.existsSync(target)) fs.writeFileSync(target, '', { mode: 0o644 });
  }
  writeFileAtomic(jailFstabPath(spec), jailFstab(spec));
}

/** The launcher's command line (after the netns and parent-death wrappers), ending with `argv`: qemu and its arguments. */
export function jailArgv(spec: JailSpec, argv: readonly string[]): string[] {
  return [
    'unshare',
    '--mount',
    '--ipc',
    '--uts',
    '--propagation',
    'private',
    '--',
    '/bin/sh',
    '-c',
    BUILD,
    'rkt-qemu-jail',
    spec.root,
    jailFstabPath(spec),
    String(spec.ids.uid),
    String(spec.ids.gid),
    spec.cwd,
    WAIT,
    ...jailSteps(spec),
    '--',
    ...argv,
  ];
}

/** A character device of the host, to be recreated in the jail; undefined if the host has none. */
export function hostDevice(p: string, isPrivate: boolean): JailDevice | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return undefined;
  }
  if (!st.isCharacterDevice()) return undefined;
  // glibc's major()/minor() of Linux's dev_t, for numbers below 2^32 (majors below 4096)
  const major = (st.rdev >>> 8) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >>> 12) & 0xfff00);
  return { path: p, major, minor, private: isPrivate };
}

/**
 * What the jail needs of the host's root to run programs: /usr, and the
 * top-level directories that hold or point into libraries and binaries
 * (links on a merged-/usr host, directories on others).
 */
export function systemTree(root = '/'): Pick<JailSpec, 'readOnly' | 'links'> {
  const readOnly = ['/usr'];
  const links: JailSpec['links'] = [];
  for (const d of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    const p = path.join(root, d);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) links.push({ path: `/${d}`, target: fs.readlinkSync(p) });
    else if (st.isDirectory()) readOnly.push(`/${d}`);
  }
  return { readOnly, links };
}

/** Whether `p` is `dir` or inside it. */
export function isUnder(p: string, dir: string): boolean {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
