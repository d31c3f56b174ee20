import fs from 'node:fs';
import path from 'node:path';
import type { PodIds } from './pod-ids.js';

// qemu's jail, in the spirit of Firecracker's jailer: everything that needs
// root is done by a small root shell before qemu starts, and qemu itself
// runs with nothing:
//
//   - its own mount namespace, whose root is a small tmpfs holding only
//     what qemu opens: /usr read-only (qemu, its libraries and firmware;
//     the host's /bin, /lib... links or directories), the kernel read-only,
//     the pod's qemu directory (sockets, FIFOs, console log), the sockets it
//     connects to (virtiofsd's), and the device nodes it needs (null,
//     urandom; kvm and net/tun when used), the last made in the jail and
//     owned by the pod's uid: no device node of the host changes. The host's
//     tree is unmounted (pivot_root), so no path leads back to it; no /proc,
//     no /sys.
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

/** The empty directory each jail mounts its root on, privately: other mount namespaces never see the mount. */
export const JAIL_MOUNT_POINT = '/run/rkt/qemu-root';

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
  ids: PodIds;
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

const BUILD = `set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
root=$1 uid=$2 gid=$3 cwd=$4 wait=$5
shift 5
mount -t tmpfs -o mode=0755,size=1m,nr_inodes=1024 rkt-qemu "$root"
own=
while [ "$1" != -- ]; do
  case $1 in
  ro|rw)
    t=$root$2
    mkdir -p "\${t%/*}"
    if [ -d "$2" ]; then mkdir -p "$t"; else : > "$t"; fi
    if [ "$1" = ro ]; then o=bind,ro,nosuid,nodev; else o=bind,nosuid,nodev; fi
    mount -o "$o" "$2" "$t"
    shift 2 ;;
  link)
    mkdir -p "$root\${2%/*}"
    ln -s "$3" "$root$2"
    shift 3 ;;
  dev)
    mkdir -p "$root\${2%/*}"
    if [ "$5" = private ]; then
      mknod -m 0600 "$root$2" c "$3" "$4"
      own="$own $root$2"
    else
      mknod -m 0666 "$root$2" c "$3" "$4"
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
[ -z "$own" ] || chown "$uid:$gid" $own
mkdir "$root/proc" "$root/.old"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
cd "$root"
pivot_root . .old
umount -l /.old
umount /proc
rmdir /.old /proc
cd "$cwd"
exec unshare --pid -- /bin/sh -c "$wait" rkt-qemu-wait "$uid" "$gid" "$@"
`;

const WAIT = `uid=$1 gid=$2
shift 2
setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs --pdeathsig=KILL -- "$@" 3>&- ${PID_FD}>&- &
q=$!
echo "$q" >&${PID_FD}
exec ${PID_FD}>&-
wait "$q"
s=$?
[ "$s" -le 128 ] || kill -$((s - 128)) $$
exit "$s"
`;

/** The jail's steps, as arguments of the build script. */
export function jailSteps(spec: JailSpec): string[] {
  return [
    ...spec.cgroupProcs.flatMap((p) => ['cgroup', p]),
    ...spec.links.flatMap((l) => ['link', l.path, l.target]),
    ...spec.readOnly.flatMap((p) => ['ro', p]),
    ...spec.writable.flatMap((p) => ['rw', p]),
    ...spec.devices.flatMap((d) => ['dev', d.path, String(d.major), String(d.minor), d.private ? 'private' : 'shared']),
  ];
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
    JAIL_MOUNT_POINT,
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
