import test from 'ava';
import { UsageError } from '../../src/errors.js';
import { parseSandboxPortFlag } from '../../src/net/ports.js';
import { isMutable, MUTABLE_ANNOTATION } from '../../src/pod/mutable.js';
import { parseSandboxArgs } from '../../src/pod/sandbox.js';

// rkt app sandbox's command line: pod flags only, rkt's sandbox --port form,
// annotations, and the mutable mark on the manifest.

test('a sandbox manifest has no apps, the mutable annotation and the annotations asked for', (t) => {
  const { run, manifest } = parseSandboxArgs(['--net=default', '--dns=10.0.0.1', '--hosts-entry=10.1.1.1=peer', '--annotation=example.com/a=1', '--user-label', 'tier=web', '--uuid-file-save=/tmp/u']);
  t.deepEqual(manifest.apps, []);
  t.true(isMutable(manifest));
  t.deepEqual(manifest.annotations, [
    { name: MUTABLE_ANNOTATION, value: 'true' },
    { name: 'example.com/a', value: '1' },
  ]);
  t.deepEqual(manifest.userLabels, { tier: 'web' });
  t.deepEqual(run.pod.net, ['default']);
  t.deepEqual(run.pod.dns, ['10.0.0.1']);
  t.deepEqual(run.pod.hostsEntry, ['10.1.1.1=peer']);
  t.is(run.pod.uuidFileSave, '/tmp/u');
});

test('a sandbox refuses images, app-configuring flags and the mutable annotation', (t) => {
  t.throws(() => parseSandboxArgs(['example.com/app']), { instanceOf: UsageError, message: /takes no image/ });
  t.throws(() => parseSandboxArgs(['--volume=v,kind=empty']), { instanceOf: UsageError, message: /does not take the volumes flag/ });
  t.throws(() => parseSandboxArgs(['--interactive']), { instanceOf: UsageError, message: /interactive/ });
  t.throws(() => parseSandboxArgs([`--annotation=${MUTABLE_ANNOTATION}=false`]), { instanceOf: UsageError, message: /rkt sets it/ });
  t.throws(() => parseSandboxArgs(['--annotation=novalue']), { instanceOf: UsageError, message: /KEY=VALUE/ });
  t.throws(() => parseSandboxArgs(['--net=host', '--port=http:tcp:80:0.0.0.0:8080']), { instanceOf: UsageError, message: /--net=host/ });
});

test("--port in rkt's sandbox form names the pod port itself", (t) => {
  t.deepEqual(parseSandboxPortFlag('http:tcp:8080:127.0.0.1:18080'), { name: 'http', hostPort: 18080, hostIP: '127.0.0.1', podPort: { name: 'http', protocol: 'tcp', port: 8080 } });
  t.deepEqual(parseSandboxPortFlag('dns:udp:53:0.0.0.0:5353'), { name: 'dns', hostPort: 5353, podPort: { name: 'dns', protocol: 'udp', port: 53 } });
  for (const bad of ['http:8080', 'http:sctp:80:0.0.0.0:80', 'http:tcp:80:nohost:80', 'http:tcp:0:0.0.0.0:80', 'http:tcp:80:0.0.0.0:70000', 'Bad:tcp:80:0.0.0.0:80']) {
    t.throws(() => parseSandboxPortFlag(bad), { instanceOf: UsageError }, bad);
  }
});
