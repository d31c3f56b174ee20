import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import {
  DEFAULT_RESTRICTED_SUBNET,
  DEFAULT_SUBNET,
  builtinNetworks,
  checkPluginsInstalled,
  findPlugin,
  loadNetworkConfigs,
  parseNetworkConfig,
  pluginDirs,
  requiredPlugins,
  selectNetworks,
} from '../../src/net/config.js';
import { NetworkConfigError } from '../../src/net/errors.js';
import { formatNetList, parseNetList } from '../../src/net/netlist.js';

function tmp(t: ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'net-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeConf(dir: string, file: string, body: unknown): string {
  fs.mkdirSync(path.join(dir, 'net.d'), { recursive: true });
  const p = path.join(dir, 'net.d', file);
  fs.writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body));
  return p;
}

const ptp = (name: string, subnet = '10.1.0.0/24') => ({ cniVersion: '0.4.0', name, type: 'ptp', ipam: { type: 'host-local', subnet } });

test('--net: nothing given means the default network', (t) => {
  t.deepEqual(parseNetList([]), { kind: 'contained', all: false, entries: [{ name: 'default', args: '' }] });
});

test('--net: names, per-network CNI args, several flags, all', (t) => {
  const r = parseNetList(['all,net1:IP=10.1.0.5', 'net2:IP=10.2.0.9;FOO=bar']);
  t.true(r.all);
  t.is(r.kind, 'contained');
  t.deepEqual(r.entries, [
    { name: 'net1', args: 'IP=10.1.0.5' },
    { name: 'net2', args: 'IP=10.2.0.9;FOO=bar' },
  ]);
  t.is(formatNetList(r), 'all,net1:IP=10.1.0.5,net2:IP=10.2.0.9;FOO=bar');
  // an IPv6 address survives: only the first colon separates the name
  t.deepEqual(parseNetList(['v6:IP=fd00::5']).entries, [{ name: 'v6', args: 'IP=fd00::5' }]);
  t.deepEqual(parseNetList(['default:IP=172.16.28.50']).entries, [{ name: 'default', args: 'IP=172.16.28.50' }]);
});

test('--net: host and none stand alone', (t) => {
  t.is(parseNetList(['host']).kind, 'host');
  t.is(parseNetList(['none']).kind, 'none');
  t.throws(() => parseNetList(['host,default']), { instanceOf: UsageError, message: /--net=host cannot be combined/ });
  t.throws(() => parseNetList(['none', 'net1']), { instanceOf: UsageError, message: /--net=none cannot be combined/ });
});

test('--net: bad values are usage errors', (t) => {
  t.throws(() => parseNetList(['a,,b']), { instanceOf: UsageError, message: /must not be empty/ });
  t.throws(() => parseNetList(['a', 'a:IP=1.2.3.4']), { instanceOf: UsageError, message: /"a" is given more than once/ });
  t.throws(() => parseNetList(['host:IP=1.2.3.4']), { instanceOf: UsageError, message: /takes no arguments/ });
  t.throws(() => parseNetList(['all:X=1']), { instanceOf: UsageError, message: /takes no arguments/ });
  t.throws(() => parseNetList(['-bad']), { instanceOf: UsageError, message: /not a valid network name/ });
  t.throws(() => parseNetList(['net1:IP']), { instanceOf: UsageError, message: /KEY=VALUE/ });
  t.throws(() => parseNetList(['net1:IP=1;=x']), { instanceOf: UsageError, message: /KEY=VALUE/ });
});

test('built-in networks: default masquerades with a default route, default-restricted is host-only', (t) => {
  const [def, restricted] = builtinNetworks();
  t.is(def!.name, 'default');
  t.like(def!.raw, { type: 'ptp', ipMasq: true, ipam: { type: 'host-local', subnet: DEFAULT_SUBNET, routes: [{ dst: '0.0.0.0/0' }] } });
  t.is(DEFAULT_SUBNET, '172.16.28.0/24');
  t.true(def!.ipMasq);
  t.is(restricted!.name, 'default-restricted');
  t.like(restricted!.raw, { type: 'ptp', ipMasq: false, ipam: { type: 'host-local', subnet: DEFAULT_RESTRICTED_SUBNET } });
  t.is((restricted!.raw.ipam as Record<string, unknown>).routes, undefined);
  t.false(restricted!.ipMasq);
});

test('config validation: every error names the file', (t) => {
  t.throws(() => parseNetworkConfig('{"name": "x", ', '/etc/rkt/net.d/10-x.conf'), { instanceOf: NetworkConfigError, message: /10-x\.conf is not valid JSON/ });
  t.throws(() => parseNetworkConfig('[]', 'f.conf'), { message: /f\.conf must hold a JSON object/ });
  t.throws(() => parseNetworkConfig('{"type": "ptp"}', 'f.conf'), { message: /f\.conf: "name"/ });
  t.throws(() => parseNetworkConfig('{"name": "a b", "type": "ptp"}', 'f.conf'), { message: /"name"/ });
  t.throws(() => parseNetworkConfig('{"name": "a"}', 'f.conf'), { message: /"type" must name a CNI plugin/ });
  t.throws(() => parseNetworkConfig('{"name": "a", "type": "../../bin/sh"}', 'f.conf'), { message: /not a path/ });
  t.throws(() => parseNetworkConfig('{"name": "a", "type": "ptp", "cniVersion": 4}', 'f.conf'), { message: /cniVersion/ });
  t.throws(() => parseNetworkConfig('{"name": "a", "type": "ptp", "ipam": {}}', 'f.conf'), { message: /"ipam"/ });
  t.throws(() => parseNetworkConfig('{"name": "a", "plugins": []}', 'f.conflist'), { message: /non-empty list/ });
  t.throws(() => parseNetworkConfig('{"name": "a", "plugins": [{"type": "ptp"}, {}]}', 'f.conflist'), { message: /plugins\[1\]\."type"/ });
});

test('config lists: plugins in order, masquerading detected in any of them', (t) => {
  const c = parseNetworkConfig(JSON.stringify({ cniVersion: '1.0.0', name: 'l', plugins: [{ type: 'bridge', ipMasq: true, ipam: { type: 'host-local' } }, { type: 'portmap', capabilities: { portMappings: true } }] }), 'l.conflist');
  t.true(c.list);
  t.deepEqual(c.plugins.map((p) => p.type), ['bridge', 'portmap']);
  t.true(c.ipMasq);
  t.deepEqual(requiredPlugins(c), ['bridge', 'host-local', 'portmap']);
});

test('loading: local overrides system, built-ins last unless overridden, by file name order', (t) => {
  const root = tmp(t);
  const local = path.join(root, 'etc');
  const system = path.join(root, 'lib');
  writeConf(local, '20-b.conf', ptp('b', '10.2.0.0/24'));
  writeConf(local, '50-shared.conf', ptp('shared', '10.5.0.0/24'));
  writeConf(system, '10-a.conflist', { cniVersion: '0.4.0', name: 'a', plugins: [{ type: 'ptp' }] });
  writeConf(system, '50-shared.conf', ptp('shared', '10.99.0.0/24'));
  writeConf(local, 'README', 'not a config');
  writeConf(local, '99-default.conf', ptp('default', '10.28.0.0/24'));
  const all = loadNetworkConfigs({ localConfig: local, systemConfig: system });
  t.deepEqual(
    all.map((c) => c.name),
    ['a', 'b', 'shared', 'default', 'default-restricted'],
  );
  t.like(all.find((c) => c.name === 'shared')!.raw, { ipam: { subnet: '10.5.0.0/24' } });
  t.is(all.find((c) => c.name === 'default')!.file, path.join(local, 'net.d', '99-default.conf'));
  t.is(all.find((c) => c.name === 'default-restricted')!.file, 'built-in');
  t.deepEqual(loadNetworkConfigs({ localConfig: path.join(root, 'none') }).map((c) => c.name), ['default', 'default-restricted']);
});

test('loading: two files of one directory defining a name is an error naming both', (t) => {
  const local = path.join(tmp(t), 'etc');
  const a = writeConf(local, '10-x.conf', ptp('x'));
  const b = writeConf(local, '20-x.conf', ptp('x'));
  const err = t.throws(() => loadNetworkConfigs({ localConfig: local }), { instanceOf: NetworkConfigError });
  t.true(err!.message.includes(a) && err!.message.includes(b), err!.message);
});

test('loading: a broken file fails the load with its name', (t) => {
  const local = path.join(tmp(t), 'etc');
  const p = writeConf(local, '10-broken.conf', '{ not json');
  t.throws(() => loadNetworkConfigs({ localConfig: local }), { instanceOf: NetworkConfigError, message: new RegExp(`${p} is not valid JSON`) });
});

test('selection: default alone, default-restricted added to named networks, all', (t) => {
  const local = path.join(tmp(t), 'etc');
  writeConf(local, '10-n1.conf', ptp('n1'));
  writeConf(local, '20-n2.conf', ptp('n2', '10.2.0.0/24'));
  const confs = loadNetworkConfigs({ localConfig: local });
  const names = (v: string[]) => selectNetworks(parseNetList(v), confs).map((s) => `${s.config.name}/${s.ifName}/${s.args}`);
  t.deepEqual(names([]), ['default/eth0/']);
  t.deepEqual(names(['default:IP=172.16.28.9']), ['default/eth0/IP=172.16.28.9']);
  t.deepEqual(names(['n2:IP=10.2.0.7']), ['n2/eth0/IP=10.2.0.7', 'default-restricted/eth1/']);
  // configuration order, not command-line order, as in rkt
  t.deepEqual(names(['default,n2,n1']), ['n1/eth0/', 'n2/eth1/', 'default/eth2/']);
  t.deepEqual(names(['all']), ['n1/eth0/', 'n2/eth1/', 'default/eth2/']);
  t.deepEqual(names(['default-restricted']), ['default-restricted/eth0/']);
  t.deepEqual(selectNetworks(parseNetList(['none']), confs), []);
  t.deepEqual(selectNetworks(parseNetList(['host']), confs), []);
});

test('selection: a user default-restricted replaces the built-in one when added implicitly', (t) => {
  const local = path.join(tmp(t), 'etc');
  writeConf(local, '10-n1.conf', ptp('n1'));
  writeConf(local, '90-dr.conf', ptp('default-restricted', '10.31.0.0/24'));
  const sel = selectNetworks(parseNetList(['n1']), loadNetworkConfigs({ localConfig: local }));
  t.deepEqual(sel.map((s) => s.config.name), ['n1', 'default-restricted']);
  t.like(sel[1]!.config.raw, { ipam: { subnet: '10.31.0.0/24' } });
});

test('selection: unknown networks are named in the error with the known ones', (t) => {
  const err = t.throws(() => selectNetworks(parseNetList(['nosuch,other']), builtinNetworks()), { instanceOf: NetworkConfigError });
  t.regex(err!.message, /networks not found: nosuch, other/);
  t.regex(err!.message, /configured networks: default, default-restricted/);
});

test('plugins: found in the first directory that has an executable, missing ones named', (t) => {
  const root = tmp(t);
  const d1 = path.join(root, 'd1');
  const d2 = path.join(root, 'd2');
  fs.mkdirSync(d1);
  fs.mkdirSync(d2);
  fs.writeFileSync(path.join(d1, 'ptp'), 'not executable');
  fs.writeFileSync(path.join(d2, 'ptp'), '#!/bin/sh\n', { mode: 0o755 });
  t.is(findPlugin('ptp', [d1, d2]), path.join(d2, 'ptp'));
  t.is(findPlugin('bridge', [d1, d2]), undefined);
  const conf = parseNetworkConfig(JSON.stringify(ptp('x')), 'x.conf');
  t.throws(() => checkPluginsInstalled(conf, [d1, d2]), { instanceOf: NetworkConfigError, message: /network "x" \(x\.conf\) needs the CNI plugin "host-local", which is not installed/ });
  t.deepEqual(pluginDirs('/etc/rkt'), ['/etc/rkt/net.d', '/usr/lib/rkt/plugins/net', '/usr/lib/cni', '/opt/cni/bin']);
});
