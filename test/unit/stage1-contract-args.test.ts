import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RktError, UsageError } from '../../src/errors.js';
import { appAddArgv, appArgv, attachArgv, enterArgv, gcArgv, runArgv, stopArgv, type RunFlags } from '../../src/stage1/args.js';
import { spawn } from 'node:child_process';
import { Pod } from '../../src/pod/pod.js';
import { EXTENSION_ANNOTATION, PodPaths } from '../../src/stage1/contract.js';
import { dnsConfModeFor, dnsRequestFor, parseDnsConfMode, writeStage0DnsFiles } from '../../src/stage1/dns-conf.js';
import { interfaceVersion } from '../../src/stage1/invoke.js';
import { ENTER_ENV_VAR, ENTER_PROCESS_FLAGS, enteredAs, enterProcessArgs, parseEnterProcess } from '../../src/stage1-common/enter-process.js';
import { parseAppArgs, parseAttachArgs, parseEnterArgs, parseFlags, parseGcArgs, parseRunArgs, parseStopArgs, refuseRunFlags } from '../../src/stage1-common/entry.js';
import type { ImageManifest } from '../../src/appc/types.js';

// Both sides of the stage1 contract: what stage0 passes for each interface
// version, and that our stage1s' parsers read it back to the same thing.

const UUID = '6b2b4b1e-5d2c-4d7a-9c1e-0a1b2c3d4e5f';

const ALL: RunFlags = {
  debug: true,
  net: ['default', 'n2:IP=10.1.0.5'],
  interactive: true,
  privateUsers: '',
  mdsToken: 'tok',
  localConfig: '/etc/rkt',
  hostname: 'web',
  dnsConfMode: { resolv: 'stage0', hosts: 'host' },
  disableCapabilities: true,
  disablePaths: true,
  disableSeccomp: true,
  mutable: false,
};

test('run: each interface version gets exactly the flags rkt defines for it', (t) => {
  const v1 = ['--debug', '--net=default,n2:IP=10.1.0.5', '--interactive', '--private-users=', '--mds-token=tok', '--local-config=/etc/rkt'];
  t.deepEqual(runArgv(1, ALL, UUID), [...v1, UUID]);
  t.deepEqual(runArgv(2, ALL, UUID), [...v1, '--hostname=web', UUID]);
  const v3 = [...v1, '--hostname=web', '--disable-capabilities-restriction', '--disable-paths', '--disable-seccomp'];
  t.deepEqual(runArgv(3, ALL, UUID), [...v3, UUID]);
  const v4 = [...v1, '--hostname=web', '--dns-conf-mode=resolv=stage0,hosts=host', '--disable-capabilities-restriction', '--disable-paths', '--disable-seccomp'];
  t.deepEqual(runArgv(4, ALL, UUID), [...v4, UUID]);
  t.deepEqual(runArgv(5, ALL, UUID), [...v4, UUID]);
  const plain: RunFlags = { debug: false, net: ['default'], interactive: false, dnsConfMode: { resolv: 'default', hosts: 'default' }, disableCapabilities: false, disablePaths: false, disableSeccomp: false };
  t.deepEqual(runArgv(5, plain, UUID), ['--net=default', UUID]);
});

test('run: what stage0 passes, our parser reads back', (t) => {
  const a = parseRunArgs(runArgv(5, ALL, UUID));
  t.deepEqual(a, { uuid: UUID, ...ALL });
  t.is(parseRunArgs(['--private-users', UUID]).privateUsers, '');
  t.is(parseRunArgs(['--private-users=100000:65536', UUID]).privateUsers, '100000:65536');
  t.is(parseRunArgs([UUID]).privateUsers, undefined);
});

test('run: --mutable is passed for a sandbox, read back, and refused by a flavor that has no mutable pods', (t) => {
  t.deepEqual(runArgv(5, { ...ALL, mutable: true }, UUID).slice(0, 4), ['--debug', '--net=default,n2:IP=10.1.0.5', '--interactive', '--mutable']);
  t.false(runArgv(5, ALL, UUID).includes('--mutable'));
  const args = parseRunArgs(['--mutable', UUID]);
  t.true(args.mutable);
  t.throws(() => refuseRunFlags('fly', args, { mutable: 'no sandboxes here' }), { instanceOf: RktError, message: 'the fly stage1 cannot honour --mutable: no sandboxes here' });
});

test('app entrypoints: what stage0 passes, our parser reads back; bad input is refused', (t) => {
  const add = appAddArgv({ app: 'web', debug: true, uuid: UUID, disableCapabilities: true, disablePaths: false, disableSeccomp: true });
  t.deepEqual(add, ['--app=web', '--debug=true', `--uuid=${UUID}`, '--disable-capabilities-restriction', '--disable-seccomp']);
  t.deepEqual(parseAppArgs(add, 'add'), { app: 'web', debug: true, uuid: UUID, disableCapabilities: true, disablePaths: false, disableSeccomp: true });
  t.deepEqual(appArgv({ app: 'web', debug: false }), ['--app=web', '--debug=false']);
  t.deepEqual(parseAppArgs(appArgv({ app: 'web', debug: false }), 'stop'), { app: 'web', debug: false, disableCapabilities: false, disablePaths: false, disableSeccomp: false });
  t.throws(() => parseAppArgs(['--app=web'], 'add'), { instanceOf: UsageError, message: /--uuid/ });
  t.throws(() => parseAppArgs(['--app=../../etc', '--debug=false'], 'rm'), { instanceOf: UsageError, message: /valid app name/ });
  t.throws(() => parseAppArgs(['--debug=false'], 'start'), { instanceOf: UsageError, message: /--app=NAME/ });
  t.throws(() => parseAppArgs(['--app=web', '--uuid=x'], 'start'), { instanceOf: UsageError, message: /unknown flag --uuid/ });
  t.throws(() => parseAppArgs(['--app=web', 'extra'], 'stop'), { instanceOf: UsageError });
});

test('run: unknown flags and bad modes are refused', (t) => {
  t.throws(() => parseRunArgs(['--ipc=parent', UUID]), { instanceOf: UsageError, message: /unknown flag --ipc/ });
  t.throws(() => parseRunArgs(['--dns-conf-mode=resolv=bogus', UUID]), { instanceOf: UsageError, message: /dns-conf-mode/ });
  t.throws(() => parseRunArgs(['--dns-conf-mode=hosts=none', UUID]), { instanceOf: UsageError });
  t.deepEqual(parseDnsConfMode('hosts=stage0'), { resolv: 'default', hosts: 'stage0' });
});

test('a flavor refuses a flag it cannot honour, naming it', (t) => {
  const args = parseRunArgs(['--disable-seccomp', UUID]);
  t.notThrows(() => refuseRunFlags('x', args, { privateUsers: 'no user namespaces' }));
  t.throws(() => refuseRunFlags('x', args, { disableSeccomp: 'filters stay' }), { message: 'the x stage1 cannot honour --disable-seccomp: filters stay' });
});

test('gc, enter, stop and attach as rkt passes them, read back', (t) => {
  t.deepEqual(gcArgv(4, { debug: true, localConfig: '/etc/rkt' }, UUID), ['--debug', UUID]);
  t.deepEqual(gcArgv(5, { debug: false, localConfig: '/etc/rkt' }, UUID), ['--local-config=/etc/rkt', UUID]);
  t.deepEqual(parseGcArgs(gcArgv(5, { debug: true, localConfig: '/c' }, UUID)), { uuid: UUID, debug: true, localConfig: '/c' });
  // rkt itself passes it as two words
  t.is(parseGcArgs(['--local-config', '/c', UUID]).localConfig, '/c');
  t.deepEqual(parseEnterArgs(enterArgv({ pid: 7, appName: 'a' }, ['/bin/sh', '-c', 'x'])), { pid: 7, appName: 'a', debug: false, command: ['/bin/sh', '-c', 'x'], process: {} });
  t.deepEqual(parseStopArgs(stopArgv({ force: true }, UUID)), { uuid: UUID, force: true, debug: false });
  t.deepEqual(stopArgv({ force: false }, UUID), [UUID]);
  t.deepEqual(attachArgv({ action: 'auto-attach', app: 'a', debug: false }), ['--action=auto-attach', '--app=a', '--debug=false']);
  const custom = attachArgv({ action: 'custom-attach', app: 'a', debug: true, endpoints: { ttyIn: true, ttyOut: true, stdin: false, stdout: false, stderr: true } });
  t.deepEqual(parseAttachArgs(custom), { action: 'custom-attach', app: 'a', debug: true, endpoints: { ttyIn: true, ttyOut: true, stdin: false, stdout: false, stderr: true } });
  t.throws(() => parseAttachArgs(['--app=a']), { instanceOf: UsageError, message: /--action/ });
  t.throws(() => parseAttachArgs(['--action=list']), { instanceOf: UsageError, message: /--app/ });
  t.throws(() => parseAttachArgs(['--action=list', '--app=a', UUID]), { instanceOf: UsageError });
});

function manifest(version?: string): ImageManifest {
  return {
    acKind: 'ImageManifest',
    acVersion: '0.8.11',
    name: 'example.com/stage1',
    ...(version !== undefined && { annotations: [{ name: 'coreos.com/rkt/stage1/interface-version', value: version }] }),
  } as ImageManifest;
}

test('interface versions 1 to 5 are spoken; others are refused with the reason', (t) => {
  t.is(interfaceVersion(manifest()), 1);
  for (const v of [1, 2, 3, 4, 5]) t.is(interfaceVersion(manifest(String(v))), v);
  t.throws(() => interfaceVersion(manifest('6')), { message: /speaks stage1 interface version 6, but this rkt speaks only 1 to 5/ });
  for (const bad of ['0', '-1', '2.5', 'five', '', ' 3', '0x3']) t.throws(() => interfaceVersion(manifest(bad)), { message: /not a version number/ }, bad);
});

function pod(t: { teardown(fn: () => void): void }): PodPaths {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'contract-dns-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'stage1', 'rootfs'), { recursive: true });
  return new PodPaths(dir);
}

test('DNS flags travel as --dns-conf-mode and the files stage0 writes, and come back the same', (t) => {
  const paths = pod(t);
  const req = { dns: { dns: ['192.0.2.53'], dnsSearch: ['example.com'], dnsOpt: ['ndots:2'], dnsDomain: 'example.com' }, hostsEntries: ['192.0.2.7=db.example.com', '192.0.2.7=db2'] };
  const mode = dnsConfModeFor(req);
  t.deepEqual(mode, { resolv: 'stage0', hosts: 'stage0' });
  writeStage0DnsFiles(paths, mode, req);
  t.regex(fs.readFileSync(paths.stage0ResolvConf, 'utf8'), /nameserver 192\.0\.2\.53/);
  t.deepEqual(dnsRequestFor(paths, mode), { dns: req.dns, hostsEntries: req.hostsEntries });
  t.deepEqual(dnsConfModeFor({ dns: { dns: ['host'] }, hostsEntries: ['host'] }), { resolv: 'host', hosts: 'host' });
  t.deepEqual(dnsConfModeFor({ dns: { dns: ['none'] } }), { resolv: 'none', hosts: 'default' });
  t.deepEqual(dnsConfModeFor({}), { resolv: 'default', hosts: 'default' });
  t.deepEqual(dnsRequestFor(paths, { resolv: 'host', hosts: 'host' }), { dns: { dns: ['host'] }, hostsEntries: ['host'] });
});

test('stage0 DNS files that are missing, links or hostile are refused, not followed', (t) => {
  const paths = pod(t);
  t.throws(() => dnsRequestFor(paths, { resolv: 'stage0', hosts: 'default' }), { instanceOf: UsageError, message: /does not exist/ });
  fs.mkdirSync(path.dirname(paths.stage0Hosts), { recursive: true });
  fs.symlinkSync('/etc/shadow', paths.stage0Hosts);
  t.throws(() => dnsRequestFor(paths, { resolv: 'default', hosts: 'stage0' }));
  fs.rmSync(paths.stage0Hosts);
  fs.writeFileSync(paths.stage0Hosts, '192.0.2.1 good\n999.1.1.1 bad\n');
  t.throws(() => dnsRequestFor(paths, { resolv: 'default', hosts: 'stage0' }), { instanceOf: UsageError });
  fs.writeFileSync(paths.stage0ResolvConf, 'nameserver not-an-ip\n');
  t.throws(() => dnsRequestFor(paths, { resolv: 'stage0', hosts: 'default' }), { instanceOf: UsageError });
  fs.writeFileSync(paths.stage0ResolvConf, 'x'.repeat(70000));
  t.throws(() => dnsRequestFor(paths, { resolv: 'stage0', hosts: 'default' }), { message: /larger than/ });
});

test('stage0 reads what a stage1 without our extension writes where rkt\'s contract says, and only then', async (t) => {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'contract-pod-'));
  t.teardown(() => fs.rmSync(data, { recursive: true, force: true }));
  const stage1 = (annotations: { name: string; value: string }[]) => ({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/s1', annotations });
  const make = (uuid: string, annotations: { name: string; value: string }[]) => {
    const pod = new Pod(data, uuid, 'run');
    fs.mkdirSync(path.join(pod.paths.rktStatusDir), { recursive: true });
    fs.writeFileSync(pod.paths.stage1Manifest, JSON.stringify(stage1(annotations)));
    fs.writeFileSync(path.join(pod.paths.rktStatusDir, 'app'), '7\n');
    fs.symlinkSync('ready', pod.paths.rktSupervisorStatus);
    return pod;
  };
  const theirs = make('11111111-1111-4111-8111-111111111111', []);
  t.deepEqual(theirs.appExitStatuses(), { app: 7 });
  t.true(theirs.isReady());
  // ours: only what the host wrote counts, whatever the pod put in its rootfs
  const ours = make('22222222-2222-4222-8222-222222222222', [{ name: EXTENSION_ANNOTATION.hostExitStatus, value: 'true' }]);
  t.deepEqual(ours.appExitStatuses(), {});
  t.false(ours.isReady());
  // a link out of the stage1 rootfs is not followed
  fs.rmSync(path.join(theirs.paths.rktStatusDir, 'app'));
  fs.writeFileSync(path.join(data, 'outside'), '9');
  fs.symlinkSync(path.join(data, 'outside'), path.join(theirs.paths.rktStatusDir, 'app'));
  t.deepEqual(new Pod(data, theirs.uuid, 'run').appExitStatuses(), {});

  // ppid: the one child of that process is the pid
  const parent = spawn('/bin/sh', ['-c', 'sleep 30; true'], { stdio: 'ignore' });
  t.teardown(() => parent.kill('SIGKILL'));
  fs.writeFileSync(theirs.paths.ppid, `${parent.pid}\n`);
  // the child may be seen between fork and exec: wait until it is sleep
  const cmdline = (pid: number) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  const childOf = async () => {
    for (let i = 0; i < 250; i++) {
      const p = theirs.pid();
      if (p !== undefined && cmdline(p).startsWith('sleep\0')) return p;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  };
  const child = await childOf();
  t.truthy(child, 'the one child of the ppid process');
  t.teardown(() => {
    if (child !== undefined) process.kill(child, 'SIGKILL');
  });
  t.not(child, parent.pid);
  fs.writeFileSync(theirs.paths.pid, '4242\n');
  t.is(theirs.pid(), 4242);
});

test("enter's process options (an OCI exec's env, cwd and user) read back as given; the environment stays off the command line", (t) => {
  const want = { env: [{ name: 'A', value: 'x=y z' }, { name: 'EMPTY', value: '' }], workingDirectory: '/w d', uid: 1000, gid: 0, supplementaryGids: [5, 6] };
  const { flags, env } = enterProcessArgs(want);
  const argv = enterArgv({ pid: 7, appName: 'a', processFlags: flags }, ['/bin/true']);
  t.false(argv.some((w) => w.includes('x=y z')), 'no value of the environment in argv');
  t.deepEqual(parseEnterProcess(parseFlags(argv.slice(0, argv.indexOf('--')), { booleans: ['environment'], values: ['pid', 'appname', ...ENTER_PROCESS_FLAGS] }).values, true, env), want);
  t.deepEqual(enterProcessArgs({ supplementaryGids: [] }).flags, ['--supplementary-gids=']);
  t.deepEqual(parseEnterProcess(new Map([['supplementary-gids', '']]), false), { supplementaryGids: [] });
  t.deepEqual(enteredAs({ env: [], workingDirectory: '/', uid: 1, gid: 2, supplementaryGids: [3] }, { uid: 0 }), { env: [], workingDirectory: '/', uid: 0, gid: 2, supplementaryGids: [3] });
  for (const [values, environment, message] of [
    [[['working-dir', 'rel']], false, /absolute/],
    [[['user', 'root']], false, /numeric/],
    [[['group', '-1']], false, /numeric/],
    [[['supplementary-gids', '1,,2']], false, /numeric/],
    [[['user', '4294967295']], false, /numeric/],
    [[], true, /is not set/],
  ] as const) {
    t.throws(() => parseEnterProcess(new Map(values as unknown as [string, string][]), environment, {}), { instanceOf: UsageError, message });
  }
  for (const bad of ['{}', '["NOEQUALS"]', '["=v"]', '[1]', 'not json']) {
    t.throws(() => parseEnterProcess(new Map(), true, { [ENTER_ENV_VAR]: bad }), { instanceOf: UsageError, message: /JSON list/ }, bad);
  }
});
