import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import { DEFAULT_CAPABILITIES, LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { enterProperties, escapeExecArg } from '../../stage1-nspawn/enter-props.js';
import { nspawnAppUnit, STAGE1, writePodConfig, hostUnitCopy } from '../../stage1-nspawn/pod-units.js';
import { withAllCapabilities } from '../../src/stage1-common/insecure.js';

function spec(over: Partial<AppSpec> = {}): AppSpec {
  return {
    name: 'web',
    imageName: 'example.com/web',
    exec: ['/bin/server', '--port', '80'],
    user: '1000',
    group: '1000',
    uid: 1000,
    gid: 1000,
    supplementaryGids: [50],
    env: [
      { name: 'PATH', value: '/usr/bin:/bin' },
      { name: 'GREETING', value: '100% $HOME' },
    ],
    workingDirectory: '/srv',
    readOnlyRootFS: false,
    eventHandlers: {},
    mounts: [],
    isolators: { capabilities: [...DEFAULT_CAPABILITIES], noNewPrivileges: false, app: [], pod: [] },
    treeRootfs: '/store/tree/rootfs',
    rootfs: '/pod/stage1/rootfs/opt/stage2/web/rootfs',
    streams: { stdin: 'null', stdout: 'log', stderr: 'log' },
    ...over,
  };
}

const SECCOMP = { filters: ['@system-service chroot', '~setns unshare'], errno: 'EPERM' };

function values(unit: string, key: string): string[] {
  return unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

test('an app unit has the FIFOs as output, the exit hook, masked paths and the seccomp filter', (t) => {
  const u = nspawnAppUnit(spec(), { seccomp: SECCOMP });
  t.deepEqual(values(u, 'StandardInput'), ['null']);
  t.deepEqual(values(u, 'StandardOutput'), [`file:${STAGE1.stdout}`]);
  t.deepEqual(values(u, 'StandardError'), [`file:${STAGE1.stderr}`]);
  t.deepEqual(values(u, 'ExecStopPost'), [`+"${STAGE1.appExited}" "web" "\${EXIT_CODE}:\${EXIT_STATUS}:\${SERVICE_RESULT}"`]);
  t.deepEqual(values(u, 'ExecStartPost'), [`-+"${STAGE1.report}" "started" "web"`]);
  t.deepEqual(values(u, 'RootDirectoryStartOnly'), ['yes']);
  t.deepEqual(values(u, 'MountAPIVFS'), ['yes']);
  t.deepEqual(values(u, 'ProtectKernelTunables'), ['yes']);
  t.deepEqual(values(u, 'ProtectKernelLogs'), ['yes']);
  t.deepEqual(values(u, 'SystemCallFilter'), SECCOMP.filters);
  t.deepEqual(values(u, 'SystemCallErrorNumber'), ['EPERM']);
  t.deepEqual(values(u, 'CapabilityBoundingSet'), [DEFAULT_CAPABILITIES.join(' ')]);
});

test('--insecure-options=paths leaves the paths alone; no seccomp plan writes no filter', (t) => {
  const u = nspawnAppUnit(spec(), { seccomp: { filters: [] }, insecurePaths: true });
  for (const k of ['ProtectKernelTunables', 'ProtectKernelLogs', 'ProtectControlGroups', 'SystemCallFilter', 'SystemCallErrorNumber']) t.deepEqual(values(u, k), [], k);
});

test('interactive apps get the console with a terminal, the stdin FIFO without one', (t) => {
  const tty = nspawnAppUnit(spec(), { seccomp: SECCOMP, interactive: { tty: true, rows: 40, columns: 120 } });
  t.deepEqual(values(tty, 'StandardInput'), ['tty']);
  t.deepEqual(values(tty, 'TTYPath'), ['/dev/console']);
  t.deepEqual(values(tty, 'TTYRows'), ['40']);
  const pipe = nspawnAppUnit(spec(), { seccomp: SECCOMP, interactive: { tty: false } });
  t.deepEqual(values(pipe, 'StandardInput'), [`file:${STAGE1.stdin}`]);
  t.deepEqual(values(pipe, 'StandardOutput'), [`file:${STAGE1.stdout}`]);
});

test('withAllCapabilities gives every capability and drops the retain grant', (t) => {
  const s = withAllCapabilities(spec({ isolators: { capabilities: ['CAP_KILL'], capabilitiesRetain: ['CAP_KILL'], noNewPrivileges: true, app: [], pod: [] } }));
  t.deepEqual(s.isolators.capabilities, [...LINUX_CAPABILITIES]);
  t.is(s.isolators.capabilitiesRetain, undefined);
  t.true(s.isolators.noNewPrivileges);
});

test('writePodConfig writes units, the pod target, the app list, identity and NSS entries', (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-units-'));
  const podDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nspawn-pod-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  t.teardown(() => fs.rmSync(podDir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\n');
  const uuid = '2462e25b-0602-463f-9f5b-c305c68517d1';
  writePodConfig(root, podDir, [spec(), spec({ name: 'db', uid: 0, gid: 0, supplementaryGids: [] })], {
    uuid,
    hostname: 'pod1',
    seccomp: SECCOMP,
    seccompByApp: new Map([['db', { filters: ['~mkdir'] }]]),
  });
  const units = path.join(root, STAGE1.units);
  t.true(fs.readFileSync(path.join(units, 'web.service'), 'utf8').includes('SystemCallFilter=~setns unshare'));
  t.true(fs.readFileSync(path.join(units, 'db.service'), 'utf8').includes('SystemCallFilter=~mkdir'));
  t.is(fs.readlinkSync(path.join(units, `${STAGE1.podTarget}.wants`, 'web.service')), '../web.service');
  t.regex(fs.readFileSync(path.join(units, STAGE1.podTarget), 'utf8'), /Wants=db\.service/);
  t.is(fs.readFileSync(path.join(root, STAGE1.apps), 'utf8'), 'web\ndb\n');
  t.is(fs.readFileSync(path.join(root, 'etc/machine-id'), 'utf8'), `${uuid.replace(/-/g, '')}\n`);
  t.is(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8'), 'pod1\n');
  t.regex(fs.readFileSync(path.join(root, 'etc/passwd'), 'utf8'), /^rkt-u1000:x:1000:1000:/m);
  t.regex(fs.readFileSync(path.join(root, 'etc/group'), 'utf8'), /^rkt-g50:x:50:$/m);
  t.is(fs.readFileSync(hostUnitCopy(podDir, 'db'), 'utf8'), fs.readFileSync(path.join(root, STAGE1.units, 'db.service'), 'utf8'), 'the host keeps its own copy of each unit');
  for (const d of [STAGE1.status, STAGE1.io]) t.true(fs.statSync(path.join(root, d)).isDirectory(), d);
});

test('enter carries over the settings that shape the process, not the app lifecycle', (t) => {
  const u = nspawnAppUnit(spec({ readOnlyRootFS: true }), { seccomp: SECCOMP });
  const props = enterProperties(u, { term: 'xterm-256color' });
  const keys = new Set(props.map((p) => p.slice(0, p.indexOf('='))));
  for (const k of ['RootDirectory', 'User', 'Group', 'SupplementaryGroups', 'WorkingDirectory', 'Environment', 'CapabilityBoundingSet', 'SystemCallFilter', 'SystemCallErrorNumber', 'ProtectKernelTunables', 'ReadOnlyPaths', 'MountAPIVFS']) {
    t.true(keys.has(k), k);
  }
  for (const k of ['ExecStart', 'ExecStopPost', 'ExecStartPost', 'StandardOutput', 'Type', 'RootDirectoryStartOnly']) t.false(keys.has(k), k);
  // the unit's "%%" escape is undone: -p does not expand specifiers
  t.true(props.includes('Environment="GREETING=100% $HOME"'));
  t.true(props.includes('Environment=TERM=xterm-256color'));
  t.deepEqual(enterProperties('[Service]\nEnvironment="TERM=vt100"\n', { term: 'xterm' }), ['Environment="TERM=vt100"']);
});

test("an entered command's own env, cwd and user replace the app's settings, the rest of the unit kept", (t) => {
  const u = nspawnAppUnit(spec(), { seccomp: SECCOMP });
  const props = enterProperties(u, { term: 'xterm', process: { env: [{ name: 'ONLY', value: '50% a b' }], workingDirectory: '/tmp', uid: 0, gid: 7, supplementaryGids: [] } });
  const of = (k: string) => props.filter((p) => p.startsWith(`${k}=`)).map((p) => p.slice(k.length + 1));
  t.deepEqual(of('User'), ['0']);
  t.deepEqual(of('Group'), ['7']);
  t.deepEqual(of('SupplementaryGroups'), ['']);
  t.deepEqual(of('WorkingDirectory'), ['/tmp']);
  t.deepEqual(of('Environment'), ['"ONLY=50% a b"', 'TERM=xterm']);
  t.true(of('UnsetEnvironment')[0]!.split(' ').includes('HOME'), "systemd's own variables stay out");
  t.deepEqual(of('RootDirectory'), enterProperties(u).filter((p) => p.startsWith('RootDirectory=')).map((p) => p.slice(14)), 'the root is the app\'s');
  // only what is given is replaced
  const cwdOnly = enterProperties(u, { process: { workingDirectory: '/srv' } });
  t.deepEqual(cwdOnly.filter((p) => p.startsWith('User=')), ['User=1000']);
  t.deepEqual(cwdOnly.filter((p) => p.startsWith('WorkingDirectory=')), ['WorkingDirectory=/srv']);
  t.throws(() => enterProperties(u, { process: { env: [{ name: 'BAD-NAME', value: '' }] } }), { message: /BAD-NAME/ });
});

test('a $ in an entered command is kept literally', (t) => {
  t.is(escapeExecArg('echo $HOME $$'), 'echo $$HOME $$$$');
});

test('an app\'s own stream modes name its ends in /rkt/iottymux/<app>/, the pod\'s output, or nothing', (t) => {
  const stream = nspawnAppUnit(spec({ streams: { stdin: 'stream', stdout: 'stream', stderr: 'log' } }), { seccomp: SECCOMP });
  t.deepEqual(values(stream, 'StandardInput'), ['file:/rkt/iottymux/web/stdin']);
  t.deepEqual(values(stream, 'StandardOutput'), ['file:/rkt/iottymux/web/stdout']);
  t.deepEqual(values(stream, 'StandardError'), [`file:${STAGE1.stderr}`]);
  t.deepEqual(values(stream, 'TTYPath'), []);

  const tty = nspawnAppUnit(spec({ streams: { stdin: 'tty', stdout: 'tty', stderr: 'stream' } }), { seccomp: SECCOMP });
  t.deepEqual(values(tty, 'StandardInput'), ['tty']);
  t.deepEqual(values(tty, 'StandardOutput'), ['tty']);
  t.deepEqual(values(tty, 'StandardError'), ['file:/rkt/iottymux/web/stderr']);
  t.deepEqual(values(tty, 'TTYPath'), ['/rkt/iottymux/web/tty']);

  const mute = nspawnAppUnit(spec({ streams: { stdin: 'null', stdout: 'null', stderr: 'null' } }), { seccomp: SECCOMP });
  t.deepEqual([...values(mute, 'StandardInput'), ...values(mute, 'StandardOutput'), ...values(mute, 'StandardError')], ['null', 'null', 'null']);
});
