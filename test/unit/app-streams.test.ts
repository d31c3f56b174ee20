import test from 'ava';
import { UsageError } from '../../src/errors.js';
import {
  appStreams,
  attachActionFrom,
  attachFlags,
  parseAttachMode,
  parseStreamMode,
  refuseStreamModes,
  streamAnnotations,
  STREAM_ANNOTATION,
} from '../../src/appc/app-streams.js';
import { parseRunArgs } from '../../src/pod/run-args.js';
import { attachRequest, endpoints } from '../../stage1-kvm/attach.js';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';

test('stream modes: rkt\'s values per stream, kept as app annotations only when not the default', (t) => {
  t.is(parseStreamMode('stdin', 'stream'), 'stream');
  t.throws(() => parseStreamMode('stdin', 'log'), { instanceOf: UsageError, message: /one of null, stream, tty/ });
  t.throws(() => parseStreamMode('stdout', 'file'), { instanceOf: UsageError });
  t.deepEqual(streamAnnotations({ stdin: 'null', stdout: 'stream', stderr: 'log' }), [{ name: STREAM_ANNOTATION.stdout, value: 'stream' }]);
  t.deepEqual(appStreams('a', undefined), { stdin: 'null', stdout: 'log', stderr: 'log' });
  t.deepEqual(appStreams('a', [{ name: 'coreos.com/rkt/stage2/stdin', value: 'tty' }, { name: 'coreos.com/rkt/stage2/stdout', value: 'tty' }]), { stdin: 'tty', stdout: 'tty', stderr: 'log' });
  // a hand-written manifest cannot sneak in a mode
  t.throws(() => appStreams('a', [{ name: 'coreos.com/rkt/stage2/stdout', value: 'interactive' }]), { instanceOf: UsageError });
  t.throws(() => appStreams('a', [{ name: 'coreos.com/rkt/stage2/stdin', value: 'tty' }]), { message: /go together/ });
});

test('run/prepare take --stdin, --stdout and --stderr after the image they apply to', (t) => {
  const r = parseRunArgs(['img', '--stdin=stream', '--stdout', 'tty', '--stderr=log']);
  t.is(r.apps[0]!.stdin, 'stream');
  t.is(r.apps[0]!.stdout, 'tty');
  t.is(r.apps[0]!.stderr, 'log');
  t.throws(() => parseRunArgs(['--stdin=stream', 'img']), { instanceOf: UsageError, message: /applies to an app/ });
});

test('attach modes become rkt\'s attach entrypoint flags and back', (t) => {
  t.deepEqual(attachFlags(parseAttachMode('auto'), undefined), ['--action=auto-attach']);
  t.deepEqual(attachFlags(parseAttachMode('list'), 'web'), ['--action=list', '--app=web']);
  const custom = parseAttachMode('stdin,stderr');
  const flags = attachFlags(custom, 'web');
  t.deepEqual(flags, ['--action=custom-attach', '--app=web', '--tty-in=false', '--tty-out=false', '--stdin=true', '--stdout=false', '--stderr=true']);
  const values = new Map(flags.map((f) => f.slice(2).split('=') as [string, string]));
  t.deepEqual(attachActionFrom(values), custom);
  t.deepEqual(parseAttachMode('tty'), { action: 'custom-attach', ttyIn: true, ttyOut: true, stdin: false, stdout: false, stderr: false });
  t.deepEqual(parseAttachMode('console'), { action: 'console' });
  t.deepEqual(attachActionFrom(new Map()), { action: 'auto-attach' }, "rkt's default");
  t.throws(() => parseAttachMode('stdin,bogus'), { instanceOf: UsageError });
  t.throws(() => parseAttachMode('tty,stdout'), { instanceOf: UsageError, message: /either a terminal or streams/ });
  t.throws(() => attachActionFrom(new Map([['action', 'custom-attach'], ['stdin', 'yes']])), { instanceOf: UsageError });
});

test('kvm attach: endpoints follow the modes; a mode the app lacks is refused naming what it has', (t) => {
  const spec = (streams: AppSpec['streams']): AppSpec => ({ name: 'web', streams }) as AppSpec;
  const tty = spec({ stdin: 'tty', stdout: 'tty', stderr: 'tty' });
  const streams = spec({ stdin: 'stream', stdout: 'stream', stderr: 'log' });
  t.deepEqual(endpoints(tty.streams), ['tty']);
  t.deepEqual(endpoints(streams.streams), ['stdin', 'stdout']);
  t.deepEqual(attachRequest(tty, { action: 'auto-attach' }), { req: { app: 'web', stdin: true, stdout: true, stderr: false }, tty: true });
  t.deepEqual(attachRequest(streams, parseAttachMode('stdout')).req, { app: 'web', stdin: false, stdout: true, stderr: false });
  t.throws(() => attachRequest(streams, parseAttachMode('stderr')), { instanceOf: UsageError, message: /offers stdin, stdout, not stderr/ });
  t.throws(() => attachRequest(tty, parseAttachMode('stdin')), { instanceOf: UsageError, message: /offers tty, not stdin/ });
});

test('nspawn and fly refuse modes they cannot serve instead of dropping them', (t) => {
  t.notThrows(() => refuseStreamModes([{ name: 'a', streams: { stdin: 'null', stdout: 'log', stderr: 'log' } }], 'fly'));
  t.throws(() => refuseStreamModes([{ name: 'a', streams: { stdin: 'null', stdout: 'null', stderr: 'log' } }], 'nspawn'), {
    instanceOf: UsageError,
    message: 'app "a": the nspawn stage1 does not support --stdout=null; use the kvm stage1 (--stage1-name=kvm) for per-app stream modes and rkt attach',
  });
});
