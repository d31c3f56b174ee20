import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { RktEnv, RKT } from '../helpers/rkt.js';
import { BUSYBOX, buildAci } from '../helpers/aci.js';
import { listPods, podStatus, reapPods, waitFor } from '../helpers/pods.js';
import { needFile, needRoot } from '../helpers/prereqs.js';

// A stage1 written by a user against rkt's documented stage1 contract
// (rkt's Documentation/devel/stage1-implementors-guide.md, as
// docs/stage1-interface.md restates it), knowing nothing of this
// implementation: shell scripts and a static busybox. Its run entrypoint
// takes the flags of the interface version it declares and refuses any
// other with status 254, mounts the app's tree (rkt's on-disk layout: the
// tree store beside pods/), writes `pid`, chroots the app, and writes the
// app's exit status where rkt's contract says (stage1/rootfs/rkt/status).
// Every entrypoint appends its arguments to $STAGE1_SH_LOG, which reaches it
// because stage0 passes its environment on.

const LIB = `# shared by the entrypoints; every one runs with the pod directory as cwd
BB="$PWD/stage1/rootfs/bin/busybox"
VERSION=@VERSION@
die() { echo "stage1-sh: $*" >&2; exit 254; }
since() { [ "$VERSION" -ge "$1" ] || die "unknown flag $2 (this stage1 speaks interface version $VERSION)"; }
record() { [ -z "\${STAGE1_SH_LOG:-}" ] || echo "$*" >> "$STAGE1_SH_LOG"; }
# flags go to the entrypoint's own flag(); the one other word is the pod UUID
uuid=
parse() {
  for a in "$@"; do
    case "$a" in
      --*) flag "$a" ;;
      *) [ -z "$uuid" ] || die "more than one pod UUID"; uuid=$a ;;
    esac
  done
  [ -n "$uuid" ] || die "no pod UUID"
}
`;

const RUN = `#!/bin/sh
. "$PWD/stage1/rootfs/ex/lib.sh"
record run "$@"
flag() {
  case "$1" in
    --debug|--interactive|--local-config=*|--mds-token=*) ;;
    --net=host|--net=default) ;;
    --net=*) die "$1: this stage1 runs pods on the host network only" ;;
    --private-users|--private-users=*) die "$1: this stage1 has no user namespaces" ;;
    --mutable) die "$1: this stage1 has no mutable pods" ;;
    --hostname=*) since 2 "$1" ;;
    --disable-capabilities-restriction|--disable-paths|--disable-seccomp) since 3 "$1" ;;
    --dns-conf-mode=*) since 4 "$1" ;;
    *) die "unknown flag $1" ;;
  esac
}
parse "$@"
[ "$($BB readlink "/proc/$$/fd/\${RKT_LOCK_FD:?RKT_LOCK_FD is not set}")" = "$PWD" ] || die "fd $RKT_LOCK_FD is not the pod directory"
record run-lock ok
app=$($BB ls appsinfo)
[ "$(echo "$app" | $BB wc -l)" = 1 ] || die "one app per pod only"
tree="$PWD/../../../cas/tree/$($BB cat "appsinfo/$app/treeStoreID")/rootfs"
root="$PWD/stage1/rootfs/opt/stage2/$app/rootfs"
$BB mkdir -p "overlay/$app/upper" "overlay/$app/work" "$root"
$BB mount -t overlay overlay -o "lowerdir=$tree,upperdir=$PWD/overlay/$app/upper,workdir=$PWD/overlay/$app/work" "$root" || die "cannot mount the app's rootfs"
$BB mkdir -p "$root/proc" && $BB mount -t proc proc "$root/proc" || die "cannot mount /proc"
# the app's exec from the pod manifest; enough JSON for the simple commands of this test
words=$($BB sed -n 's/.*"exec":\\[\\([^]]*\\)\\].*/\\1/p' pod | $BB sed 's/","/" "/g')
eval "set -- $words"
echo $$ > pid.tmp && $BB mv pid.tmp pid
$BB chroot "$root" "$@" &
child=$!
echo $child > stage1-sh-child
$BB mkdir -p stage1/rootfs/rkt && $BB ln -s ready stage1/rootfs/rkt/supervisor-status
trap '$BB kill -TERM $child' TERM INT HUP
# a trapped signal interrupts wait: wait again until the app is gone
while :; do wait $child; status=$?; $BB kill -0 $child 2>/dev/null || break; done
$BB mkdir -p stage1/rootfs/rkt/status
echo $status > "stage1/rootfs/rkt/status/$app"
exit $status
`;

const ENTER = `#!/bin/sh
. "$PWD/stage1/rootfs/ex/lib.sh"
record enter "$@"
pid=; app=
while [ $# -gt 0 ]; do
  case "$1" in
    --pid=*) pid=\${1#--pid=} ;;
    --appname=*) app=\${1#--appname=} ;;
    --) shift; break ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
[ -n "$pid" ] && [ -n "$app" ] && [ $# -gt 0 ] || die "usage: enter --pid=PID --appname=APP -- CMD [ARGS...]"
exec $BB nsenter -t "$pid" -m $BB chroot "$PWD/stage1/rootfs/opt/stage2/$app/rootfs" "$@"
`;

const STOP = `#!/bin/sh
. "$PWD/stage1/rootfs/ex/lib.sh"
record stop "$@"
sig=TERM
flag() { [ "$1" = --force ] && sig=KILL || die "unknown flag $1"; }
parse "$@"
[ $sig = TERM ] || $BB kill -KILL "$($BB cat stage1-sh-child)"
$BB kill -$sig "$($BB cat pid)"
`;

const GC = `#!/bin/sh
. "$PWD/stage1/rootfs/ex/lib.sh"
record gc "$@"
flag() {
  case "$1" in
    --debug) ;;
    --local-config=*) since 5 "$1" ;;
    *) die "unknown flag $1" ;;
  esac
}
parse "$@"
# the mounts died with run's mount namespace: nothing else to release
`;

async function thirdPartyStage1(dir: string, version: string | undefined): Promise<string> {
  const ann = (name: string, value: string) => ({ name: `coreos.com/rkt/stage1/${name}`, value });
  return buildAci(dir, {
    name: 'example.com/stage1-sh',
    manifest: {
      annotations: [ann('run', '/ex/run'), ann('enter', '/ex/enter'), ann('stop', '/ex/stop'), ann('gc', '/ex/gc'), ...(version === undefined ? [] : [ann('interface-version', version)])],
    },
    files: { 'ex/lib.sh': LIB.replace('@VERSION@', version ?? '1'), 'ex/run': RUN, 'ex/enter': ENTER, 'ex/stop': STOP, 'ex/gc': GC },
    modes: { 'ex/run': 0o755, 'ex/enter': 0o755, 'ex/stop': 0o755, 'ex/gc': 0o755 },
  });
}

interface World {
  env: RktEnv;
  image: string;
  log: string;
  /** Lines the entrypoints recorded, split into words. */
  calls(): string[][];
  rkt(args: string[]): ReturnType<RktEnv['run']>;
}

async function setup(t: ExecutionContext): Promise<World> {
  needRoot('third-party stage1 tests');
  needFile(BUSYBOX, 'apt-get install busybox-static');
  const env = new RktEnv('rkt-s1sh-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/plain', app: { exec: ['/bin/true'], user: '0', group: '0' }, files: { 'etc/marker': 'from the app image\n' } });
  const log = env.file('stage1.log');
  const calls = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' ')) : []);
  return { env, image, log, calls, rkt: (args) => env.run(args, { env: { STAGE1_SH_LOG: log } }) };
}

function podDir(env: RktEnv, state: string, uuid: string): string {
  return path.join(env.dir, 'pods', state, uuid);
}

test('run, status, list, enter, stop and gc work with a stage1 a user wrote to rkt\'s contract', async (t) => {
  const w = await setup(t);
  const s1 = await thirdPartyStage1(w.env.root, '5');
  const uuidFile = w.env.file('uuid');
  const child = execa(RKT, [...w.env.globals(), 'run', '--insecure-options=image', `--stage1-path=${s1}`, `--uuid-file-save=${uuidFile}`, '--hostname=tp', w.image, '--exec=/bin/sh', '--', '-c', 'exec sleep 1000'], {
    reject: false,
    env: { STAGE1_SH_LOG: w.log },
  });
  await waitFor('uuid file', async () => fs.existsSync(uuidFile));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const ready = await w.rkt(['status', '--wait-ready=60s', uuid]);
  t.is(ready.exitCode, 0, String(ready.stderr));
  t.regex(String(ready.stdout), /^pid=\d+$/m);

  t.deepEqual(w.calls()[0], ['run', '--net=default', `--local-config=${w.env.localConfig}`, '--hostname=tp', uuid]);
  t.deepEqual(w.calls()[1], ['run-lock', 'ok']);
  const listed = (await listPods(w.env)).find((p) => p.name === uuid);
  t.is(listed?.state, 'running');
  t.deepEqual(listed?.app_names, ['plain']);

  const entered = await w.rkt(['enter', uuid, '/bin/cat', '/etc/marker']);
  t.is(entered.exitCode, 0, String(entered.stderr));
  t.is(String(entered.stdout), 'from the app image');
  const status = await w.rkt(['enter', '--app=plain', uuid, '/bin/sh', '-c', 'exit 5']);
  t.is(status.exitCode, 5, String(status.stderr));
  const pid = (await podStatus(w.env, uuid)).pid!;
  t.deepEqual(w.calls()[2], ['enter', `--pid=${pid}`, '--appname=plain', '--', '/bin/cat', '/etc/marker']);

  const stop = await w.rkt(['stop', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  t.deepEqual(w.calls().at(-1), ['stop', uuid]);
  const ran = await child;
  t.is(ran.exitCode, 143, String(ran.stderr));
  const st = await podStatus(w.env, uuid, ['--wait=20s']);
  t.is(st.state, 'exited');
  t.deepEqual(st.apps.map((a) => [a.name, a.exit_code]), [['plain', 143]]);

  const gc = await w.rkt(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.deepEqual(w.calls().at(-1), ['gc', `--local-config=${w.env.localConfig}`, uuid]);
  t.deepEqual(await listPods(w.env), []);
});

test('the app\'s exit status comes back through rkt/status; DNS and insecure options arrive as rkt\'s flags; rm runs gc', async (t) => {
  const w = await setup(t);
  const s1 = await thirdPartyStage1(w.env.root, '5');
  const uuidFile = w.env.file('uuid');
  const r = await w.rkt(['--insecure-options=image,seccomp,paths', 'run', `--stage1-path=${s1}`, `--uuid-file-save=${uuidFile}`, '--dns=192.0.2.53', '--hosts-entry=192.0.2.7=db', w.image, '--exec=/bin/sh', '--', '-c', 'exit 3']);
  t.is(r.exitCode, 3, String(r.stderr));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  t.deepEqual(w.calls()[0], ['run', '--net=default', `--local-config=${w.env.localConfig}`, '--dns-conf-mode=resolv=stage0,hosts=stage0', '--disable-paths', '--disable-seccomp', uuid]);
  const rootfs = path.join(podDir(w.env, 'run', uuid), 'stage1', 'rootfs');
  t.regex(fs.readFileSync(path.join(rootfs, 'etc', 'rkt-resolv.conf'), 'utf8'), /^nameserver 192\.0\.2\.53$/m);
  t.regex(fs.readFileSync(path.join(rootfs, 'etc', 'rkt-hosts'), 'utf8'), /^192\.0\.2\.7\s+db$/m);
  const st = await podStatus(w.env, uuid);
  t.is(st.state, 'exited');
  t.deepEqual(st.apps.map((a) => [a.name, a.exit_code]), [['plain', 3]]);
  const text = await w.rkt(['status', uuid]);
  t.regex(String(text.stdout), /^app-plain=3$/m);

  const rm = await w.rkt(['rm', uuid]);
  t.is(rm.exitCode, 0, String(rm.stderr));
  t.deepEqual(w.calls().at(-1), ['gc', `--local-config=${w.env.localConfig}`, uuid]);
  t.false(fs.existsSync(podDir(w.env, 'exited-garbage', uuid)));
});

test('an older stage1 gets only the flags of its interface version, and a warning for what it cannot take', async (t) => {
  const w = await setup(t);
  // no interface-version annotation: version 1
  const s1 = await thirdPartyStage1(w.env.root, undefined);
  const uuidFile = w.env.file('uuid');
  const r = await w.rkt(['--insecure-options=image,seccomp', 'run', `--stage1-path=${s1}`, `--uuid-file-save=${uuidFile}`, '--hostname=old', '--dns=host', w.image, '--exec=/bin/sh', '--', '-c', 'exit 0']);
  t.is(r.exitCode, 0, String(r.stderr));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  t.deepEqual(w.calls()[0], ['run', '--net=default', `--local-config=${w.env.localConfig}`, uuid]);
  for (const flag of ['--hostname', '--dns-conf-mode', '--disable-seccomp']) t.regex(String(r.stderr), new RegExp(`interface version 1, which has no ${flag}; running without it`));
  const rm = await w.rkt(['rm', uuid]);
  t.is(rm.exitCode, 0, String(rm.stderr));
  t.deepEqual(w.calls().at(-1), ['gc', uuid]);
});

test('a stage1 declaring an interface version this rkt does not speak is refused, and nothing runs', async (t) => {
  const w = await setup(t);
  for (const [version, why] of [
    ['6', /speaks stage1 interface version 6, but this rkt speaks only 1 to 5; use a stage1 for this rkt/],
    ['five', /declares stage1 interface version "five", which is not a version number/],
  ] as const) {
    const s1 = await thirdPartyStage1(w.env.root, version);
    const r = await w.rkt(['run', '--insecure-options=image', `--stage1-path=${s1}`, w.image]);
    t.is(r.exitCode, 254, version);
    t.regex(String(r.stderr), why);
    // one line says it, besides the warning about --insecure-options=image
    t.is(String(r.stderr).split('\n').filter((l) => l !== '' && !l.startsWith('rkt: warning:')).length, 1, String(r.stderr));
  }
  t.deepEqual(w.calls(), []);
  t.deepEqual((await listPods(w.env)).filter((p) => p.state === 'running'), []);
});

test('an entrypoint that refuses a flag fails the command with its status and its message', async (t) => {
  const w = await setup(t);
  const s1 = await thirdPartyStage1(w.env.root, '5');
  const r = await w.rkt(['run', '--insecure-options=image', `--stage1-path=${s1}`, '--private-users', w.image]);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /stage1-sh: --private-users=: this stage1 has no user namespaces/);
});
