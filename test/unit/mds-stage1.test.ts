import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeState, STATE_VERSION } from '../../src/net/state.js';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import { addMetadataUrl, metadataServiceOf } from '../../src/stage1-common/metadata.js';
import { hostAddressFromPod } from '../../src/stage1-common/pod-net.js';
import { parseRunArgs } from '../../src/stage1-common/entry.js';
import { PodPaths } from '../../src/stage1/contract.js';

// stage1's side of the metadata service: where the token comes from (the
// --mds-token flag, else run-options.json), and which address the apps'
// AC_METADATA_URL names on each kind of network.

const UUID = '11111111-2222-4333-8444-999999999999';
const TOKEN = 'f'.repeat(64);

function pod(t: import('ava').ExecutionContext, options?: object): PodPaths {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mds-stage1-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const paths = new PodPaths(dir);
  if (options) fs.writeFileSync(paths.runOptions, JSON.stringify(options));
  return paths;
}

function spec(name: string): AppSpec {
  return { name, env: [{ name: 'AC_APP_NAME', value: name }, { name: 'AC_METADATA_URL', value: 'http://stale' }] } as unknown as AppSpec;
}

test('the token: --mds-token wins, else run-options.json; none means no AC_METADATA_URL', (t) => {
  const stored = pod(t, { metadataService: { token: TOKEN, port: 4242 } });
  t.deepEqual(metadataServiceOf(stored, parseRunArgs([UUID])), { token: TOKEN, port: 4242 });
  t.deepEqual(metadataServiceOf(stored, parseRunArgs([`--mds-token=${'e'.repeat(40)}`, UUID])), { token: 'e'.repeat(40), port: 4242 });
  // a flag without a recorded port: rkt's port
  t.deepEqual(metadataServiceOf(pod(t), parseRunArgs([`--mds-token=${TOKEN}`, UUID])), { token: TOKEN, port: 18112 });
  t.is(metadataServiceOf(pod(t, { net: ['default'] }), parseRunArgs([UUID])), undefined);
  t.deepEqual(metadataServiceOf(pod(t), parseRunArgs(['--mds-token=short', UUID])), { token: 'short', port: 18112 });
  t.throws(() => metadataServiceOf(pod(t), parseRunArgs(['--mds-token=', UUID])), { message: /must be made of/ });
  t.throws(() => metadataServiceOf(pod(t), parseRunArgs([`--mds-token=${'a'.repeat(40)}/../x`, UUID])), { message: /must be made of/ });

  const specs = [spec('a'), spec('b')];
  addMetadataUrl(stored, parseRunArgs([UUID]), specs, () => '127.0.0.1');
  for (const s of specs) t.deepEqual(s.env.filter((e) => e.name === 'AC_METADATA_URL'), [{ name: 'AC_METADATA_URL', value: `http://127.0.0.1:4242/${TOKEN}` }]);
  const untouched = [spec('c')];
  addMetadataUrl(pod(t), parseRunArgs([UUID]), untouched, () => {
    throw new Error('no host address is needed without a token');
  });
  t.is(untouched[0]!.env.length, 2);
});

function ptpState(paths: PodPaths, networks: { name: string; gateway: string; host: boolean; phase?: 'added' | 'pending' }[]): void {
  writeState(paths.dir, {
    version: STATE_VERSION,
    podUuid: UUID,
    mode: 'contained',
    netnsPath: '/run/netns/x',
    pluginDirs: [],
    ports: [],
    taps: [],
    tornDown: false,
    networks: networks.map((n, i) => ({
      name: n.name,
      ifName: `eth${i}`,
      args: '',
      file: '',
      invocation: { name: n.name, plugins: [] },
      phase: n.phase ?? 'added',
      result: {
        cniVersion: '0.4.0',
        interfaces: [...(n.host ? [{ name: `veth${i}`, mac: '02:00:00:00:00:01' }] : []), { name: `eth${i}`, mac: '02:00:00:00:00:02', sandbox: '/run/netns/x' }],
        ips: [{ version: '4', address: `${n.gateway.replace(/\.1$/, '.5')}/24`, gateway: n.gateway, interface: n.host ? 1 : 0 }],
      },
    })),
  } as never);
}

test('the host address: loopback on the host network, the host end of the first network that has one, else a clear error', (t) => {
  t.is(hostAddressFromPod('/nonexistent', 'host'), '127.0.0.1');
  t.throws(() => hostAddressFromPod('/nonexistent', 'none'), { message: /needs a network/ });
  const p = pod(t);
  ptpState(p, [
    { name: 'lan', gateway: '10.9.0.1', host: false },
    { name: 'default', gateway: '172.16.28.1', host: true },
  ]);
  t.is(hostAddressFromPod(p.dir, 'contained'), '172.16.28.1');
  const q = pod(t);
  ptpState(q, [{ name: 'lan', gateway: '10.9.0.1', host: false }]);
  t.throws(() => hostAddressFromPod(q.dir, 'contained'), { message: /none of the pod's networks ends on the host/ });
});
