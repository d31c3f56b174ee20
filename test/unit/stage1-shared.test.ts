import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import { PodPaths, readAppExitStatuses } from '../../src/stage1/contract.js';
import { parseEnterArgs, parseGcArgs, parseRunArgs, parseStopArgs } from '../../src/stage1-common/entry.js';
import { RootfsError, ensureMountTarget, resolveInRoot } from '../../src/stage1-common/rootfs.js';
import { mountsUnder, type MountInfo } from '../../src/util/mounts.js';
import { exitStatusOf, isPodProcess, markReady, readPid, writeAppExitStatus, writePid } from '../../src/stage1-common/status.js';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-shared-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('run flags as stage0 passes them', (t) => {
  const a = parseRunArgs(['--net=host', '--local-config=/etc/rkt', '--debug', '--interactive', '--hostname=h', '--mds-token=tok', 'UUID']);
  t.deepEqual(a, {
    uuid: 'UUID',
    debug: true,
    net: ['host'],
    interactive: true,
    hostname: 'h',
    localConfig: '/etc/rkt',
    mdsToken: 'tok',
    dnsConfMode: { resolv: 'default', hosts: 'default' },
    disableCapabilities: false,
    disablePaths: false,
    disableSeccomp: false,
    mutable: false,
  });
  t.deepEqual(parseRunArgs(['--net', 'a,b', 'U']).net, ['a', 'b']);
  t.throws(() => parseRunArgs(['--bogus', 'U']), { instanceOf: UsageError, message: /unknown flag --bogus/ });
  t.throws(() => parseRunArgs(['--net=host']), { instanceOf: UsageError });
});

test('enter, stop and gc flags', (t) => {
  t.deepEqual(parseEnterArgs(['--pid=42', '--appname=web', '--', '/bin/sh', '-c', 'echo --x']), { pid: 42, debug: false, appName: 'web', command: ['/bin/sh', '-c', 'echo --x'], process: {} });
  t.throws(() => parseEnterArgs(['--appname=web', '--', 'ls']), { message: /--pid/ });
  t.throws(() => parseEnterArgs(['--pid=x', '--', 'ls']), { message: /not a process id/ });
  t.throws(() => parseEnterArgs(['--pid=1']), { message: /command/ });
  t.deepEqual(parseStopArgs(['--force', 'U']), { uuid: 'U', force: true, debug: false });
  t.deepEqual(parseStopArgs(['U']).force, false);
  t.deepEqual(parseGcArgs(['--debug', 'U']), { uuid: 'U', debug: true });
});

test('exit statuses: codes as they are, signal deaths as 128+signo', (t) => {
  t.is(exitStatusOf({ code: 3, signal: null }), 3);
  t.is(exitStatusOf({ code: null, signal: 'SIGTERM' }), 143);
  t.is(exitStatusOf({ code: null, signal: 'SIGKILL' }), 137);
});

test('status files: written atomically, read back, partial ones ignored', (t) => {
  const paths = new PodPaths(tmp(t));
  t.deepEqual(readAppExitStatuses(paths), {});
  writeAppExitStatus(paths, 'a', 0);
  writeAppExitStatus(paths, 'b', 143);
  fs.writeFileSync(path.join(paths.statusDir, '.b.tmp-1-x'), '1');
  t.deepEqual(readAppExitStatuses(paths), { a: 0, b: 143 });
  t.is(fs.readFileSync(paths.appStatus('b'), 'utf8'), '143');
  t.throws(() => writeAppExitStatus(paths, 'c', 300), { instanceOf: RangeError });
  markReady(paths);
  t.true(fs.existsSync(paths.ready));
  t.is(readPid(paths), undefined);
  writePid(paths, process.pid);
  t.is(readPid(paths), process.pid);
});

test('isPodProcess recognizes a process by its working directory', (t) => {
  const dir = tmp(t);
  t.is(isPodProcess(new PodPaths(process.cwd()), process.pid), true);
  t.is(isPodProcess(new PodPaths(dir), process.pid), false);
  t.is(isPodProcess(new PodPaths(dir), 0x3fffffff), false);
});

test('resolveInRoot follows symlinks inside the root and never above it', (t) => {
  const root = tmp(t);
  fs.mkdirSync(path.join(root, 'real/sub'), { recursive: true });
  fs.symlinkSync('/real', path.join(root, 'abs'));
  fs.symlinkSync('../../../../real', path.join(root, 'climb'));
  fs.symlinkSync('sub', path.join(root, 'real/rel'));
  fs.symlinkSync('/etc', path.join(root, 'hostetc'));
  fs.symlinkSync('loop', path.join(root, 'loop'));
  t.deepEqual(resolveInRoot(root, '/abs/sub'), { host: path.join(root, 'real/sub'), inner: '/real/sub', exists: true, missing: [] });
  t.is(resolveInRoot(root, '/climb/rel').host, path.join(root, 'real/sub'));
  t.is(resolveInRoot(root, '/../../real').host, path.join(root, 'real'));
  const e = resolveInRoot(root, '/hostetc/passwd');
  t.false(e.exists);
  t.is(e.host, root);
  t.deepEqual(e.missing, ['etc', 'passwd']);
  t.is(resolveInRoot(root, '/abs', false).inner, '/abs');
  t.throws(() => resolveInRoot(root, '/loop/x'), { instanceOf: RootfsError, message: /symbolic links/ });
});

test('ensureMountTarget creates targets inside the root, through symlinks, replacing a file by a dir', (t) => {
  const root = tmp(t);
  fs.symlinkSync('/etc', path.join(root, 'hostetc'));
  t.is(ensureMountTarget(root, '/hostetc/app/conf', 'dir'), path.join(root, 'etc/app/conf'));
  t.true(fs.statSync(path.join(root, 'etc/app/conf')).isDirectory());
  fs.writeFileSync(path.join(root, 'etc/file'), 'x');
  t.is(ensureMountTarget(root, '/etc/file', 'dir'), path.join(root, 'etc/file'));
  t.true(fs.statSync(path.join(root, 'etc/file')).isDirectory());
  t.is(ensureMountTarget(root, '/etc/single', 'file'), path.join(root, 'etc/single'));
  t.true(fs.statSync(path.join(root, 'etc/single')).isFile());
  t.throws(() => ensureMountTarget(root, '/etc/app', 'file'), { instanceOf: RootfsError });
  t.throws(() => ensureMountTarget(root, '/', 'dir'), { instanceOf: RootfsError });
});

test('mountsUnder lists mounts below a directory, deepest first', (t) => {
  const m = (p: string): MountInfo => ({ id: 1, parentId: 0, mountPoint: p, root: '/', fsType: 'x', source: 'x', superOptions: 'rw' });
  const table = [m('/'), m('/pod'), m('/pod/a'), m('/pod/a/b/c'), m('/podx'), m('/pod/a/b')];
  t.deepEqual(mountsUnder('/pod', table), ['/pod/a/b/c', '/pod/a/b', '/pod/a', '/pod']);
});
