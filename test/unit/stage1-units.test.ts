import test from 'ava';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import { DEFAULT_CAPABILITIES } from '../../src/appc/capabilities.js';
import { credentialEntries } from '../../src/stage1-common/credentials.js';
import { UnitError, appUnit, appUnitFiles, reportHooks, cpuQuota, environmentAssignment, execLine, podTarget, quoteExecWord, unitPath, type AppUnitOptions } from '../../src/stage1-common/units.js';

function spec(over: Partial<AppSpec> = {}): AppSpec {
  return {
    name: 'web',
    imageName: 'example.com/web',
    exec: ['/bin/server', '--port', '80'],
    user: '0',
    group: '0',
    uid: 0,
    gid: 0,
    supplementaryGids: [],
    env: [
      { name: 'PATH', value: '/usr/bin:/bin' },
      { name: 'AC_APP_NAME', value: 'web' },
    ],
    workingDirectory: '/',
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

const OPTS: AppUnitOptions = { stdio: { input: 'null', output: 'file:/run/rkt/stdout', error: 'file:/run/rkt/stderr' } };

/** The values of a key in the [Service] section, in order. */
function values(unit: string, key: string): string[] {
  return unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

/**
 * A reading of one ExecStart= line the way systemd 252 reads it (specifiers,
 * then quotes and C escapes, then $ substitution with no variables set), to
 * check that what we write means exactly the argv we meant.
 */
function systemdSplit(line: string): string[] {
  const s = line.replace(/%%/g, '\u0000PCT');
  if (/%/.test(s)) throw new Error(`unescaped specifier in ${line}`);
  const words: string[] = [];
  let i = 0;
  const esc: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\', '"': '"', "'": "'" };
  while (i < s.length) {
    while (s[i] === ' ') i++;
    if (i >= s.length) break;
    let w = '';
    if (s[i] !== '"') throw new Error(`unquoted word at ${i} in ${line}`);
    i++;
    while (s[i] !== '"') {
      if (i >= s.length) throw new Error('unterminated quote');
      if (s[i] === '\\') {
        const c = s[i + 1]!;
        if (c === 'x') {
          w += String.fromCharCode(parseInt(s.slice(i + 2, i + 4), 16));
          i += 4;
          continue;
        }
        if (!(c in esc)) throw new Error(`unknown escape \\${c}`);
        w += esc[c];
        i += 2;
        continue;
      }
      w += s[i++];
    }
    i++;
    words.push(w);
  }
  return words.map((w) => {
    if (/\$(?!\$)/.test(w.replace(/\$\$/g, ''))) throw new Error(`variable reference in ${w}`);
    return w.replace(/\$\$/g, '$').replace(/\u0000PCT/g, '%');
  });
}

test('argv words survive spaces, quotes, backslashes, $, %, ; and newlines', (t) => {
  const argv = ['/bin/sh', '-c', 'echo "a b" \'c\' \\ $HOME ${X} 50% %n ; done', '', ';', 'line1\nline2\ttab', 'bell\x07'];
  const line = execLine(argv);
  t.deepEqual(systemdSplit(line), argv);
  t.is(quoteExecWord('$HOME'), '"$$HOME"');
  t.is(quoteExecWord('100%'), '"100%%"');
  t.is(quoteExecWord('a"b\\c'), '"a\\"b\\\\c"');
  t.is(quoteExecWord('x\ny'), '"x\\ny"');
  t.is(quoteExecWord(';'), '";"');
});

test('a NUL, an empty argv or a relative command is refused', (t) => {
  t.throws(() => execLine(['/bin/echo', 'a\u0000b']), { instanceOf: UnitError, message: /NUL/ });
  t.throws(() => execLine([]), { instanceOf: UnitError });
  t.throws(() => execLine(['sh', '-c', 'x']), { instanceOf: UnitError, message: /absolute/ });
  // a leading "-" or "@" would be a systemd prefix; an absolute path cannot start with one
  t.throws(() => execLine(['-/bin/true']), { instanceOf: UnitError });
});

test('environment assignments are quoted, escaped and refuse names systemd would drop', (t) => {
  t.is(environmentAssignment('A', 'b c'), '"A=b c"');
  t.is(environmentAssignment('A', 'say "hi" \\ 100% $X'), '"A=say \\"hi\\" \\\\ 100%% $X"');
  t.is(environmentAssignment('MULTI', 'one\ntwo'), '"MULTI=one\\ntwo"');
  t.is(environmentAssignment('_x1', ''), '"_x1="');
  t.throws(() => environmentAssignment('1A', 'x'), { instanceOf: UnitError, message: /1A/ });
  t.throws(() => environmentAssignment('a.b', 'x'), { instanceOf: UnitError });
  t.throws(() => environmentAssignment('A', 'x\u0000'), { instanceOf: UnitError });
});

test('paths keep spaces, escape specifiers and refuse what a unit line cannot hold', (t) => {
  t.is(unitPath('/srv/my data', 'wd'), '/srv/my data');
  t.is(unitPath('/100%', 'wd'), '/100%%');
  t.throws(() => unitPath('relative', 'wd'), { instanceOf: UnitError });
  t.throws(() => unitPath('/a\nb', 'wd'), { instanceOf: UnitError });
  t.throws(() => unitPath('/trailing ', 'wd'), { instanceOf: UnitError });
  t.throws(() => unitPath('/back\\slash', 'wd'), { instanceOf: UnitError });
});

test('an app unit: root, credentials, groups, workdir, env, exec, stdio, hooks', (t) => {
  const u = appUnit(spec({ uid: 1000, gid: 50, supplementaryGids: [65534, 7], workingDirectory: '/srv/app', env: [{ name: 'GREETING', value: 'hello world' }] }), {
    ...OPTS,
    execStopPost: [`${execLine(['/rkt/bin/rkt-app-exited', 'web'])} $EXIT_STATUS`],
    execStartPost: [execLine(['/rkt/bin/busybox', 'touch', '/rkt/started/web'])],
    hooksInStage1Root: true,
    hooksPrivileged: true,
    mountApiVfs: true,
  });
  t.deepEqual(values(u, 'Type'), ['exec']);
  t.deepEqual(values(u, 'Restart'), ['no']);
  t.deepEqual(values(u, 'RootDirectory'), ['/opt/stage2/web/rootfs']);
  t.deepEqual(values(u, 'RootDirectoryStartOnly'), ['yes']);
  t.deepEqual(values(u, 'MountAPIVFS'), ['yes']);
  t.deepEqual(values(u, 'User'), ['1000']);
  t.deepEqual(values(u, 'Group'), ['50']);
  t.deepEqual(values(u, 'SupplementaryGroups'), ['65534 7']);
  t.deepEqual(values(u, 'WorkingDirectory'), ['/srv/app']);
  t.deepEqual(values(u, 'Environment'), ['"GREETING=hello world"']);
  t.deepEqual(values(u, 'ExecStart'), ['"/bin/server" "--port" "80"']);
  t.deepEqual(values(u, 'ExecStopPost'), ['+"/rkt/bin/rkt-app-exited" "web" $EXIT_STATUS']);
  t.deepEqual(values(u, 'ExecStartPost'), ['-+"/rkt/bin/busybox" "touch" "/rkt/started/web"']);
  t.deepEqual(values(u, 'StandardInput'), ['null']);
  t.deepEqual(values(u, 'StandardOutput'), ['file:/run/rkt/stdout']);
  t.deepEqual(values(u, 'StandardError'), ['file:/run/rkt/stderr']);
  // systemd's own additions are unset, except what the app sets itself
  const unset = values(u, 'UnsetEnvironment')[0]!.split(' ');
  t.true(unset.includes('USER') && unset.includes('INVOCATION_ID') && unset.includes('PATH') === false);
  t.false(unset.includes('GREETING'));
  t.true(u.startsWith('# Generated by rkt'));
  t.regex(u, /^\[Service\]$/m);
});

test('an app that sets HOME keeps it: UnsetEnvironment skips the names the app sets', (t) => {
  const u = appUnit(spec({ env: [{ name: 'HOME', value: '/root' }, { name: 'USER', value: 'me' }] }), OPTS);
  const unset = values(u, 'UnsetEnvironment')[0]!.split(' ');
  t.false(unset.includes('HOME'));
  t.false(unset.includes('USER'));
  t.true(unset.includes('SHELL'));
});

test('a bad environment name names the app', (t) => {
  t.throws(() => appUnit(spec({ env: [{ name: 'bad-name', value: 'x' }] }), OPTS), { instanceOf: UnitError, message: /app "web".*bad-name/ });
});

test('capabilities: the bounding set always, ambient only for a non-root app given a retain set', (t) => {
  const root = appUnit(spec(), OPTS);
  t.deepEqual(values(root, 'CapabilityBoundingSet'), [DEFAULT_CAPABILITIES.join(' ')]);
  t.deepEqual(values(root, 'AmbientCapabilities'), []);
  const retained = { capabilities: ['CAP_NET_BIND_SERVICE'], capabilitiesRetain: ['CAP_NET_BIND_SERVICE'], noNewPrivileges: true, app: [], pod: [] };
  const user = appUnit(spec({ uid: 1000, gid: 1000, isolators: retained }), OPTS);
  t.deepEqual(values(user, 'CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE']);
  t.deepEqual(values(user, 'AmbientCapabilities'), ['CAP_NET_BIND_SERVICE']);
  t.deepEqual(values(user, 'NoNewPrivileges'), ['yes']);
  const none = appUnit(spec({ isolators: { capabilities: [], capabilitiesRetain: [], noNewPrivileges: false, app: [], pod: [] } }), OPTS);
  // an empty assignment is systemd's "no capabilities at all"
  t.deepEqual(values(none, 'CapabilityBoundingSet'), ['']);
  t.deepEqual(values(none, 'NoNewPrivileges'), []);
});

test('memory and CPU limits become MemoryMax= and CPUQuota=', (t) => {
  const iso = { capabilities: [], noNewPrivileges: false, app: [{ name: 'os/linux/oom-score-adj', value: -500 }], pod: [], memoryLimit: 256 * 1024 * 1024, cpuLimitMillis: 1500 };
  const u = appUnit(spec({ isolators: iso }), OPTS);
  t.deepEqual(values(u, 'MemoryMax'), [String(256 * 1024 * 1024)]);
  t.deepEqual(values(u, 'CPUQuota'), ['150%']);
  t.deepEqual(values(u, 'OOMScoreAdjust'), ['-500']);
  t.is(cpuQuota(250), '25%');
  t.is(cpuQuota(1), '0.1%');
  t.is(cpuQuota(15), '1.5%');
  t.is(cpuQuota(2000), '200%');
  t.throws(() => cpuQuota(0), { instanceOf: UnitError });
  t.deepEqual(values(appUnit(spec(), OPTS), 'MemoryMax'), []);
});

test('read-only rootfs: the root read-only, read-write volumes writable', (t) => {
  const mounts = [
    { volume: 'data', kind: 'host' as const, source: '/srv/data', target: '/data', readOnly: false, recursive: false },
    { volume: 'conf', kind: 'host' as const, source: '/etc/app', target: '/etc/app', readOnly: true, recursive: false },
    { volume: 'sp', kind: 'empty' as const, source: '/pod/volumes/sp', target: '/with space', readOnly: false, recursive: false },
  ];
  const u = appUnit(spec({ readOnlyRootFS: true, mounts }), OPTS);
  t.deepEqual(values(u, 'ReadOnlyPaths'), ['/']);
  t.deepEqual(values(u, 'ReadWritePaths'), ['-/data -"/with space"']);
  t.deepEqual(values(appUnit(spec({ mounts }), OPTS), 'ReadOnlyPaths'), []);
});

test('a terminal for interactive apps, and flavor extras last', (t) => {
  const u = appUnit(spec(), {
    stdio: { input: 'tty', output: 'tty', error: 'tty', ttyPath: '/dev/ttyS0', ttyRows: 40, ttyColumns: 120 },
    extra: [['Slice', 'machine.slice']],
    type: 'simple',
  });
  t.deepEqual(values(u, 'TTYPath'), ['/dev/ttyS0']);
  t.deepEqual(values(u, 'TTYRows'), ['40']);
  t.deepEqual(values(u, 'TTYColumns'), ['120']);
  t.deepEqual(values(u, 'Type'), ['simple']);
  t.true(u.trimEnd().endsWith('Slice=machine.slice'));
});

test('a private /dev keeps exactly the terminal an interactive app is given', (t) => {
  const stdio = { input: 'tty', output: 'tty', error: 'tty', ttyPath: '/dev/ttyS0' };
  const u = appUnit(spec(), { stdio, privateDevices: true });
  t.deepEqual(values(u, 'PrivateDevices'), ['yes']);
  // systemd adds no TTYPath= device to a private /dev: bound in, and let through the device policy
  t.deepEqual(values(u, 'DeviceAllow'), ['/dev/ttyS0 rw']);
  t.deepEqual(values(u, 'BindPaths'), ['/dev/ttyS0']);
  const noTty = appUnit(spec(), { ...OPTS, privateDevices: true });
  t.deepEqual(values(noTty, 'PrivateDevices'), ['yes']);
  t.deepEqual(values(noTty, 'DeviceAllow'), []);
  t.deepEqual(values(noTty, 'BindPaths'), []);
  // without a private /dev (nspawn: the container's /dev) nothing changes
  const shared = appUnit(spec(), { stdio });
  t.deepEqual(values(shared, 'PrivateDevices'), []);
  t.deepEqual(values(shared, 'DeviceAllow'), []);
  t.deepEqual(values(shared, 'BindPaths'), []);
});

test('specifiers in the working directory and image name are escaped', (t) => {
  const u = appUnit(spec({ workingDirectory: '/data/100%', imageName: 'example.com/%n' }), OPTS);
  t.deepEqual(values(u, 'WorkingDirectory'), ['/data/100%%']);
  t.regex(u, /^Description=rkt app web \(example\.com\/%%n\)$/m);
});

test('the pod target wants every app', (t) => {
  const u = podTarget(['a', 'b']);
  t.deepEqual(values(u, 'Wants'), ['a.service', 'b.service']);
  t.regex(u, /^\[Unit\]$/m);
});

test('credential entries: one per id the flavor root does not know, none twice', (t) => {
  const passwd = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n';
  const group = 'root:x:0:\nnogroup:x:65534:\n';
  const specs = [spec({ uid: 1000, gid: 50, supplementaryGids: [65534, 7] }), spec({ name: 'b', uid: 1000, gid: 7 }), spec({ name: 'c' })];
  t.deepEqual(credentialEntries(specs, passwd, group), {
    passwd: ['rkt-u1000:x:1000:50:rkt app user:/:/nonexistent'],
    group: ['rkt-g50:x:50:', 'rkt-g7:x:7:'],
  });
  t.deepEqual(credentialEntries([spec()], passwd, group), { passwd: [], group: [] });
});

test('event handlers: units of their own with the app context; the app requires pre-start and starts post-stop', (t) => {
  const s = spec({ uid: 1000, gid: 50, eventHandlers: { preStart: ['/bin/prep', '100%'], postStop: ['/bin/clean'] } });
  const files = appUnitFiles(s, { ...OPTS, ...reportHooks(s), hooksInStage1Root: true, hooksPrivileged: true });
  t.deepEqual(
    files.map(([n]) => n),
    ['web.service', 'web.pre-start.service', 'web.post-stop.service'],
  );
  const [app, pre, post] = files.map(([, text]) => text) as [string, string, string];
  t.true(app.includes('\nRequires=web.pre-start.service\nAfter=web.pre-start.service\n'));
  t.true(app.includes('\nOnSuccess=web.post-stop.service\nOnFailure=web.post-stop.service\n'));
  // the app's own exit is only noted: it is reported once post-stop has run
  t.deepEqual(values(app, 'ExecStopPost'), ['+"/rkt/bin/rkt-app-exited" "--defer" "web" "${EXIT_CODE}:${EXIT_STATUS}:${SERVICE_RESULT}"']);
  for (const h of [pre, post]) {
    t.deepEqual(values(h, 'Type'), ['oneshot']);
    t.deepEqual(values(h, 'User'), ['1000']);
    t.deepEqual(values(h, 'RootDirectory'), ['/opt/stage2/web/rootfs']);
    t.deepEqual(values(h, 'StandardInput'), ['null']);
    t.deepEqual(values(h, 'ExecStartPost'), []);
    t.deepEqual(values(h, 'Environment'), values(app, 'Environment'));
  }
  t.deepEqual(values(pre, 'ExecStart'), ['"/bin/prep" "100%%"']);
  // it tells the host the pod is up, so that a long handler is not taken for a stuck boot
  t.deepEqual(values(pre, 'ExecStartPre'), ['-+"/rkt/bin/rkt-report" "pre-start" "web"']);
  t.deepEqual(values(post, 'ExecStartPre'), []);
  t.deepEqual(values(pre, 'TimeoutStartSec'), ['infinity']);
  t.deepEqual(values(pre, 'ExecStopPost'), ['+"/rkt/bin/rkt-app-exited" "--pre-start" "web" "${EXIT_CODE}:${EXIT_STATUS}:${SERVICE_RESULT}"']);
  t.deepEqual(values(post, 'ExecStopPost'), ['+"/rkt/bin/rkt-app-exited" "--post-stop" "web" "${EXIT_CODE}:${EXIT_STATUS}:${SERVICE_RESULT}"']);
  t.true(post.includes('\nDefaultDependencies=no\nBefore=shutdown.target\nConditionPathExists=/rkt/deferred/web\n'));
  // an app whose input is a stream (kvm's socket, nspawn's --interactive FIFO) keeps it: its handlers read nothing
  const streamed = appUnitFiles(s, { ...OPTS, stdio: { ...OPTS.stdio, input: 'file:/run/rkt/io/web/stdin' }, ...reportHooks(s), after: ['rkt-agent.service'] });
  t.deepEqual(values(streamed[0]![1], 'StandardInput'), ['file:/run/rkt/io/web/stdin']);
  for (const [, h] of streamed.slice(1)) {
    t.deepEqual(values(h, 'StandardInput'), ['null']);
    t.true(h.includes('\nAfter=rkt-agent.service\n'));
  }
  // without handlers: one unit, reported at once
  const plain = appUnitFiles(spec(), { ...OPTS, ...reportHooks(spec()) });
  t.is(plain.length, 1);
  t.deepEqual(values(plain[0]![1], 'ExecStopPost'), ['"/rkt/bin/rkt-app-exited" "web" "${EXIT_CODE}:${EXIT_STATUS}:${SERVICE_RESULT}"']);
});

