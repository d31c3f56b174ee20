import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import fc from 'fast-check';
import { convertLayer } from '../../src/docker/layer.js';
import { appOf, execOf, userOf } from '../../src/docker/app-config.js';
import { applyPathWhitelist } from '../../src/image/whitelist.js';
import { checkAciTar } from '../../src/image/tar-check.js';
import { loadConfig } from '../../src/config/loader.js';
import { ImageFormatError, RktError } from '../../src/errors.js';
import { packTar, type Entry } from '../helpers/tar.js';
import { assertTypedError, fuzzAsync } from '../helpers/fuzz.js';

async function convert(entries: Entry[], lower: string[] = []): Promise<{ aci: Buffer; paths: string[]; manifest: Record<string, unknown> }> {
  const input = Readable.from([await packTar(entries)]);
  const { aci, done } = convertLayer(input, { name: 'docker-layer/test', labels: [], lower: new Set(lower), what: 'layer 1' });
  const chunks: Buffer[] = [];
  for await (const c of aci) chunks.push(c as Buffer);
  const out = Buffer.concat(chunks);
  const check = await checkAciTar(Readable.from([out]));
  return { aci: out, paths: [...(await done).paths].sort(), manifest: check.manifest as unknown as Record<string, unknown> };
}

async function names(aci: Buffer): Promise<string[]> {
  const extract = tar.extract();
  const out: string[] = [];
  extract.on('entry', (h, s, next) => {
    out.push(h.name);
    s.resume();
    s.on('end', () => next());
  });
  const finished = new Promise((resolve) => extract.on('finish', () => resolve(undefined)));
  extract.end(aci);
  await finished;
  return out;
}

test('a layer moves under rootfs/, whiteouts vanish from it, and its whitelist lists what survives', async (t) => {
  const lower = ['etc', 'etc/gone', 'etc/kept', 'opt', 'opt/dir', 'opt/dir/old', 'var', 'var/tree', 'var/tree/deep/file'];
  const { aci, paths, manifest } = await convert(
    [
      { name: './etc/', type: 'directory' },
      { name: './etc/.wh.gone', data: '' },
      { name: 'opt/dir/', type: 'directory' },
      { name: 'opt/dir/.wh..wh..opq', data: '' },
      { name: 'opt/dir/new', data: 'n' },
      { name: 'var/.wh.tree', data: '' },
      { name: 'var/.wh..wh.plnk', data: '' },
      { name: 'bin/hard', data: 'h' },
      { name: 'bin/link', type: 'link', linkname: './bin/hard' },
    ],
    lower,
  );
  t.deepEqual(paths, ['bin/hard', 'bin/link', 'etc', 'etc/kept', 'opt', 'opt/dir', 'opt/dir/new', 'var']);
  t.deepEqual(manifest.pathWhitelist, paths.map((p) => `/${p}`));
  const entries = await names(aci);
  t.false(entries.some((n) => n.includes('.wh.')));
  t.true(entries.includes('rootfs/bin/hard'));
  t.is(entries[entries.length - 1], 'manifest');
});

test('a layer without whiteouts needs no whitelist', async (t) => {
  const { manifest, paths } = await convert([{ name: 'new', data: 'n' }], ['old']);
  t.is(manifest.pathWhitelist, undefined);
  t.deepEqual(paths, ['new', 'old']);
});

test('a layer that leaves nothing keeps nothing when rendered', async (t) => {
  const { manifest } = await convert([{ name: '.wh.sole', data: '' }], ['sole']);
  t.deepEqual(manifest.pathWhitelist, ['/.']);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.mkdirSync(path.join(root, 'sole/x'), { recursive: true });
  await applyPathWhitelist(root, manifest.pathWhitelist as string[]);
  t.deepEqual(fs.readdirSync(root), []);
});

test('absolute and ".." names are refused by the converter itself', async (t) => {
  for (const [entries, re] of [
    [[{ name: '/etc/passwd', data: 'x' }], /absolute path/],
    [[{ name: 'a/../../x', data: 'x' }], /"\.\." component/],
    [[{ name: 'l', type: 'link', linkname: '../x' }], /"\.\." component/],
  ] as [Entry[], RegExp][]) {
    await t.throwsAsync(convert(entries), { instanceOf: ImageFormatError, message: re });
  }
});

test('whitelist entries without a trailing slash match exactly; with one they keep the subtree', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wl-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const f of ['etc/a', 'etc/b', 'keep/x/y', 'drop/z']) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), f);
  }
  fs.mkdirSync(path.join(root, 'empty'));
  await applyPathWhitelist(root, ['/etc', '/etc/a', '/keep/', '/empty']);
  t.deepEqual(fs.readdirSync(root).sort(), ['empty', 'etc', 'keep']);
  t.deepEqual(fs.readdirSync(path.join(root, 'etc')), ['a']);
  t.true(fs.existsSync(path.join(root, 'keep/x/y')));
});

test('the image config maps onto the app as docker2aci did', (t) => {
  t.deepEqual(execOf({ entrypoint: ['/bin/app'], cmd: ['--port', '80'] }), ['/bin/app', '--port', '80']);
  t.deepEqual(execOf({ cmd: ['echo', "it's here", 'a b'] }), ['/bin/sh', '-c', `echo 'it'\\''s here' 'a b'`]);
  t.deepEqual(execOf({}), []);
  t.deepEqual(userOf(undefined), { user: '0', group: '0' });
  t.deepEqual(userOf('1000'), { user: '1000', group: '1000' });
  t.deepEqual(userOf('app:staff'), { user: 'app', group: 'staff' });
  t.deepEqual(userOf('1000:50'), { user: '1000', group: '50' });
  const app = appOf({
    architecture: 'amd64', os: 'linux', diffIds: [],
    cmd: ['/srv/run'], env: ['A=1', 'B=x=y', 'A=2', 'bad-name=1', 'EMPTY'], workingDir: '/srv', user: 'nobody',
    exposedPorts: ['80/tcp', '53/udp', 'junk', '70000/tcp'], volumes: ['/data', '/var/lib/x', 'relative'],
  });
  t.deepEqual(app.environment, [{ name: 'A', value: '2' }, { name: 'B', value: 'x=y' }, { name: 'EMPTY', value: '' }]);
  t.is(app.workingDirectory, '/srv');
  t.deepEqual(app.ports?.map((p) => `${p.name} ${p.protocol} ${p.port}`), ['80-tcp tcp 80', '53-udp udp 53']);
  t.deepEqual(app.mountPoints?.map((m) => `${m.name} ${m.path}`), ['volume-data /data', 'volume-var-lib-x /var/lib/x']);
});

test('dockerAuth entries live in auth.d beside auth entries; a registry twice in one dir is an error', (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cfg-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const dirs = { systemConfig: path.join(root, 'lib'), localConfig: path.join(root, 'etc'), userConfig: path.join(root, 'user') };
  const put = (base: string, file: string, json: unknown): void => {
    fs.mkdirSync(path.join(base, 'auth.d'), { recursive: true });
    fs.writeFileSync(path.join(base, 'auth.d', file), JSON.stringify(json));
  };
  const docker = (registries: string[], user: string) => ({ rktKind: 'dockerAuth', rktVersion: 'v1', registries, credentials: { user, password: 'pw' } });
  put(dirs.systemConfig, 'docker.json', docker(['index.docker.io', 'quay.io'], 'sys'));
  put(dirs.systemConfig, 'basic.json', { rktKind: 'auth', rktVersion: 'v1', domains: ['example.com'], type: 'basic', credentials: { user: 'u', password: 'p' } });
  put(dirs.localConfig, 'quay.json', docker(['quay.io'], 'local'));
  const cfg = loadConfig(dirs);
  t.is(cfg.dockerAuth.get('index.docker.io')?.credentials.user, 'sys');
  t.is(cfg.dockerAuth.get('quay.io')?.credentials.user, 'local');
  t.is(cfg.auth.get('example.com')?.type, 'basic');
  put(dirs.localConfig, 'quay2.json', docker(['quay.io'], 'again'));
  t.throws(() => loadConfig(dirs), { instanceOf: RktError, message: /registry "quay.io" is already configured in .*quay.json/ });
  fs.rmSync(path.join(dirs.localConfig, 'auth.d', 'quay2.json'));
  put(dirs.localConfig, 'empty.json', docker(['x.io'], ''));
  t.throws(() => loadConfig(dirs), { message: /non-empty "user" and "password"/ });
});

test('fuzz: the converter refuses any bytes only with a typed error', async (t) => {
  await fuzzAsync(
    t,
    fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
      const { aci, done } = convertLayer(Readable.from([Buffer.from(bytes)]), { name: 'docker-layer/f', labels: [], lower: new Set(), what: 'layer' });
      try {
        for await (const _ of aci) void _;
        await done;
      } catch (err) {
        assertTypedError(err, RktError, bytes);
      }
    }),
  );
});
