import fs from 'node:fs';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { status as Status, Metadata, type ServiceError, type ClientReadableStream } from '@grpc/grpc-js';
import { buildAci } from '../helpers/aci.js';
import { apiClient, call, collect, FLY, needFlyStage1, startApiService, uuidOf, type ApiService } from '../helpers/api-client.js';
import { reapPods, waitFor } from '../helpers/pods.js';
import { needRoot } from '../helpers/prereqs.js';
import { RktEnv } from '../helpers/rkt.js';
import type { EventMsg, ImageMsg, PodMsg } from '../../src/api/messages.js';

// rkt api-service as a client sees it: the real service on a loopback port
// of its own rkt world, pods run with the fly stage1, every method called
// with a real gRPC client.

type Pod = PodMsg;
type Image = ImageMsg;
type Event = EventMsg;

async function world(t: ExecutionContext): Promise<{ env: RktEnv; api: ApiService }> {
  needRoot('rkt api-service tests run pods');
  needFlyStage1();
  const env = new RktEnv('rkt-api-');
  const api = await startApiService(env);
  t.teardown(async () => {
    await api.stop();
    await reapPods(env);
    env.cleanup();
  });
  return { env, api };
}

async function image(env: RktEnv, name: string, version: string, exec = ['/bin/sh', '-c', 'exit 0']): Promise<string> {
  return buildAci(env.root, {
    name,
    labels: [
      { name: 'version', value: version },
      { name: 'os', value: 'linux' },
      { name: 'arch', value: 'amd64' },
    ],
    app: { exec, user: '0', group: '0' },
    manifest: { annotations: [{ name: 'example.com/team', value: name.endsWith('a') ? 'red' : 'blue' }] },
  });
}

async function fetchImage(env: RktEnv, file: string): Promise<string> {
  const r = await env.run(['fetch', '--insecure-options=image', file]);
  if (r.exitCode !== 0) throw new Error(`fetch failed: ${r.stderr}`);
  return String(r.stdout).trim().split('\n').at(-1)!;
}

async function rejects(t: ExecutionContext, p: Promise<unknown>, code: Status, message?: RegExp): Promise<void> {
  const err = (await t.throwsAsync(p)) as ServiceError;
  t.is(err.code, code, `expected ${Status[code]}, got ${Status[err.code]}: ${err.details}`);
  if (message) t.regex(err.details, message);
}

/** Every path under dir with its type, mode, size and mtime; SQLite's own files are left out. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of fs.readdirSync(d)) {
      const p = path.join(d, name);
      if (p.startsWith(path.join(dir, 'cas', 'db'))) continue;
      const st = fs.lstatSync(p);
      out[path.relative(dir, p)] = `${st.mode}:${st.size}:${st.mtimeMs}`;
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

test.serial('GetInfo reports the versions and the global flags the service runs with', async (t) => {
  const { env, api } = await world(t);
  const { info } = await call<{ info: { rkt_version: string; appc_version: string; api_version: string; global_flags: Record<string, unknown> } }>(api.client, 'GetInfo', {});
  t.regex(info.rkt_version, /^\d+\.\d+\.\d+/);
  t.is(info.appc_version, '0.8.11');
  t.is(info.api_version, '1.0.0-alpha');
  t.is(info.global_flags.dir, env.dir);
  t.is(info.global_flags.local_config_dir, env.localConfig);
  t.is(info.global_flags.system_config_dir, env.systemConfig);
  t.is(info.global_flags.user_config_dir, env.userConfig);
  t.is(info.global_flags.insecure_flags, 'none');
  t.false(info.global_flags.trust_keys_from_https);
});

test.serial('ListPods and InspectPod show pods, their states, apps and exit codes, and apply the filters', async (t) => {
  const { env, api } = await world(t);
  const a = await image(env, 'example.com/api-a', '1.0.0', ['/bin/sh', '-c', 'exit 3']);
  const b = await image(env, 'example.com/api-b', '2.0.0');
  const run = await env.run(['run', ...FLY, `--uuid-file-save=${env.file('uuid-a')}`, a]);
  t.is(run.exitCode, 3, String(run.stderr));
  const exited = uuidOf(env.file('uuid-a'));
  const prep = await env.run(['prepare', ...FLY, b]);
  t.is(prep.exitCode, 0, String(prep.stderr));
  const prepared = String(prep.stdout).trim();

  const before = snapshot(env.dir);
  const all = (await call<{ pods: Pod[] }>(api.client, 'ListPods', {})).pods;
  t.deepEqual(all.map((p) => p.id).sort(), [exited, prepared].sort());
  const byId = new Map(all.map((p) => [p.id, p]));
  t.is(byId.get(exited)!.state, 'POD_STATE_EXITED');
  t.is(byId.get(prepared)!.state, 'POD_STATE_PREPARED');
  t.is(byId.get(prepared)!.pid, -1);
  t.is(byId.get(exited)!.manifest.length, 0, 'no manifest without detail');
  const imageA = byId.get(exited)!.apps[0]!.image.id;
  t.regex(imageA, /^sha512-[0-9a-f]{128}$/);

  const list = async (req: object) => (await call<{ pods: Pod[] }>(api.client, 'ListPods', req)).pods.map((p) => p.id).sort();
  t.deepEqual(await list({ filters: [{ states: ['POD_STATE_EXITED'] }] }), [exited]);
  t.deepEqual(await list({ filters: [{ app_names: ['api-b'] }] }), [prepared]);
  t.deepEqual(await list({ filters: [{ image_ids: [imageA] }] }), [exited]);
  t.deepEqual(await list({ filters: [{ ids: [exited] }, { ids: [prepared] }] }), [exited, prepared].sort(), 'filters combine with OR');
  t.deepEqual(await list({ filters: [{ ids: [exited], states: ['POD_STATE_PREPARED'] }] }), [], 'conditions of one filter combine with AND');
  t.deepEqual(await list({ filters: [{ network_names: ['nosuchnet'] }] }), []);
  t.deepEqual(await list({ filters: [{ annotations: [{ Key: 'no', value: 'such' }] }] }), []);

  const detailed = (await call<{ pods: Pod[] }>(api.client, 'ListPods', { detail: true, filters: [{ ids: [exited] }] })).pods[0]!;
  const pm = JSON.parse(detailed.manifest.toString('utf8')) as { acKind: string; apps: { name: string }[] };
  t.is(pm.acKind, 'PodManifest');
  t.deepEqual(pm.apps.map((x) => x.name), ['api-a']);

  const { pod } = await call<{ pod: Pod }>(api.client, 'InspectPod', { id: exited });
  t.is(pod.id, exited);
  t.is(pod.state, 'POD_STATE_EXITED');
  t.true(pod.pid > 0);
  t.true(BigInt(pod.created_at) > 0n && BigInt(pod.started_at) >= BigInt(pod.created_at) - 1_000_000_000n);
  t.is(pod.apps.length, 1);
  t.like(pod.apps[0], { name: 'api-a', state: 'APP_STATE_EXITED', exit_code: 3 });
  t.like(pod.apps[0]!.image, { id: imageA, name: 'example.com/api-a', version: '1.0.0' });
  t.true(pod.manifest.length > 0);
  const short = await call<{ pod: Pod }>(api.client, 'InspectPod', { id: prepared.slice(0, 8) });
  t.is(short.pod.id, prepared);
  t.is(short.pod.apps[0]!.state, 'APP_STATE_UNDEFINED');

  await rejects(t, call(api.client, 'InspectPod', {}), Status.INVALID_ARGUMENT);
  await rejects(t, call(api.client, 'InspectPod', { id: 'not a uuid!' }), Status.INVALID_ARGUMENT);
  await rejects(t, call(api.client, 'InspectPod', { id: '00000000-0000-0000-0000-000000000000' }), Status.NOT_FOUND, /no pod/);
  t.deepEqual(snapshot(env.dir), before, 'every call only read: the data dir is as it was (the index database aside)');
});

test.serial('a running pod shows its apps running, its stage1 pid and cgroup, which the cgroup filters match', async (t) => {
  const { env, api } = await world(t);
  const img = await image(env, 'example.com/api-run', '1.0.0', ['/bin/sh', '-c', 'sleep 120']);
  const child = env.run(['run', ...FLY, `--uuid-file-save=${env.file('uuid')}`, img], { timeout: 300_000 });
  await waitFor('the pod UUID', async () => fs.existsSync(env.file('uuid')) && fs.readFileSync(env.file('uuid'), 'utf8').trim() !== '', 60_000);
  const uuid = uuidOf(env.file('uuid'));
  const ready = await env.run(['status', '--wait-ready=60s', uuid]);
  t.is(ready.exitCode, 0, String(ready.stderr));
  const { pod } = await call<{ pod: Pod }>(api.client, 'InspectPod', { id: uuid });
  t.is(pod.state, 'POD_STATE_RUNNING');
  t.is(pod.apps[0]!.state, 'APP_STATE_RUNNING');
  t.true(pod.pid > 0);
  t.regex(pod.cgroup, /^\//);
  t.is(fs.readFileSync(`/proc/${pod.pid}/cgroup`, 'utf8').match(/^0::(.*)$/m)?.[1], pod.cgroup);
  const ids = async (filter: object) => (await call<{ pods: Pod[] }>(api.client, 'ListPods', { filters: [filter] })).pods.map((p) => p.id);
  t.deepEqual(await ids({ cgroups: [pod.cgroup] }), [uuid]);
  t.deepEqual(await ids({ pod_sub_cgroups: [`${pod.cgroup}/some.scope`] }), [uuid]);
  t.deepEqual(await ids({ cgroups: [`${pod.cgroup}/not-the-pod`] }), [], 'cgroups match whole');
  t.deepEqual(await ids({ states: ['POD_STATE_RUNNING'] }), [uuid]);
  const stop = await env.run(['stop', '--force', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await child;
  t.is((await call<{ pod: Pod }>(api.client, 'InspectPod', { id: uuid })).pod.state, 'POD_STATE_EXITED');
});

test.serial('ListImages and InspectImage show the store and apply the filters', async (t) => {
  const { env, api } = await world(t);
  const before = Math.floor(Date.now() / 1000) - 1;
  const a = await fetchImage(env, await image(env, 'example.com/api-a', '1.0.0'));
  const b = await fetchImage(env, await image(env, 'example.com/api-b', '2.0.0'));
  const all = (await call<{ images: Image[] }>(api.client, 'ListImages', {})).images;
  t.deepEqual(all.map((i) => i.id).sort(), [a, b].sort());
  const ia = all.find((i) => i.id === a)!;
  t.like(ia, { name: 'example.com/api-a', version: '1.0.0' });
  t.deepEqual(ia.base_format, { type: 'IMAGE_TYPE_APPC', version: '0.8.11' });
  t.true(Number(ia.size) > 0);
  t.true(Number(ia.import_timestamp) >= before);
  t.is(ia.manifest.length, 0, 'no manifest without detail');
  t.deepEqual(ia.annotations, [{ Key: 'example.com/team', value: 'red' }]);
  t.true(ia.labels.some((l) => l.Key === 'version' && l.value === '1.0.0'));

  const list = async (filter: object) => (await call<{ images: Image[] }>(api.client, 'ListImages', { filters: [filter] })).images.map((i) => i.id).sort();
  t.deepEqual(await list({ ids: [b] }), [b]);
  t.deepEqual(await list({ prefixes: ['example.com/api-a'] }), [a]);
  t.deepEqual(await list({ base_names: ['api-b'] }), [b]);
  t.deepEqual(await list({ base_names: ['api'] }), [], 'a base name matches whole');
  t.deepEqual(await list({ keywords: ['api-'] }), [a, b].sort());
  t.deepEqual(await list({ full_names: ['example.com/api-b'] }), [b]);
  t.deepEqual(await list({ labels: [{ Key: 'version', value: '2.0.0' }] }), [b]);
  t.deepEqual(await list({ annotations: [{ Key: 'example.com/team', value: 'red' }] }), [a]);
  t.deepEqual(await list({ imported_after: String(before) }), [a, b].sort());
  t.deepEqual(await list({ imported_after: String(before + 3600) }), []);
  t.deepEqual(await list({ imported_before: String(before) }), []);
  t.deepEqual(await list({ prefixes: ['example.com/api-a'], labels: [{ Key: 'version', value: '2.0.0' }] }), [], 'AND within a filter');

  const detailed = (await call<{ images: Image[] }>(api.client, 'ListImages', { detail: true, filters: [{ ids: [a] }] })).images[0]!;
  t.is((JSON.parse(detailed.manifest.toString('utf8')) as { name: string }).name, 'example.com/api-a');
  const { image: ib } = await call<{ image: Image }>(api.client, 'InspectImage', { id: b });
  t.like(ib, { id: b, name: 'example.com/api-b', version: '2.0.0' });
  t.is((JSON.parse(ib.manifest.toString('utf8')) as { name: string }).name, 'example.com/api-b');
  t.is((await call<{ image: Image }>(api.client, 'InspectImage', { id: b.slice(0, 20) })).image.id, b);

  await rejects(t, call(api.client, 'InspectImage', {}), Status.INVALID_ARGUMENT);
  await rejects(t, call(api.client, 'InspectImage', { id: 'example.com/api-a' }), Status.INVALID_ARGUMENT);
  await rejects(t, call(api.client, 'InspectImage', { id: 'sha512-zz' }), Status.INVALID_ARGUMENT);
  await rejects(t, call(api.client, 'InspectImage', { id: `sha512-${'f'.repeat(128)}` }), Status.NOT_FOUND);
});

/** An open ListenEvents stream: its events so far, ready once the service has subscribed it. */
function listen(api: ApiService, filter: object): { events: Event[]; ready: Promise<void>; ended: Promise<void>; stream: ClientReadableStream<{ events: Event[] }> } {
  const events: Event[] = [];
  const stream = api.client.ListenEvents!({ filter }) as ClientReadableStream<{ events: Event[] }>;
  const ready = new Promise<void>((resolve) => stream.once('metadata', (_m: Metadata) => resolve()));
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', () => resolve());
    stream.on('error', (err: ServiceError) => (err.code === Status.CANCELLED ? resolve() : reject(err)));
  });
  stream.on('data', (r: { events: Event[] }) => events.push(...r.events));
  return { events, ready, ended, stream };
}

test.serial('ListenEvents reports a pod being prepared, starting, its app exiting, the pod exiting and being removed, and images coming and going', async (t) => {
  const { env, api } = await world(t);
  const img = await image(env, 'example.com/api-events', '1.0.0', ['/bin/sh', '-c', 'sleep 1; exit 5']);
  await fetchImage(env, img);
  const everything = listen(api, {});
  const exits = listen(api, { types: ['EVENT_TYPE_POD_EXITED', 'EVENT_TYPE_APP_EXITED'] });
  const others = listen(api, { ids: ['00000000-0000-0000-0000-000000000000'] });
  const later = listen(api, { since_time: String(Math.floor(Date.now() / 1000) + 3600) });
  t.teardown(() => {
    for (const s of [everything, exits, others, later]) s.stream.cancel();
  });
  await Promise.all([everything.ready, exits.ready, others.ready, later.ready]);

  const r = await env.run(['run', ...FLY, `--uuid-file-save=${env.file('uuid')}`, img]);
  t.is(r.exitCode, 5, String(r.stderr));
  const uuid = uuidOf(env.file('uuid'));
  const mine = () => everything.events.filter((e) => e.id === uuid);
  await waitFor('the pod-exited event', async () => mine().some((e) => e.type === 'EVENT_TYPE_POD_EXITED'));
  const types = mine().map((e) => e.type);
  t.deepEqual(types, ['EVENT_TYPE_POD_PREPARED', 'EVENT_TYPE_POD_STARTED', 'EVENT_TYPE_APP_STARTED', 'EVENT_TYPE_APP_EXITED', 'EVENT_TYPE_POD_EXITED']);
  const appExit = mine().find((e) => e.type === 'EVENT_TYPE_APP_EXITED')!;
  t.is(appExit.from, 'api-events');
  t.deepEqual(appExit.data, [{ Key: 'exit_code', value: '5' }]);
  t.true(Number(appExit.time) >= Math.floor(Date.now() / 1000) - 120);

  const rm = await env.run(['rm', uuid]);
  t.is(rm.exitCode, 0, String(rm.stderr));
  await waitFor('the pod-garbage-collected event', async () => mine().some((e) => e.type === 'EVENT_TYPE_POD_GARBAGE_COLLECTED'));

  const other = await fetchImage(env, await image(env, 'example.com/api-new', '3.0.0'));
  await waitFor('the image-imported event', async () => everything.events.some((e) => e.type === 'EVENT_TYPE_IMAGE_IMPORTED' && e.id === other));
  t.is(everything.events.find((e) => e.id === other)!.from, 'example.com/api-new');
  const rmi = await env.run(['image', 'rm', other]);
  t.is(rmi.exitCode, 0, String(rmi.stderr));
  await waitFor('the image-removed event', async () => everything.events.some((e) => e.type === 'EVENT_TYPE_IMAGE_REMOVED' && e.id === other));

  t.deepEqual(
    exits.events.map((e) => e.type),
    ['EVENT_TYPE_APP_EXITED', 'EVENT_TYPE_POD_EXITED'],
    'a filtered stream gets only the types it asked for',
  );
  t.deepEqual(others.events, [], 'a stream for another id gets nothing');
  t.deepEqual(later.events, [], 'a stream since a future time gets nothing yet');
  t.true(everything.events.every((e) => Math.abs(Number(e.time) - Date.now() / 1000) < 600), 'event times are seconds since the epoch');
});

test.serial('ListenEvents ends at until_time, at once when that is past', async (t) => {
  const { api } = await world(t);
  const now = Math.floor(Date.now() / 1000);
  t.deepEqual(await collect(api.client, 'ListenEvents', { filter: { until_time: String(now - 10) } }), []);
  const started = Date.now();
  await collect(api.client, 'ListenEvents', { filter: { until_time: String(now + 2) } });
  t.true(Date.now() - started < 30_000, 'the stream ended by itself');
  // beyond what one timer can wait (about 24.8 days): the stream stays open
  const far = listen(api, { until_time: String(now + 40 * 24 * 3600) });
  await far.ready;
  let ended = false;
  void far.ended.then(() => (ended = true));
  await new Promise((r) => setTimeout(r, 1500));
  t.false(ended, 'a far until_time does not end the stream early');
  far.stream.cancel();
});

test.serial('GetLogs answers with a clear status where a pod keeps no logs, and refuses what it cannot honour', async (t) => {
  const { env, api } = await world(t);
  const img = await image(env, 'example.com/api-logs', '1.0.0', ['/bin/sh', '-c', 'echo hello']);
  const r = await env.run(['run', ...FLY, `--uuid-file-save=${env.file('uuid')}`, img]);
  t.is(r.exitCode, 0, String(r.stderr));
  const uuid = uuidOf(env.file('uuid'));
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: uuid }), Status.NOT_FOUND, /stage1-fly\) keeps none/);
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: uuid, app_name: 'nosuchapp' }), Status.NOT_FOUND, /no app named/);
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: uuid, app_name: 'api-logs' }), Status.UNIMPLEMENTED, /per-app/);
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: uuid, lines: -1 }), Status.INVALID_ARGUMENT);
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: uuid, since_time: '1' }), Status.UNIMPLEMENTED, /time stamps/);
  await rejects(t, collect(api.client, 'GetLogs', {}), Status.INVALID_ARGUMENT);
  await rejects(t, collect(api.client, 'GetLogs', { pod_id: '00000000-0000-0000-0000-000000000000' }), Status.NOT_FOUND);
});

test.serial('malformed requests and unknown methods get error statuses; the service goes on, then stops cleanly on SIGTERM', async (t) => {
  const { api } = await world(t);
  const raw = (method: string, bytes: Buffer) =>
    new Promise((resolve, reject) =>
      api.client.makeUnaryRequest(
        method,
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        (err: ServiceError | null, res?: Buffer) => (err ? reject(err) : resolve(res)),
      ),
    );
  // an unknown field whose varint never ends: no request at all
  const undecodable = Buffer.from([0x78, ...Array<number>(11).fill(0xff)]);
  await rejects(t, raw('/v1alpha.PublicAPI/InspectPod', undecodable), Status.INTERNAL, /deserializing/);
  // a truncated id: the decoder keeps what there is, which is no pod
  await rejects(t, raw('/v1alpha.PublicAPI/InspectPod', Buffer.from([0x0a, 0x05, 0x41])), Status.NOT_FOUND);
  await rejects(t, raw('/v1alpha.PublicAPI/InspectImage', Buffer.from([0x0a, 0x05, 0x41])), Status.INVALID_ARGUMENT);
  await rejects(t, raw('/v1alpha.PublicAPI/NoSuchMethod', Buffer.alloc(0)), Status.UNIMPLEMENTED);
  // fixed pseudo-random bytes to every method: each gets a status or an answer, and the service lives on
  const fuzz = Array.from({ length: 50 }, (_, i) => Buffer.from(Array.from({ length: 1 + ((i * 7) % 40) }, (_, j) => (i * 31 + j * 17) & 0xff)));
  for (const bytes of fuzz) {
    for (const m of ['GetInfo', 'ListPods', 'InspectPod', 'ListImages', 'InspectImage']) await raw(`/v1alpha.PublicAPI/${m}`, bytes).catch(() => undefined);
  }
  t.truthy((await call<{ info: object }>(api.client, 'GetInfo', {})).info, 'still serving');

  const open = listen(api, {});
  await open.ready;
  api.proc.kill('SIGTERM');
  await open.ended;
  const result = await api.proc;
  t.is(result.exitCode, 0, api.stderr());
  t.regex(api.stderr(), /API service stopped/);
  const late = apiClient(api.address);
  await rejects(t, call(late, 'GetInfo', {}), Status.UNAVAILABLE);
  late.close();
});

test.serial('a bad --listen address is a usage error', async (t) => {
  needRoot('the service reads the data dir');
  const env = new RktEnv('rkt-api-');
  t.teardown(() => env.cleanup());
  const r = await env.run(['api-service', '--listen=nonsense']);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /--listen=nonsense is not an address/);
});
