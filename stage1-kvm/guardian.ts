import { Guardian } from '../src/stage1-common/guardian.js';

// The pod guardian: a host shell, child of the run entrypoint but without a
// parent-death signal, that outlives it by a moment when it dies. qemu and
// virtiofsd die with the run entrypoint (their parent-death signal); what
// nobody could do then is say why the pod ended. The guardian reads lines on
// stdin: "PID STARTTIME" for each helper, "app NAME" for each app, "done"
// once the run entrypoint has finished normally. At end of input (the kernel closes the pipe whatever
// killed the run entrypoint) it kills any helper still running, recognized
// by its start time so that a recycled pid is never hit, and, unless told
// "done", records the exit cause for `rkt status` when some app has no exit
// status. It runs with the pod directory as working directory.

export const GUARDIAN_CAUSE = 'the stage1 run process was killed (rkt run killed?); the VM went down with it';

const SCRIPT = `trap '' INT TERM HUP QUIT
cause=$1 done=0 helpers= apps=
while read -r a b; do
  case $a in done) done=1 ;; app) apps="$apps $b" ;; *) helpers="$helpers $a:$b" ;; esac
done
for h in $helpers; do
  pid=\${h%%:*}; start=\${h#*:}
  [ -r /proc/$pid/stat ] || continue
  read -r stat < /proc/$pid/stat || continue
  stat=\${stat##*") "}
  set -- $stat
  [ "\${20}" = "$start" ] && kill -9 "$pid" 2>/dev/null
done
[ "$done" = 1 ] && exit 0
[ -n "$apps" ] || exit 0
all=1
for app in $apps; do
  [ -e "exit-status/$app" ] || all=0
done
if [ "$all" = 0 ] && [ ! -e exit-cause ]; then
  printf '%s\\n' "$cause" > .exit-cause.guardian && mv -f .exit-cause.guardian exit-cause
fi
exit 0
`;

/** The kvm flavor's guardian: kills qemu and virtiofsd, and records why the pod ended. */
export class KvmGuardian extends Guardian {
  constructor(podDir: string) {
    super(podDir, SCRIPT, 'rkt-kvm-guardian', [GUARDIAN_CAUSE], { stderr: 'inherit' });
  }
}
