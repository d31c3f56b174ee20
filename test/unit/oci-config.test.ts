import test from 'ava';
import fc from 'fast-check';
import { ISOLATOR } from '../../src/appc/isolators.js';
import { RLIMITS_ANNOTATION, appRlimits } from '../../src/appc/rlimits.js';
import { appNameFor, mapConfig, mapProcess } from '../../src/oci/config.js';
import { OciError } from '../../src/oci/errors.js';
import { parseRuntimeApp } from '../../src/appc/pod-manifest.js';
import { assertTypedError, fuzz, mutationOf, mutate } from '../helpers/fuzz.js';

// OCI config.json -> what the runtime runs: every field mapped, accepted for
// a stated reason, or refused by name.

const CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE'];

/** containerd 1.6's default spec, as the CRI plugin fills it for a container. */
function config(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ociVersion: '1.0.2-dev',
    process: {
      user: { uid: 1000, gid: 1000, additionalGids: [1000, 50] },
      args: ['/bin/server', '--port', '80'],
      env: ['PATH=/usr/bin:/bin', 'A=b=c'],
      cwd: '/srv',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
      oomScoreAdj: 500,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'web-0',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: '/etc/hosts', type: 'bind', source: '/var/lib/containerd/sb/hosts', options: ['rbind', 'rprivate', 'rw'] },
      { destination: '/etc/resolv.conf', type: 'bind', source: '/var/lib/containerd/sb/resolv.conf', options: ['rbind', 'rprivate', 'ro'] },
      { destination: '/dev/shm', type: 'bind', source: '/run/containerd/sb/shm', options: ['rbind', 'rprivate', 'rw'] },
      { destination: '/data', source: 'data', options: ['bind'] },
    ],
    annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'sb1', 'io.kubernetes.cri.container-name': 'web' },
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }], memory: { limit: 268435456 }, cpu: { shares: 512, quota: 50000, period: 100000 }, hugepageLimits: [] },
      cgroupsPath: 'kubepods-besteffort.slice:cri-containerd:abc',
      namespaces: [{ type: 'pid' }, { type: 'ipc', path: '/proc/42/ns/ipc' }, { type: 'uts', path: '/proc/42/ns/uts' }, { type: 'mount' }, { type: 'network', path: '/proc/42/ns/net' }],
      maskedPaths: ['/proc/kcore'],
      readonlyPaths: ['/proc/sys'],
    },
    ...over,
  };
}

const isolator = (isolators: { name: string; value: unknown }[] | undefined, name: string) => isolators?.find((i) => i.name === name)?.value;

test('a CRI container maps to an app: command, identity, mounts, isolators, rlimits, read-only root', (t) => {
  const plan = mapConfig('0123456789abcdef0123', config(), '/b');
  t.is(plan.role, 'container');
  t.is(plan.sandboxId, 'sb1');
  t.is(plan.rootfs, '/b/rootfs');
  t.is(plan.netns, undefined, "a container's namespace paths are its sandbox's");
  const ra = plan.app!;
  t.is(ra.name, 'web-0123456789ab');
  t.deepEqual(ra.app!.exec, ['/bin/server', '--port', '80']);
  t.is(ra.app!.user, '1000');
  t.is(ra.app!.group, '1000');
  t.deepEqual(ra.app!.supplementaryGIDs, [1000, 50]);
  t.deepEqual(ra.app!.environment, [
    { name: 'PATH', value: '/usr/bin:/bin' },
    { name: 'A', value: 'b=c' },
  ]);
  t.is(ra.app!.workingDirectory, '/srv');
  t.true(ra.readOnlyRootFS);
  const iso = ra.app!.isolators;
  t.deepEqual(isolator(iso, ISOLATOR.capabilitiesRetain), { set: CAPS });
  t.is(isolator(iso, ISOLATOR.noNewPrivileges), true);
  t.is(isolator(iso, ISOLATOR.oomScoreAdj), 500);
  t.deepEqual(isolator(iso, ISOLATOR.memory), { limit: '268435456' });
  t.deepEqual(isolator(iso, ISOLATOR.cpu), { limit: '500m' });
  t.is(isolator(iso, ISOLATOR.cpuShares), 512);
  t.deepEqual(
    ra.mounts?.map((m) => [m.path, m.appVolume?.source, m.appVolume?.readOnly, m.appVolume?.recursive]),
    [
      ['/etc/hosts', '/var/lib/containerd/sb/hosts', false, true],
      ['/etc/resolv.conf', '/var/lib/containerd/sb/resolv.conf', true, true],
      ['/data', '/b/data', false, false],
    ],
    'binds become volumes (a relative source is the bundle\'s); /dev/shm and the kernel file systems are the pod\'s',
  );
  t.deepEqual(appRlimits(ra.name, ra.annotations), [{ type: 'RLIMIT_NOFILE', unitKey: 'LimitNOFILE', soft: '1024', hard: '1024' }]);
  t.notThrows(() => parseRuntimeApp(JSON.parse(JSON.stringify(ra))), 'the runtime app is a valid pod manifest entry');
});

test('a sandbox takes the network namespace and hostname; a config without CRI annotations is a standalone container', (t) => {
  const sb = mapConfig('sb1', config({ annotations: { 'io.kubernetes.cri.container-type': 'sandbox' } }), '/b');
  t.is(sb.role, 'sandbox');
  t.is(sb.netns, '/proc/42/ns/net');
  t.is(sb.hostname, 'web-0');
  t.is(sb.app, undefined, "the sandbox's own process (pause) is not run");
  const plain = mapConfig('ctr-run', config({ annotations: {} }), '/b');
  t.is(plain.role, 'standalone');
  t.is(plain.app?.name, 'ctr-run');
  t.is(plain.netns, '/proc/42/ns/net');
});

const refusals: [string, Record<string, unknown>, RegExp][] = [
  ['seccomp', { linux: { ...(config().linux as object), seccomp: { defaultAction: 'SCMP_ACT_ERRNO' } } }, /^linux\.seccomp is not supported/],
  ['sysctl', { linux: { sysctl: { 'net.ipv4.ip_forward': '1' } } }, /^linux\.sysctl is not supported/],
  ['uid mappings', { linux: { uidMappings: [{ containerID: 0, hostID: 1000, size: 1 }] } }, /^linux\.uidMappings/],
  ['hooks', { hooks: { prestart: [{ path: '/bin/true' }] } }, /^config\.json\.hooks is not supported/],
  ['a user namespace', { linux: { namespaces: [{ type: 'user' }] } }, /linux\.namespaces\[0\]\.type "user"/],
  ['apparmor', { process: { args: ['/x'], apparmorProfile: 'cri-containerd.apparmor.d' } }, /^process\.apparmorProfile/],
  ['ambient capabilities', { process: { args: ['/x'], capabilities: { bounding: ['CAP_KILL'], ambient: ['CAP_KILL'] } } }, /process\.capabilities\.ambient/],
  ['effective beyond bounding', { process: { args: ['/x'], capabilities: { bounding: ['CAP_KILL'], effective: ['CAP_CHOWN'] } } }, /process\.capabilities\.effective holds CAP_CHOWN/],
  ['an unknown capability', { process: { args: ['/x'], capabilities: { bounding: ['CAP_FLY'] } } }, /"CAP_FLY" is not a Linux capability/],
  ['a tmpfs elsewhere', { mounts: [{ destination: '/tmp', type: 'tmpfs', source: 'tmpfs' }] }, /^mounts\[0\]: a tmpfs mount on \/tmp/],
  ['noexec on a bind', { mounts: [{ destination: '/x', type: 'bind', source: '/y', options: ['rbind', 'noexec'] }] }, /^mounts\[0\]\.options: "noexec"/],
  ['pids limit', { linux: { resources: { pids: { limit: 10 } } } }, /^linux\.resources\.pids/],
  ['swap', { linux: { resources: { memory: { limit: 10, swap: 20 } } } }, /^linux\.resources\.memory\.swap/],
  ['cpusets', { linux: { resources: { cpu: { cpus: '0-1' } } } }, /^linux\.resources\.cpu\.cpus/],
  ['device rules that allow first', { linux: { resources: { devices: [{ allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }] } } }, /devices must start by denying/],
  ['hugepages', { linux: { resources: { hugepageLimits: [{ pageSize: '2MB', limit: 1024 }] } } }, /hugepageLimits\[0\]/],
  ['umask', { process: { args: ['/x'], user: { uid: 0, gid: 0, umask: 18 } } }, /^process\.user\.umask/],
  ['a bad rlimit', { process: { args: ['/x'], rlimits: [{ type: 'RLIMIT_NOFILE', soft: 2048, hard: 1024 }] } }, /process\.rlimits\[0\]: soft limit 2048 is above the hard limit 1024/],
  ['an unknown rlimit', { process: { args: ['/x'], rlimits: [{ type: 'RLIMIT_FOO', soft: 1, hard: 1 }] } }, /process\.rlimits\[0\]\.type "RLIMIT_FOO"/],
  ['no args', { process: { args: [] } }, /^process\.args is empty/],
  ['a relative cwd', { process: { args: ['/x'], cwd: 'srv' } }, /^process\.cwd "srv" must be an absolute path/],
  ['an env entry without =', { process: { args: ['/x'], env: ['NOVALUE'] } }, /^process\.env\[0\] "NOVALUE" is not NAME=VALUE/],
  ['ociVersion 2', { ociVersion: '2.0.0' }, /^ociVersion "2\.0\.0" is not 1\.x/],
  ['a container without its sandbox', { annotations: { 'io.kubernetes.cri.container-type': 'container' } }, /io\.kubernetes\.cri\.sandbox-id"\] is missing/],
  ['an unknown container type', { annotations: { 'io.kubernetes.cri.container-type': 'vm' } }, /is "vm"; this runtime knows sandbox and container/],
];

for (const [what, over, message] of refusals) {
  test(`refused, naming the field: ${what}`, (t) => {
    const err = t.throws(() => mapConfig('c1', config(over), '/b'), { instanceOf: OciError });
    t.regex(err!.message, message);
    t.false(err!.message.includes('\n'), 'one line');
  });
}

test('empty values of fields this runtime does not take are no request, and are accepted', (t) => {
  t.notThrows(() => mapConfig('c1', config({ hooks: {}, linux: { seccomp: null, sysctl: {}, devices: [], uidMappings: [] } }), '/b'));
  t.notThrows(() => mapProcess({ args: ['/x'], apparmorProfile: '', selinuxLabel: '' }));
});

test('app names are AC names, unique per container', (t) => {
  t.is(appNameFor('ABC_def.1', {}), 'abc-def-1');
  t.is(appNameFor('---', {}), 'app');
  t.is(appNameFor('c1', { 'io.kubernetes.cri.container-name': 'My App' }), 'my-app-c1');
  t.not(appNameFor('aaaa1', { 'io.kubernetes.cri.container-name': 'x' }), appNameFor('bbbb1', { 'io.kubernetes.cri.container-name': 'x' }));
});

test('rlimits travel in an annotation that refuses what stage0 could not have written', (t) => {
  t.throws(() => appRlimits('a', [{ name: RLIMITS_ANNOTATION, value: 'nope' }]), { message: /is not JSON/ });
  t.throws(() => appRlimits('a', [{ name: RLIMITS_ANNOTATION, value: '[{"type":"RLIMIT_NOFILE","soft":"-1","hard":1}]' }]), { message: /non-negative integer/ });
  t.deepEqual(appRlimits('a', [{ name: RLIMITS_ANNOTATION, value: '[{"type":"RLIMIT_CORE","soft":0,"hard":"18446744073709551615"}]' }]), [{ type: 'RLIMIT_CORE', unitKey: 'LimitCORE', soft: '0', hard: 'infinity' }]);
});

const tricky = fc.constantFrom('', '/', '..', 'rootfs', 'bind', 'rbind', 'ro', 'tmpfs', 'network', 'user', 'sandbox', 'container', 'RLIMIT_NOFILE', 'CAP_SYS_ADMIN', '1.0.2', 'a\u0000b', '\u001b[31m', '\u202e', '__proto__', 'a'.repeat(3000));
const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), tricky, fc.integer(), fc.constantFrom(-1, 0, 2 ** 64, 1.5, null, true, false, [], {}));
const keys = fc.constantFrom('type', 'path', 'options', 'source', 'destination', 'limit', 'quota', 'period', 'shares', 'soft', 'hard', 'uid', 'gid', 'additionalGids', 'terminal', 'seccomp', 'ambient', 'readonly', '__proto__');

test('fuzz: any mutation of a valid config maps, or is refused with one printable line of OciError', (t) => {
  fuzz(
    t,
    fc.property(fc.constantFrom(config(), config({ annotations: { 'io.kubernetes.cri.container-type': 'sandbox' } }), config({ annotations: {} })), fc.array(mutationOf(keys, value), { minLength: 1, maxLength: 5 }), (base, mutations) => {
      const doc = mutate(base, mutations);
      let plan;
      try {
        plan = mapConfig('fuzz1', doc, '/bundle');
      } catch (err) {
        assertTypedError(err, OciError, doc);
        return;
      }
      if (plan.app !== undefined) parseRuntimeApp(JSON.parse(JSON.stringify(plan.app)));
    }),
  );
});

test('fuzz: random JSON never crashes the mapping', (t) => {
  fuzz(
    t,
    fc.property(value, (doc) => {
      try {
        mapConfig('fuzz2', doc, '/bundle');
      } catch (err) {
        assertTypedError(err, OciError, doc);
      }
    }),
  );
});
