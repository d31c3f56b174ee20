import { RktError } from '../src/errors.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';

// How fly starts a process inside an app: host tools only, because the
// image may have no shell and node cannot chroot, setgroups or exec.
//
//   setpriv --pdeathsig KILL --regid GID --groups G1,G2|--clear-groups [--no-new-privs] --
//     unshare --root=ROOTFS --wd=WORKDIR [--setuid UID] -- EXEC...
//
// setpriv (util-linux) sets the primary and supplementary groups while we
// are still uid 0, and arms the parent-death signal. unshare (util-linux,
// with no namespace flag it unshares nothing) then chroots, changes to the
// working directory *after* the chroot, so the kernel resolves it inside
// the rootfs (a symlink in the image cannot point it at the host), drops to
// the app's uid last, and execs the app with PATH looked up in the rootfs.
// Every step is an exec, so the pid node spawned is the app's own pid and
// its exit status and signal reach us unfiltered.
//
// Why not the simpler candidates: coreutils `chroot --userspec --groups`
// always chdirs to "/" (its --skip-chdir is refused unless the new root is
// "/"); `nsenter --root --wd` opens the working directory *before* the
// chroot, on the host side; `setpriv` cannot chroot and runs outside the
// rootfs, so it cannot come after chroot; `env -i` is unnecessary because
// node hands the exact environment to the first exec and each tool passes
// it on (the host tools therefore also see the app's variables, LD_* ones
// included: fly trusts its images).
//
// A non-root app loses the parent-death signal: the kernel clears it when
// the effective uid changes, and no host tool can re-arm it after the
// chroot. The pod guardian (below) covers that case.

export interface HostTools {
  setpriv: string;
  unshare: string;
  nsenter: string;
  sh: string;
}



/**
 * Absolute paths of the host tools fly relies on, found once, so the app's
 * own PATH (which describes its rootfs) never decides which setpriv runs.
 */
export function findHostTools(): HostTools {
  const found: Partial<HostTools> = {};
  const missing: string[] = [];
  for (const t of ['setpriv', 'unshare', 'nsenter', 'sh'] as const) {
    const p = which(t);
    if (p) found[t] = p;
    else missing.push(t);
  }
  if (missing.length > 0) throw new RktError(`the fly stage1 needs ${missing.join(', ')} (util-linux) on the host; install them`);
  return found as HostTools;
}

/** argv that runs `command` (default: the app's exec) as the app, chrooted in its rootfs. */
export function appCommand(tools: HostTools, spec: AppSpec, command: readonly string[] = spec.exec): string[] {
  const groups = spec.supplementaryGids.length > 0 ? ['--groups', spec.supplementaryGids.join(',')] : ['--clear-groups'];
  return [
    tools.setpriv,
    '--pdeathsig',
    'KILL',
    '--regid',
    String(spec.gid),
    ...groups,
    ...(spec.isolators.noNewPrivileges ? ['--no-new-privs'] : []),
    '--',
    tools.unshare,
    `--root=${spec.rootfs}`,
    `--wd=${spec.workingDirectory}`,
    // setuid(0) as root changes nothing; leaving it out keeps the argv readable
    ...(spec.uid !== 0 ? ['--setuid', String(spec.uid)] : []),
    '--',
    ...command,
  ];
}

/** The app's environment as node's spawn wants it: exactly these variables, nothing inherited. */
export function appEnv(spec: AppSpec, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of spec.env) env[e.name] = e.value;
  for (const [k, v] of Object.entries(extra)) if (!(k in env)) env[k] = v;
  return env;
}

// The pod guardian: a host shell, child of the run process, that reads
// "PID STARTTIME GROUP" lines on stdin. When stdin reaches end of file, the
// run process is gone (however it died: the kernel closes its end of the
// pipe even on SIGKILL), so every app still running, recognized by its
// start time so a recycled pid is never hit, is killed together with its
// process group when it leads one. It ignores the terminal's signals so
// that a ^C reaches the apps through the run process, not through it.
export const GUARDIAN_SCRIPT = `trap '' INT TERM HUP QUIT
apps=
while read -r pid start group; do apps="$apps $pid:$start:$group"; done
for a in $apps; do
  pid=\${a%%:*}; rest=\${a#*:}; start=\${rest%%:*}; group=\${rest#*:}
  [ -r /proc/$pid/stat ] || continue
  read -r stat < /proc/$pid/stat || continue
  stat=\${stat##*") "}
  set -- $stat
  [ "\${20}" = "$start" ] || continue
  if [ "$group" = 1 ]; then kill -9 "-$pid" 2>/dev/null; fi
  kill -9 "$pid" 2>/dev/null
done
exit 0
`;

export function guardianCommand(tools: HostTools): string[] {
  return [tools.sh, '-c', GUARDIAN_SCRIPT, 'rkt-fly-guardian'];
}

export { processStartTime } from '../src/stage1-common/guardian.js';
import { which } from '../src/stage1-common/host-tools.js';
