import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { buildAci } from '../helpers/aci.js';
import { listPods, reapPods, waitFor } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';
import { REPO, RKT, RktEnv } from '../helpers/rkt.js';

// Shared by the metadata service's integration tests (mds-*.test.ts), one
// file per flavor: each test starts its own `rkt metadata-service` on its
// own socket and port (RKT_METADATA_SERVICE_SOCKET, --listen-port) and kills
// it in teardown. Apps ask the service with busybox wget from a probe
// script and print what they learnt; the test compares it with what it
// knows of the pod.

export const STAGE1 = {
  fly: path.join(REPO, 'build', 'stage1-fly.aci'),
  nspawn: path.join(REPO, 'build', 'stage1-coreos.aci'),
  kvm: path.join(REPO, 'build', 'stage1-kvm.aci'),
} as const;
export type Flavor = keyof typeof STAGE1;

export interface Mds {
  socket: string;
  port: number;
  /** The environment `rkt` needs to find this service. */
  env: Record<string, string>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '0.0.0.0', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A metadata service of the test's own, gone at teardown. */
export async function startMds(t: ExecutionContext, env: RktEnv): Promise<Mds> {
  const socket = env.file('mds.sock');
  const port = await freePort();
  const vars = { ...process.env, RKT_METADATA_SERVICE_SOCKET: socket } as Record<string, string>;
  const child = execa(RKT, ['metadata-service', `--listen-port=${port}`], { env: vars, reject: false, stdin: 'ignore' });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(async () => {
    if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    const ended = await Promise.race([child.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    if (!ended && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  });
  await waitFor(`the metadata service (stderr: ${stderr})`, async () => /metadata service running/.test(stderr) || child.exitCode !== null, 30_000);
  if (child.exitCode !== null) throw new Error(`rkt metadata-service exited: ${stderr}`);
  return { socket, port, env: vars };
}

/**
 * What an app asks the service, one `key=value` line each. PEER_* name
 * another pod; HOLD keeps the app (and its pod) running after the probe.
 */
const PROBE = `
H='Metadata-Flavor: AppContainer'
M="$AC_METADATA_URL/acMetadata/v1"
get() { wget -q -O - --header "$H" "$M/$1" 2>/dev/null || echo refused; }
post() { wget -q -O - --header "$H" --post-data "$2" "$M/$1" 2>/dev/null; }
enc() { v=$1; v=\${v//+/%2B}; v=\${v//\\//%2F}; v=\${v//=/%3D}; echo "$v"; }
echo "host=$(echo "$AC_METADATA_URL" | cut -d/ -f3)"
u=$(get pod/uuid)
echo "uuid=$u"
echo "pod-annotation=$(get pod/annotations/test.example/pod-note)"
echo "pod-annotations=$(get pod/annotations/)"
echo "app-annotation=$(get apps/$AC_APP_NAME/annotations/image-note)"
echo "app-annotations=$(get apps/$AC_APP_NAME/annotations)"
echo "image-id=$(get apps/$AC_APP_NAME/image/id)"
echo "image-manifest=$(get apps/$AC_APP_NAME/image/manifest)"
echo "pod-manifest=$(get pod/manifest)"
echo "no-header=$(wget -q -O - "$M/pod/uuid" 2>/dev/null || echo refused)"
echo "bad-token=$(wget -q -O - --header "$H" "http://$(echo "$AC_METADATA_URL" | cut -d/ -f3)/00000000000000000000000000000000deadbeef/acMetadata/v1/pod/uuid" 2>/dev/null || echo refused)"
sig=$(post pod/hmac/sign content=hello)
echo "sig=$sig"
post pod/hmac/verify "content=hello&uuid=$u&signature=$(enc "$sig")" >/dev/null && echo verify=ok || echo verify=refused
post pod/hmac/verify "content=hellO&uuid=$u&signature=$(enc "$sig")" >/dev/null && echo tampered=ok || echo tampered=refused
if [ -n "$PEER_UUID" ]; then
  echo "peer-app=$(get apps/$PEER_APP/image/id)"
  echo "peer-manifest=$(get apps/$PEER_APP/image/manifest)"
  post pod/hmac/verify "content=hello&uuid=$PEER_UUID&signature=$(enc "$PEER_SIG")" >/dev/null && echo peer-verify=ok || echo peer-verify=refused
fi
echo probe-done
if [ -n "$HOLD" ]; then sleep "$HOLD"; fi
`;

/** The probe's last line (the script's own text, shown in manifests, holds it only escaped). */
const DONE = /^probe-done$/m;

export function parseProbe(out: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) r[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return r;
}

export interface ProbePod {
  /** The pod manifest file to run with --pod-manifest. */
  manifest: string;
  imageId: string;
  app: string;
}

/** An image (with an annotation of its own) in the store, and a pod manifest with pod and app annotations. */
export async function probePod(env: RktEnv, app: string, extraEnv: Record<string, string> = {}): Promise<ProbePod> {
  const image = await buildAci(env.root, {
    name: `example.com/mds-${app}`,
    app: { exec: ['/bin/sh', '-c', PROBE], user: '0', group: '0' },
    manifest: { annotations: [{ name: 'image-note', value: `image of ${app}` }, { name: 'shared', value: 'image' }] },
  });
  const f = await env.run(['--insecure-options=image', 'fetch', image]);
  if (f.exitCode !== 0) throw new Error(`rkt fetch failed: ${f.stderr}`);
  const imageId = String(f.stdout).trim();
  const environment = Object.entries({ PEER_UUID: '', PEER_SIG: '', PEER_APP: '', HOLD: '', ...extraEnv }).map(([name, value]) => ({ name, value }));
  const manifest = {
    acVersion: '0.8.11',
    acKind: 'PodManifest',
    apps: [
      {
        name: app,
        image: { name: `example.com/mds-${app}`, id: imageId },
        app: { exec: ['/bin/sh', '-c', PROBE], user: '0', group: '0', environment },
        annotations: [{ name: 'shared', value: 'pod' }],
      },
    ],
    annotations: [{ name: 'test.example/pod-note', value: `pod note of ${app}` }],
  };
  const file = env.file(`pod-${app}.json`);
  fs.writeFileSync(file, JSON.stringify(manifest));
  return { manifest: file, imageId, app };
}

/** Ask the service from the host, as a pod holding `token` would. */
export function ask(port: number, token: string, what: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: `/${token}/acMetadata/v1/${what}`, headers: { 'Metadata-Flavor': 'AppContainer' } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** The token stage0 gave a pod, as it recorded it for stage1. */
export function podToken(env: RktEnv, uuid: string): string {
  const opts = JSON.parse(fs.readFileSync(path.join(env.dir, 'pods', 'run', uuid, 'run-options.json'), 'utf8')) as { metadataService?: { token: string } };
  if (!opts.metadataService) throw new Error(`pod ${uuid} has no metadata token in its run options`);
  return opts.metadataService.token;
}

export interface FlavorWorld {
  env: RktEnv;
  flags: string[];
}

export function world(t: ExecutionContext, flavor: Flavor): FlavorWorld {
  needFile(STAGE1[flavor], `build it: npm run build && node dist/stage1-${flavor === 'nspawn' ? 'nspawn' : flavor}/build.js ${STAGE1[flavor]}`);
  const env = new RktEnv(`rkt-mds-${flavor}-`);
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  return { env, flags: ['--insecure-options=image', `--stage1-path=${STAGE1[flavor]}`] };
}

/** Start a pod in the background; resolves once its app has printed probe-done. */
export async function runHolding(t: ExecutionContext, w: FlavorWorld, mds: Mds, pod: ProbePod, timeoutMs: number): Promise<{ child: ResultPromise; uuid: string; out: Record<string, string> }> {
  const uuidFile = w.env.file(`uuid-${pod.app}`);
  const child = execa(RKT, [...w.env.globals(), 'run', ...w.flags, '--mds-register', `--uuid-file-save=${uuidFile}`, `--pod-manifest=${pod.manifest}`], { env: mds.env, reject: false, stdin: 'ignore' });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`pod ${pod.app} to finish its probe`, async () => DONE.test(out) || child.exitCode !== null, timeoutMs);
  if (!DONE.test(out)) throw new Error(`pod ${pod.app} ended before its probe: ${(await child).stderr}`);
  return { child, uuid: fs.readFileSync(uuidFile, 'utf8').trim(), out: parseProbe(out) };
}

/** The answers of a registered pod's app, as the spec says they must be. */
export function checkOwnAnswers(t: ExecutionContext, out: Record<string, string>, uuid: string, pod: ProbePod, host: RegExp): void {
  t.regex(out.host ?? '', host);
  t.is(out.uuid, uuid);
  t.is(out['pod-annotation'], `pod note of ${pod.app}`);
  t.deepEqual(JSON.parse(out['pod-annotations']!), [{ name: 'test.example/pod-note', value: `pod note of ${pod.app}` }]);
  t.is(out['app-annotation'], `image of ${pod.app}`);
  // the pod's annotation of the app overrides the image's
  t.deepEqual(JSON.parse(out['app-annotations']!), [
    { name: 'image-note', value: `image of ${pod.app}` },
    { name: 'shared', value: 'pod' },
  ]);
  t.is(out['image-id'], pod.imageId);
  t.is(JSON.parse(out['image-manifest']!).name, `example.com/mds-${pod.app}`);
  const pm = JSON.parse(out['pod-manifest']!);
  t.is(pm.apps[0].image.id, pod.imageId);
  t.is(out['no-header'], 'refused');
  t.is(out['bad-token'], 'refused');
  t.regex(out.sig ?? '', /^[A-Za-z0-9+/]{86}==$/);
  t.is(out.verify, 'ok');
  t.is(out.tampered, 'refused');
}

/**
 * The whole story on one flavor: pod A registers and stays up; pod B reads
 * only its own data, cannot read A's app, and verifies A's signature; each
 * token stops working once its pod has ended.
 */
export async function twoPods(t: ExecutionContext, flavor: Flavor, host: (w: FlavorWorld) => RegExp, timeoutMs: number): Promise<void> {
  const w = world(t, flavor);
  const mds = await startMds(t, w.env);
  const a = await probePod(w.env, 'alpha', { HOLD: '600' });
  const podA = await runHolding(t, w, mds, a, timeoutMs);
  checkOwnAnswers(t, podA.out, podA.uuid, a, host(w));
  const tokenA = podToken(w.env, podA.uuid);
  t.deepEqual(await ask(mds.port, tokenA, 'pod/uuid'), { status: 200, body: podA.uuid });

  const b = await probePod(w.env, 'beta', { PEER_UUID: podA.uuid, PEER_SIG: podA.out.sig!, PEER_APP: 'alpha' });
  const uuidB = w.env.file('uuid-beta');
  const rb = await w.env.run(['run', ...w.flags, '--mds-register', `--uuid-file-save=${uuidB}`, `--pod-manifest=${b.manifest}`], { env: mds.env, timeout: timeoutMs });
  t.is(rb.exitCode, 0, String(rb.stderr));
  const outB = parseProbe(String(rb.stdout));
  const uuid = fs.readFileSync(uuidB, 'utf8').trim();
  checkOwnAnswers(t, outB, uuid, b, host(w));
  t.not(outB.uuid, podA.uuid);
  t.not(outB.sig, podA.out.sig);
  // A's app is not B's to read; A's signature is B's to check
  t.is(outB['peer-app'], 'refused');
  t.is(outB['peer-manifest'], 'refused');
  t.is(outB['peer-verify'], 'ok');

  // B has ended: its registration went with it (the token is in its pod's run options)
  const optsB = JSON.parse(fs.readFileSync(path.join(w.env.dir, 'pods', 'run', uuid, 'run-options.json'), 'utf8')) as { metadataService: { token: string } };
  t.is((await ask(mds.port, optsB.metadataService.token, 'pod/uuid')).status, 401);
  t.false(fs.existsSync(path.join(w.env.dir, 'pods', 'run', uuid, 'mds-registered')));

  const stop = await w.env.run(['stop', podA.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await podA.child;
  t.is((await ask(mds.port, tokenA, 'pod/uuid')).status, 401);
}

/** --mds-register with no service: one line, status 254, no pod at all. */
export async function noService(t: ExecutionContext, flavor: Flavor): Promise<void> {
  const w = world(t, flavor);
  const image = await buildAci(w.env.root, { name: 'example.com/mds-none', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  const r = await w.env.run(['run', ...w.flags, '--mds-register', image], { env: { ...process.env, RKT_METADATA_SERVICE_SOCKET: w.env.file('nobody.sock') } as Record<string, string> });
  t.is(r.exitCode, 254);
  const lines = String(r.stderr).split('\n').filter((l) => l.trim() !== '' && !/signature verification has been disabled|hardware virtualization/.test(l));
  t.is(lines.length, 1, String(r.stderr));
  t.regex(lines[0]!, /^rkt: --mds-register: no metadata service answers on .*nobody\.sock \(no such socket\); start one with "rkt metadata-service"/);
  t.deepEqual(await listPods(w.env), []);

  // a service that answers but refuses the pod: one line, and the prepared pod is gone again
  const sock = w.env.file('refusing.sock');
  const refusing = http.createServer((req, res) => {
    req.resume();
    res.writeHead(503).end('the service is full\n');
  });
  await new Promise<void>((r) => refusing.listen(sock, r));
  t.teardown(() => void refusing.close());
  const r2 = await w.env.run(['run', ...w.flags, '--mds-register', image], { env: { ...process.env, RKT_METADATA_SERVICE_SOCKET: sock } as Record<string, string> });
  t.is(r2.exitCode, 254);
  const lines2 = String(r2.stderr).split('\n').filter((l) => l.trim() !== '' && !/signature verification has been disabled|hardware virtualization/.test(l));
  t.deepEqual(lines2.length, 1, String(r2.stderr));
  t.regex(lines2[0]!, /^rkt: the metadata service on .*refusing\.sock refused pod [0-9a-f-]{36} \(503: the service is full\)$/);
  t.deepEqual(await listPods(w.env), []);
}

/**
 * A pod whose `rkt run` was killed stays registered until `rkt gc` removes
 * it; `run-prepared --mds-register` registers too; --net=none is refused.
 */
export async function killedAndPrepared(t: ExecutionContext, flavor: Flavor, timeoutMs: number): Promise<void> {
  const w = world(t, flavor);
  const mds = await startMds(t, w.env);
  const a = await probePod(w.env, 'gamma', { HOLD: '600' });
  const pod = await runHolding(t, w, mds, a, timeoutMs);
  const token = podToken(w.env, pod.uuid);
  pod.child.kill('SIGKILL');
  await pod.child;
  await waitFor('the pod to read as exited', async () => (await listPods(w.env)).some((p) => p.name === pod.uuid && p.state === 'exited'), 30_000);
  t.is((await ask(mds.port, token, 'pod/uuid')).status, 200);
  const gc = await w.env.run(['gc', '--grace-period=0s'], { env: mds.env });
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.is((await ask(mds.port, token, 'pod/uuid')).status, 401);

  const d = await probePod(w.env, 'delta');
  const refused = await w.env.run(['prepare', ...w.flags, '--mds-register', `--pod-manifest=${d.manifest}`]);
  t.regex(String(refused.stderr), /--mds-register takes effect when the pod runs: give it to "rkt run-prepared"/);
  const p = await w.env.run(['prepare', ...w.flags, '--quiet', `--pod-manifest=${d.manifest}`]);
  t.is(p.exitCode, 0, String(p.stderr));
  const uuid = String(p.stdout).trim();
  const r = await w.env.run(['run-prepared', '--mds-register', uuid], { env: mds.env, timeout: timeoutMs });
  t.is(r.exitCode, 0, String(r.stderr));
  checkOwnAnswers(t, parseProbe(String(r.stdout)), uuid, d, /:\d+$/);

  const none = await w.env.run(['run', ...w.flags, '--mds-register', '--net=none', `--pod-manifest=${d.manifest}`], { env: mds.env });
  t.is(none.exitCode, 254);
  t.regex(String(none.stderr), /--mds-register does not work with --net=none/);
}
