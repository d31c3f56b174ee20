import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { checkServiceReachable, registerPod } from '../../src/mds/client.js';
import { PodPaths } from '../../src/stage1/contract.js';
import { waitFor } from '../helpers/pods.js';
import { needCommand } from '../helpers/prereqs.js';
import { RKT } from '../helpers/rkt.js';
import { ask } from './mds-common.js';

// `rkt metadata-service` under systemd socket activation (rkt supports it):
// the registration socket comes from systemd, and stays systemd's. The
// connection that wakes the service is served once it is up.

test('socket activation: registrations arrive on the socket systemd passed; the file is left to systemd', async (t) => {
  const activate = needCommand('systemd-socket-activate', 'systemd');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mds-activate-'));
  const socket = path.join(dir, 'activated.sock');
  const child = execa(activate, ['-l', socket, RKT, 'metadata-service', '--listen-port=0'], { reject: false, stdin: 'ignore', env: { RKT_METADATA_SERVICE_SOCKET: path.join(dir, 'unused.sock') } });
  t.teardown(() => {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  // systemd-socket-activate starts the service on the first connection
  await waitFor('the activation socket', async () => fs.existsSync(socket), 10_000);
  await checkServiceReachable(socket);
  await waitFor('the service to start', async () => /metadata service running/.test(stderr) || child.exitCode !== null, 30_000);
  t.regex(stderr, /registrations on the socket systemd passed, apps on TCP port \d+/);
  const port = Number(/TCP port (\d+)/.exec(stderr)![1]);
  const uuid = '11111111-2222-4333-8444-aaaaaaaaaaaa';
  const paths = new PodPaths(path.join(dir, uuid));
  fs.mkdirSync(paths.appInfo('web'), { recursive: true });
  fs.writeFileSync(paths.manifest, JSON.stringify({ acVersion: '0.8.11', acKind: 'PodManifest', apps: [{ name: 'web', image: { name: 'example.com/web', id: `sha512-${'d4'.repeat(64)}` } }] }));
  fs.writeFileSync(paths.appImageManifest('web'), JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/web' }));
  const access = await registerPod(paths, uuid, socket);
  t.is(access.port, port);
  t.deepEqual(await ask(port, access.token, 'pod/uuid'), { status: 200, body: uuid });
  t.false(fs.existsSync(path.join(dir, 'unused.sock')));

  child.kill('SIGTERM');
  await child;
  t.regex(stderr, /metadata service exiting/);
  t.true(fs.lstatSync(socket).isSocket());
});
