import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import { HOSTS_DEFAULTS, makeResolvConf, parseHostsEntries, planHosts, planResolvConf, validateDnsOptions, writePodDnsFiles } from '../../src/net/dns.js';
import { PortInUseError } from '../../src/net/errors.js';
import { parseSave, tokenizeRule } from '../../src/net/iptables.js';
import { checkHostPortsFree, parsePortFlag, portmapRuntimeConfig, resolvePortMappings } from '../../src/net/ports.js';
import { podHostsPath, podResolvConfPath } from '../../src/net/state.js';

function tmp(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'net-dns-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const apps = [
  { app: 'web', ports: [{ name: 'http', protocol: 'tcp', port: 80 }, { name: 'dns', protocol: 'UDP', port: 53 }] },
  { app: 'rng', ports: [{ name: 'range', protocol: 'tcp', port: 9000, count: 3 }] },
];

test('--port: NAME:HOSTPORT and NAME:HOSTIP:HOSTPORT', (t) => {
  t.deepEqual(parsePortFlag('http:8080'), { name: 'http', hostPort: 8080 });
  t.deepEqual(parsePortFlag('80-tcp:127.0.0.1:8080'), { name: '80-tcp', hostPort: 8080, hostIP: '127.0.0.1' });
  t.deepEqual(parsePortFlag('http:[::1]:8080'), { name: 'http', hostPort: 8080, hostIP: '::1' });
  t.throws(() => parsePortFlag('http'), { instanceOf: UsageError, message: /NAME:HOSTPORT/ });
  t.throws(() => parsePortFlag(':80'), { instanceOf: UsageError });
  t.throws(() => parsePortFlag('http:0'), { instanceOf: UsageError, message: /outside 1-65535/ });
  t.throws(() => parsePortFlag('http:70000'), { instanceOf: UsageError, message: /outside/ });
  t.throws(() => parsePortFlag('http:eighty'), { instanceOf: UsageError, message: /not a number/ });
  t.throws(() => parsePortFlag('http:localhost:80'), { instanceOf: UsageError, message: /not an IP address/ });
});

test('--port: only ports the images declare, ranges port by port', (t) => {
  t.deepEqual(resolvePortMappings([parsePortFlag('http:8080'), parsePortFlag('dns:127.0.0.1:5353')], apps), [
    { name: 'http', protocol: 'tcp', hostPort: 8080, podPort: 80 },
    { name: 'dns', protocol: 'udp', hostPort: 5353, podPort: 53, hostIP: '127.0.0.1' },
  ]);
  t.deepEqual(
    resolvePortMappings([{ name: 'range', hostPort: 19000 }], apps).map((m) => `${m.hostPort}->${m.podPort}`),
    ['19000->9000', '19001->9001', '19002->9002'],
  );
  // a pod manifest may give the port itself
  t.deepEqual(resolvePortMappings([{ name: 'extra', hostPort: 81, podPort: { name: 'extra', protocol: 'tcp', port: 8081 } }], []), [{ name: 'extra', protocol: 'tcp', hostPort: 81, podPort: 8081 }]);
  t.throws(() => resolvePortMappings([parsePortFlag('ssh:2222')], apps), { instanceOf: UsageError, message: /no app in the pod declares a port named "ssh" \(declared: http, dns, range\)/ });
  t.throws(() => resolvePortMappings([parsePortFlag('ssh:2222')], []), { message: /the images declare no ports/ });
  t.throws(() => resolvePortMappings([parsePortFlag('http:8080'), parsePortFlag('http:8081')], apps), { message: /forwarded more than once/ });
  t.throws(() => resolvePortMappings([{ name: 'range', hostPort: 65534 }], apps), { message: /beyond host port 65535/ });
  t.throws(() => resolvePortMappings([{ name: 'range', hostPort: 8000 }, { name: 'http', hostPort: 8001 }], apps), { message: /host port 8001\/tcp is given to both/ });
});

test('--port: a name two apps declare is ambiguous unless the pod manifest gives the port', (t) => {
  const two = [
    { app: 'web', ports: [{ name: 'http', protocol: 'tcp', port: 80 }] },
    { app: 'api', ports: [{ name: 'http', protocol: 'tcp', port: 8080 }, { name: 'admin', protocol: 'tcp', port: 9000 }] },
  ];
  // declaring it twice is fine as long as nobody forwards it
  t.deepEqual(resolvePortMappings([parsePortFlag('admin:9001')], two), [{ name: 'admin', protocol: 'tcp', hostPort: 9001, podPort: 9000 }]);
  t.throws(() => resolvePortMappings([parsePortFlag('http:8080')], two), { instanceOf: UsageError, message: /port "http" is declared by apps "web" and "api", so forwarding it is ambiguous/ });
  t.deepEqual(resolvePortMappings([{ name: 'http', hostPort: 81, podPort: { name: 'http', protocol: 'tcp', port: 8080 } }], two), [{ name: 'http', protocol: 'tcp', hostPort: 81, podPort: 8080 }]);
});

test('portmap runtime configuration', (t) => {
  t.deepEqual(portmapRuntimeConfig([{ name: 'http', protocol: 'tcp', hostPort: 8080, podPort: 80, hostIP: '127.0.0.1' }]), {
    portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
  });
});

test('a host port with a listening socket is refused', async (t) => {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.teardown(() => srv.close());
  const port = (srv.address() as net.AddressInfo).port;
  await t.throwsAsync(checkHostPortsFree([{ name: 'http', protocol: 'tcp', hostPort: port, podPort: 80, hostIP: '127.0.0.1' }]), { instanceOf: PortInUseError, message: new RegExp(`host port ${port}/tcp for port "http" is already in use`) });
  srv.close();
  await new Promise((r) => setTimeout(r, 50));
  await t.notThrowsAsync(checkHostPortsFree([{ name: 'http', protocol: 'tcp', hostPort: port, podPort: 80, hostIP: '127.0.0.1' }]));
});

test('--dns flags: host and none alone, addresses only', (t) => {
  t.notThrows(() => validateDnsOptions({ dns: ['8.8.8.8', '2001:db8::1'], dnsSearch: ['example.com'], dnsOpt: ['rotate'], dnsDomain: 'example.org' }));
  t.throws(() => validateDnsOptions({ dns: ['host', '8.8.8.8'] }), { instanceOf: UsageError, message: /--dns=host cannot be combined/ });
  t.throws(() => validateDnsOptions({ dns: ['none'], dnsSearch: ['x'] }), { instanceOf: UsageError, message: /--dns=none cannot be combined/ });
  t.throws(() => validateDnsOptions({ dns: ['dns.example.com'] }), { instanceOf: UsageError, message: /not an IP address/ });
  t.throws(() => validateDnsOptions({ dnsSearch: ['a b'] }), { instanceOf: UsageError });
});

test('resolv.conf: flags first, then the first network with DNS, else the image', (t) => {
  const nets = [
    { name: 'n0', dns: { nameservers: [], search: [], options: [] } },
    { name: 'n1', dns: { nameservers: ['10.1.0.53'], search: ['pod.example'], options: [], domain: 'example' } },
  ];
  const flags = planResolvConf({ dns: ['8.8.8.8', '4.2.2.2'], dnsDomain: 'example.org', dnsOpt: ['debug', 'rotate'], dnsSearch: ['example.com', 'example.gov'] }, nets);
  t.is(flags.source, 'flags');
  t.is(flags.content, '# Generated by rkt run\n\nsearch example.com example.gov\nnameserver 8.8.8.8\nnameserver 4.2.2.2\noptions debug rotate\ndomain example.org\n');
  const fromNet = planResolvConf({}, nets);
  t.like(fromNet, { source: 'network', network: 'n1' });
  t.is(fromNet.content, '# Generated by rkt from network n1\n\nsearch pod.example\nnameserver 10.1.0.53\ndomain example\n');
  t.deepEqual(planResolvConf({ dns: ['none'] }, nets), { source: 'image' });
  t.deepEqual(planResolvConf({}, [nets[0]!]), { source: 'image' });
  t.is(planResolvConf({ dnsSearch: ['only.search'] }, nets).content, '# Generated by rkt run\n\nsearch only.search\n');
});

test('resolv.conf: --dns=host uses the host file', (t) => {
  const f = path.join(tmp(t), 'resolv.conf');
  fs.writeFileSync(f, 'nameserver 127.0.0.53\n');
  t.deepEqual(planResolvConf({ dns: ['host'] }, [], f), { source: 'host', hostPath: f, content: 'nameserver 127.0.0.53\n' });
  t.is(makeResolvConf({ nameservers: ['1.1.1.1'], search: [], options: [] }, ''), 'nameserver 1.1.1.1\n');
});

test('hosts: entries grouped by address after the standard lines', (t) => {
  const h = parseHostsEntries(['198.51.100.0=host1,198.51.100.1=host2', '198.51.100.0=host3']);
  t.deepEqual(h.entries, [
    { ip: '198.51.100.0', names: ['host1', 'host3'] },
    { ip: '198.51.100.1', names: ['host2'] },
  ]);
  const plan = planHosts(h, { hostname: 'mypod', podIP: '172.16.28.5' });
  t.is(plan.source, 'flags');
  t.is(plan.content, `${HOSTS_DEFAULTS}172.16.28.5\tmypod\n\n198.51.100.0\thost1 host3\n198.51.100.1\thost2\n`);
  const none = planHosts(parseHostsEntries([]), {});
  t.is(none.source, 'image');
  t.is(none.fallback, HOSTS_DEFAULTS);
  t.true(parseHostsEntries(['host']).host);
  t.throws(() => parseHostsEntries(['host,1.2.3.4=x']), { instanceOf: UsageError });
  t.throws(() => parseHostsEntries(['db']), { instanceOf: UsageError, message: /IP=HOSTNAME/ });
  t.throws(() => parseHostsEntries(['1.2.3.4=bad name']), { instanceOf: UsageError, message: /not a host name/ });
});

test('DNS files are written under <pod>/netinfo only when they replace the image ones', (t) => {
  const pod = tmp(t);
  const files = writePodDnsFiles(pod, planResolvConf({ dns: ['10.0.0.2'] }, []), planHosts(parseHostsEntries([]), {}));
  t.is(files.resolvConf.path, podResolvConfPath(pod));
  t.is(fs.readFileSync(podResolvConfPath(pod), 'utf8'), '# Generated by rkt run\n\nnameserver 10.0.0.2\n');
  t.is(files.hosts.path, undefined);
  t.false(fs.existsSync(podHostsPath(pod)));
  writePodDnsFiles(pod, planResolvConf({ dns: ['none'] }, []), planHosts(parseHostsEntries(['10.0.0.9=db']), {}));
  t.false(fs.existsSync(podResolvConfPath(pod)));
  t.regex(fs.readFileSync(podHostsPath(pod), 'utf8'), /10\.0\.0\.9\tdb\n$/);
});

test('iptables-save lines are split as iptables-restore reads them', (t) => {
  t.deepEqual(tokenizeRule('-A POSTROUTING -s 172.16.28.2/32 -m comment --comment "name: \\"default\\" id: \\"u-1\\"" -j CNI-abc'), [
    '-A', 'POSTROUTING', '-s', '172.16.28.2/32', '-m', 'comment', '--comment', 'name: "default" id: "u-1"', '-j', 'CNI-abc',
  ]);
  const save = [
    '# Generated by iptables-save',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':CNI-HOSTPORT-DNAT - [0:0]',
    ':CNI-DN-1 - [0:0]',
    '-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"default\\" id: \\"u-1\\"" -m multiport --dports 8080,9000:9001 -j CNI-DN-1',
    'COMMIT',
  ].join('\n');
  const [nat] = parseSave(save);
  t.is(nat!.table, 'nat');
  t.deepEqual(nat!.chains, ['PREROUTING', 'CNI-HOSTPORT-DNAT', 'CNI-DN-1']);
  t.like(nat!.rules[0], { chain: 'CNI-HOSTPORT-DNAT', comment: 'dnat name: "default" id: "u-1"', target: 'CNI-DN-1' });
});
