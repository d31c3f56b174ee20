import test from 'ava';
import { UsageError } from '../../src/errors.js';
import {
  appStreams,
  parseAttachMode,
  parseStreamMode,
  refuseStreamModes,
  streamAnnotations,
  STREAM_ANNOTATION,
} from '../../src/appc/app-streams.js';
import { parseRunArgs } from '../../src/pod/run-args.js';
import { attachArgv } from '../../src/stage1/args.js';
import { parseAttachArgs } from '../../src/stage1-common/entry.js';
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

test("attach modes become rkt's attach entrypoint flags and back", (t) => {
  const argv = (mode: string): string[] => attachArgv({ ...parseAttachMode(mode), app: 'web', debug: false });
  t.deepEqual(argv('auto'), ['--action=auto-attach', '--app=web', '--debug=false']);
  t.deepEqual(argv('list'), ['--action=list', '--app=web', '--debug=false']);
  t.deepEqual(argv('console'), ['--action=console', '--app=web', '--debug=false']);
  const flags = argv('stdin,stderr');
  t.deepEqual(flags, ['--action=custom-attach', '--app=web', '--debug=false', '--tty-in=false', '--tty-out=false', '--stdin=true', '--stdout=false', '--stderr=true']);
  t.deepEqual(parseAttachArgs(flags).endpoints, parseAttachMode('stdin,stderr').endpoints);
  t.is(parseAttachArgs(argv('console')).action, 'console');
  t.deepEqual(parseAttachMode('tty'), { action: 'custom-attach', endpoints: { ttyIn: true, ttyOut: true, stdin: false, stdout: false, stderr: false } });
  t.throws(() => parseAttachMode('stdin,bogus'), { instanceOf: UsageError });
  t.throws(() => parseAttachMode('tty,stdout'), { instanceOf: UsageError, message: /either a terminal or streams/ });
});

test('kvm attach: endpoints follow the modes; a mode the app lacks is refused naming what it has', (t) => {
  const spec = (streams: AppSpec['streams']): AppSpec => ({ name: 'web', streams }) as AppSpec;
  const tty = spec({ stdin: 'tty', stdout: 'tty', stderr: 'tty' });
  const streams = spec({ stdin: 'stream', stdout: 'stream', stderr: 'log' });
  t.deepEqual(endpoints(tty.streams), ['tty']);
  t.deepEqual(endpoints(streams.streams), ['stdin', 'stdout']);
  const custom = (spec: AppSpec, mode: string) => attachRequest(spec, 'custom-attach', parseAttachMode(mode).endpoints);
  t.deepEqual(attachRequest(tty, 'auto-attach'), { req: { app: 'web', stdin: true, stdout: true, stderr: false }, tty: true });
  t.deepEqual(custom(streams, 'stdout').req, { app: 'web', stdin: false, stdout: true, stderr: false });
  t.throws(() => custom(streams, 'stderr'), { instanceOf: UsageError, message: /offers stdin, stdout, not stderr/ });
  t.throws(() => custom(tty, 'stdin'), { instanceOf: UsageError, message: /offers tty, not stdin/ });
});

test('nspawn and fly refuse modes they cannot serve instead of dropping them', (t) => {
  t.notThrows(() => refuseStreamModes([{ name: 'a', streams: { stdin: 'null', stdout: 'log', stderr: 'log' } }], 'fly'));
  t.throws(() => refuseStreamModes([{ name: 'a', streams: { stdin: 'null', stdout: 'null', stderr: 'log' } }], 'fly'), {
    instanceOf: UsageError,
    message: 'app "a": the fly stage1 does not support --stdout=null; use the kvm or nspawn stage1 (--stage1-name=kvm or --stage1-name=nspawn) for per-app stream modes and rkt attach',
  });
});
