import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { RktEnv, REPO, RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { reapPods, waitFor } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';
import { startMds } from './mds-common.js';

// Shared by the appc conformance tests, which run the same pods on every
// flavor: the stage1 images built into build/ from this tree (see
// README.md), a private rkt world per test, and the pod of two
// apps sharing an empty volume, with event handlers and mount checks.

export type Flavor = 'kvm' | 'nspawn' | 'fly';

const STAGE1_FILE: Record<Flavor, string> = { kvm: 'stage1-kvm.aci', nspawn: 'stage1-coreos.aci', fly: 'stage1-fly.aci' };

/** Flags selecting the flavor's stage1 image built from this tree. */
export function stage1Flags(flavor: Flavor, opts: { net?: string } = {}): string[] {
  const aci = path.join(REPO, 'build', STAGE1_FILE[flavor]);
  needFile(aci, `build it with: node dist/stage1-${flavor === 'nspawn' ? 'nspawn' : flavor}/build.js ${path.join('build', STAGE1_FILE[flavor])} (scripts/setup.sh does)`);
  // fly shares the host's network; the others get a pod network of their own, which these pods do not need
  return ['--insecure-options=image', `--stage1-path=${aci}`, `--net=${opts.net ?? (flavor === 'fly' ? 'host' : 'none')}`];
}

export function world(t: ExecutionContext, prefix: string): RktEnv {
  const env = new RktEnv(prefix);
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  return env;
}

/** A host directory every app user may write (kvm shows its owner, an unprivileged user, as the app's uid). */
export function hostOutDir(env: RktEnv): string {
  const out = env.file('out');
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777);
  fs.chownSync(out, 4242, 4242);
  return out;
}

/**
 * The mountinfo line an app printed for `mountPoint` after `tag`, split into
 * fields: the last one, the mount on top, which is what the app sees there
 * (kvm's guest can show virtio-fs's own submount below it).
 */
export function mountLine(stdout: string, tag: string, mountPoint: string): string[] | undefined {
  let found: string[] | undefined;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith(`${tag} `)) continue;
    const f = line.slice(tag.length + 1).split(' ');
    if (f[4] === mountPoint) found = f;
  }
  return found;
}

/** The mount options (field 6) of a mountinfo line. */
export function mountOptions(fields: string[] | undefined): string[] {
  return (fields?.[5] ?? '').split(',');
}

/**
 * The issue's pod: app "writer" and app "reader" share the empty volume
 * "shared" (writable for the writer, read-only for the reader by their
 * images' mount points), and both mount the host volume "out". The writer
 * has a pre-start handler that must finish before its exec (it sleeps,
 * then writes a file the exec reads) and a post-stop handler that writes
 * into the host volume after the writer has ended; both print who they
 * run as and what environment they see. Both ask the metadata service
 * (appc spec/ace.md): the writer its pod's UUID and its image ID, and signs
 * what it shares; the reader checks that signature and reads the writer's
 * image ID.
 */
export async function sharedVolumePod(env: RktEnv): Promise<{ writer: string; reader: string }> {
  const mountPoints = (ro: boolean): unknown[] => [
    { name: 'shared', path: '/shared', readOnly: ro },
    { name: 'out', path: '/out' },
  ];
  // the writer renames its file into place: the reader waits for the name, and must never see it half written
  const writer = await buildAci(env.root, {
    name: 'example.com/writer',
    app: {
      exec: [
        '/bin/sh',
        '-c',
        'cat /shared/pre; grep " /shared " /proc/self/mountinfo | sed "s/^/writer-mnt /"; ' +
          `${MDS}; echo "writer-uuid $(get pod/uuid)"; echo "writer-image $(get apps/$AC_APP_NAME/image/id)"; ` +
          'wget -q -O - --header "$H" --post-data content=from-writer "$M/pod/hmac/sign" > /shared/.sig; mv /shared/.sig /shared/sig; ' +
          'echo from-writer > /shared/.data; mv /shared/.data /shared/data; sleep 2',
      ],
      user: '1000',
      group: '1000',
      environment: [{ name: 'IMAGE_VAR', value: 'from-image' }],
      mountPoints: mountPoints(false),
      eventHandlers: [
        { name: 'pre-start', exec: ['/bin/sh', '-c', 'sleep 1; echo "writer-pre $(id -u):$(id -g) $IMAGE_VAR $POD_VAR $AC_APP_NAME $(pwd) ${AC_METADATA_URL:+has-metadata-url}" > /shared/pre'] },
        { name: 'post-stop', exec: ['/bin/sh', '-c', 'echo "writer-post $(id -u):$(id -g) $IMAGE_VAR $POD_VAR $(cat /shared/data)" > /out/post-stop'] },
      ],
    },
  });
  const reader = await buildAci(env.root, {
    name: 'example.com/reader',
    app: {
      exec: [
        '/bin/sh',
        '-c',
        'n=0; until [ -e /shared/data ] || [ $n -ge 600 ]; do sleep 0.1; n=$((n+1)); done; echo "reader-data $(cat /shared/data)"; ' +
          'grep " /shared " /proc/self/mountinfo | sed "s/^/reader-mnt /"; if touch /shared/x 2>/dev/null; then echo reader-write allowed; else echo reader-write refused; fi; ' +
          `${MDS}; sig=$(cat /shared/sig); sig=\${sig//+/%2B}; sig=\${sig//\\//%2F}; sig=\${sig//=/%3D}; ` +
          'if wget -q -O /dev/null --header "$H" --post-data "content=$(cat /shared/data)&uuid=$(get pod/uuid)&signature=$sig" "$M/pod/hmac/verify"; then echo reader-verify ok; else echo reader-verify refused; fi; ' +
          'echo "reader-writer-image $(get apps/writer/image/id)"',
      ],
      user: '0',
      group: '0',
      mountPoints: mountPoints(true),
    },
  });
  return { writer, reader };
}

/** Shell definitions for asking the metadata service from an app. */
const MDS = 'H="Metadata-Flavor: AppContainer"; M="$AC_METADATA_URL/acMetadata/v1"; get() { wget -q -O - --header "$H" "$M/$1" || echo refused; }';

/** The `rkt run` arguments of the shared-volume pod after the flavor's flags. */
export function sharedVolumeArgs(images: { writer: string; reader: string }, out: string): string[] {
  return ['--volume=shared,kind=empty,mode=0777', `--volume=out,kind=host,source=${out}`, '--set-env=POD_VAR=from-pod', images.writer, '---', images.reader];
}

export interface FlavorCase {
  flavor: Flavor;
  /** ms: kvm pods boot a VM (tcg on hosts without kvm). */
  timeout: number;
}

/** The shared-volume pod: handlers in order, as the app, with its environment; the volume a mount of its own. */
export async function checkSharedVolumePod(t: ExecutionContext, c: FlavorCase): Promise<void> {
  const env = world(t, `rkt-appc-${c.flavor}-`);
  const out = hostOutDir(env);
  const images = await sharedVolumePod(env);
  const mds = await startMds(t, env);
  const uuidFile = env.file('uuid');
  // kvm and nspawn need a pod network to reach the metadata service
  const net = c.flavor === 'fly' ? 'host' : 'default';
  const r = await env.run(['run', ...stage1Flags(c.flavor, { net }), '--mds-register', `--uuid-file-save=${uuidFile}`, ...sharedVolumeArgs(images, out)], { timeout: c.timeout, env: mds.env });
  const stdout = String(r.stdout);
  t.is(r.exitCode, 0, `${stdout}\n${String(r.stderr)}`);
  // pre-start ran to its end before the exec, as the app's user, with its environment and working directory
  t.regex(stdout, /^writer-pre 1000:1000 from-image from-pod writer \/ has-metadata-url$/m);
  // the metadata service: the pod's UUID and the writer's image ID, to both apps; the writer's signature checks out
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const manifest = JSON.parse(String((await env.run(['cat-manifest', uuid])).stdout)) as { apps: { name: string; image: { id: string } }[] };
  const writerId = manifest.apps.find((a) => a.name === 'writer')!.image.id;
  t.regex(stdout, new RegExp(`^writer-uuid ${uuid}$`, 'm'));
  t.regex(stdout, new RegExp(`^writer-image ${writerId}$`, 'm'));
  t.regex(stdout, new RegExp(`^reader-writer-image ${writerId}$`, 'm'));
  t.regex(stdout, /^reader-verify ok$/m);
  t.regex(stdout, /^reader-data from-writer$/m);
  // post-stop ran after the app, as the app, and before the pod ended
  t.is(fs.readFileSync(path.join(out, 'post-stop'), 'utf8'), 'writer-post 1000:1000 from-image from-pod from-writer\n');
  // the volume is a mount at the app's mount point, read-only where the mount point asks
  const w = mountLine(stdout, 'writer-mnt', '/shared');
  const rd = mountLine(stdout, 'reader-mnt', '/shared');
  t.truthy(w, `no mountinfo entry for /shared in the writer:\n${stdout}`);
  t.truthy(rd, `no mountinfo entry for /shared in the reader:\n${stdout}`);
  t.true(mountOptions(w).includes('rw'), w?.join(' '));
  t.true(mountOptions(rd).includes('ro'), rd?.join(' '));
  t.regex(stdout, /^reader-write refused$/m);
}

/** An image whose root app runs `script` with the host volume "out" at /out, and the given event handlers. */
function outImage(env: RktEnv, name: string, script: string, eventHandlers: unknown[], app: Record<string, unknown> = {}): Promise<string> {
  return buildAci(env.root, {
    name,
    app: { exec: ['/bin/sh', '-c', script], user: '0', group: '0', mountPoints: [{ name: 'out', path: '/out' }], eventHandlers, ...app },
  });
}

/** A failing pre-start fails its app with the handler's status, which rkt status shows with the reason; the app never runs. */
export async function checkFailingPreStart(t: ExecutionContext, c: FlavorCase): Promise<void> {
  const env = world(t, `rkt-appc-${c.flavor}-`);
  const out = hostOutDir(env);
  const image = await outImage(env, 'example.com/prestart-fails', 'echo ran > /out/app', [
    { name: 'pre-start', exec: ['/bin/sh', '-c', 'echo pre-start failing; exit 7'] },
    { name: 'post-stop', exec: ['/bin/sh', '-c', 'echo ran > /out/post-stop'] },
  ]);
  const uuidFile = env.file('uuid');
  const r = await env.run(['run', ...stage1Flags(c.flavor), `--uuid-file-save=${uuidFile}`, `--volume=out,kind=host,source=${out}`, image], { timeout: c.timeout });
  t.is(r.exitCode, 7, `${String(r.stdout)}\n${String(r.stderr)}`);
  t.regex(String(r.stdout), /pre-start failing/);
  t.regex(String(r.stderr), /app prestart-fails was not started: its pre-start event handler exited with status 7/);
  t.deepEqual(fs.readdirSync(out), [], 'neither the app nor its post-stop handler may run');
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const st = await env.run(['status', uuid]);
  t.regex(String(st.stdout), /^app-prestart-fails=7$/m);
  t.regex(String(st.stdout), /^exit-cause=app prestart-fails was not started: its pre-start event handler exited with status 7$/m);
}

interface Confinement {
  seccomp: string;
  capBnd: string;
  pid1CapBnd: string;
  /** mountinfo entries of /proc/sys, as option lists. */
  procSys: string[][];
  ttyS0: boolean;
}

const CONFINEMENT_PROBE = [
  'grep "^Seccomp:" /proc/self/status | sed "s/^/probe-/"',
  'grep "^CapBnd:" /proc/self/status | sed "s/^/probe-/"',
  'grep "^CapBnd:" /proc/1/status | sed "s/^/probe-pid1-/"',
  'grep " /proc/sys " /proc/self/mountinfo | sed "s/^/probe-mnt /"',
  'if [ -e /dev/ttyS0 ]; then echo probe-ttyS0; fi',
].join('; ');

async function probeConfinement(t: ExecutionContext, c: FlavorCase, env: RktEnv, image: string, insecure: string): Promise<Confinement> {
  const r = await env.run(['run', ...stage1Flags(c.flavor), `--insecure-options=image${insecure}`, image], { timeout: c.timeout });
  const out = String(r.stdout);
  t.is(r.exitCode, 0, `${out}\n${String(r.stderr)}`);
  const field = (name: string): string => new RegExp(`^probe-${name}:\\s*(\\S+)$`, 'm').exec(out)?.[1] ?? `(no ${name} in ${out})`;
  return {
    seccomp: field('Seccomp'),
    capBnd: field('CapBnd'),
    pid1CapBnd: field('pid1-CapBnd'),
    procSys: out
      .split('\n')
      .filter((l) => l.startsWith('probe-mnt '))
      .map((l) => mountOptions(l.slice('probe-mnt '.length).split(' '))),
    ttyS0: /^probe-ttyS0$/m.test(out),
  };
}

/**
 * --insecure-options=seccomp,capabilities,paths do all they say: no seccomp
 * filter at all, the full bounding set (PID 1's, the most the pod has), and
 * no masked or read-only kernel paths (kvm: the guest's whole /dev).
 */
export async function checkInsecureOptions(t: ExecutionContext, c: FlavorCase): Promise<void> {
  const env = world(t, `rkt-appc-${c.flavor}-`);
  const image = await buildAci(env.root, { name: 'example.com/probe', app: { exec: ['/bin/sh', '-c', CONFINEMENT_PROBE], user: '0', group: '0' } });
  const strict = await probeConfinement(t, c, env, image, '');
  const loose = await probeConfinement(t, c, env, image, ',seccomp,capabilities,paths');
  t.log(`${c.flavor} default: ${JSON.stringify(strict)}`);
  t.log(`${c.flavor} insecure: ${JSON.stringify(loose)}`);
  t.is(loose.seccomp, '0', 'seccomp off: no filter at all');
  t.is(loose.capBnd, loose.pid1CapBnd, 'capabilities off: the whole bounding set');
  t.false(loose.procSys.some((o) => o.includes('ro')), 'paths off: /proc/sys is not read-only');
  if (c.flavor === 'fly') {
    // fly isolates nothing: the same either way
    t.deepEqual(strict, loose);
    return;
  }
  t.is(strict.seccomp, '2', 'by default apps run under a seccomp filter');
  t.not(strict.capBnd, strict.pid1CapBnd, "by default apps get rkt's smaller bounding set");
  if (c.flavor === 'nspawn') t.true(strict.procSys.some((o) => o.includes('ro')), 'by default /proc/sys is read-only');
  if (c.flavor === 'kvm') {
    t.false(strict.ttyS0, 'by default apps get a private /dev');
    t.true(loose.ttyS0, "paths off: the guest's /dev");
  }
}

/** rkt stop: the app is stopped, then its post-stop handler runs, before the pod ends; fly refuses a forwarded port. */
export async function checkPostStopOnStop(t: ExecutionContext, c: FlavorCase): Promise<void> {
  const env = world(t, `rkt-appc-${c.flavor}-`);
  const out = hostOutDir(env);
  const image = await outImage(env, 'example.com/stopped', 'echo up > /out/up; exec sleep 600', [{ name: 'post-stop', exec: ['/bin/sh', '-c', 'echo cleaned > /out/post-stop'] }], {
    ports: [{ name: 'http', protocol: 'tcp', port: 80 }],
  });
  const uuidFile = env.file('uuid');
  const child = execa(RKT, [...env.globals(), 'run', ...stage1Flags(c.flavor), `--uuid-file-save=${uuidFile}`, `--volume=out,kind=host,source=${out}`, image], { reject: false, stdin: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitFor('the app', async () => fs.existsSync(path.join(out, 'up')), c.timeout);
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const stop = await env.run(['stop', uuid], { timeout: c.timeout });
  t.is(stop.exitCode, 0, String(stop.stderr));
  const r = await child;
  t.not(r.exitCode, undefined);
  t.is(fs.existsSync(path.join(out, 'post-stop')) ? fs.readFileSync(path.join(out, 'post-stop'), 'utf8') : '(none)', 'cleaned\n', `${String(r.stdout)}\n${String(r.stderr)}`);
  if (c.flavor === 'fly') {
    // the default network, which fly takes for the host's: stage0 lets the port through, fly must refuse it
    const p = await env.run(['run', ...stage1Flags(c.flavor).filter((f) => !f.startsWith('--net=')), '--port=http:18080', image], { timeout: c.timeout });
    t.is(p.exitCode, 254);
    t.regex(String(p.stderr), /fly stage1 shares the host network and forwards no ports \(http\)/);
  }
}

/** Two apps may declare the same port name; forwarding that name is refused as ambiguous, naming both apps (rkt's rule). */
export async function checkSharedPortName(t: ExecutionContext, c: FlavorCase): Promise<void> {
  const env = world(t, `rkt-appc-${c.flavor}-`);
  const image = (name: string, port: number): Promise<string> =>
    buildAci(env.root, { name: `example.com/${name}`, app: { exec: ['/bin/sh', '-c', `echo ${name} up`], user: '0', group: '0', ports: [{ name: 'http', protocol: 'tcp', port }] } });
  const web = await image('web', 80);
  const api = await image('api', 8080);
  const r = await env.run(['run', ...stage1Flags(c.flavor), web, '---', api], { timeout: c.timeout });
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /^web up$/m);
  t.regex(String(r.stdout), /^api up$/m);
  const fwd = await env.run(['run', ...stage1Flags(c.flavor).filter((f) => !f.startsWith('--net=')), '--port=http:18081', web, '---', api], { timeout: c.timeout });
  t.is(fwd.exitCode, 254);
  t.regex(String(fwd.stderr), /port "http" is declared by apps "web" and "api", so forwarding it is ambiguous/);
}

/** Register the conformance tests for one flavor (each flavor's test file is one call). */
export function conformanceTests(c: FlavorCase): void {
  test('two apps share an empty volume: pre-start before the exec, post-stop after it, both as the app; the volume a mount, read-only where asked; metadata lookups and an HMAC round trip', async (t) => {
    t.timeout(c.timeout + 60_000);
    await checkSharedVolumePod(t, c);
  });
  test('a failing pre-start fails its app with the handler status and a reason; neither the app nor its post-stop runs', async (t) => {
    t.timeout(c.timeout + 60_000);
    await checkFailingPreStart(t, c);
  });
  test('rkt stop: the post-stop handler of a stopped app runs before the pod ends', async (t) => {
    t.timeout(2 * c.timeout + 60_000);
    await checkPostStopOnStop(t, c);
  });
  test('two apps may declare the same port name; only forwarding it is refused, as ambiguous', async (t) => {
    t.timeout(c.timeout + 60_000);
    await checkSharedPortName(t, c);
  });
  test('--insecure-options=seccomp,capabilities,paths switch off all they name', async (t) => {
    t.timeout(2 * c.timeout + 60_000);
    await checkInsecureOptions(t, c);
  });
}
