import test from 'ava';
import { EXIT, RktError, UsageError } from '../../src/errors.js';
import { formatRecord, log, reportFailure, say, setDebug, setProgram } from '../../src/log.js';
import { stderrOf } from '../helpers/stderr.js';

test('a warning is one line: program, "warning", message', (t) => {
  t.is(formatRecord('rkt', { level: 'warn', msg: 'signature verification has been disabled' }), 'rkt: warning: signature verification has been disabled\n');
  t.is(formatRecord('stage1', { level: 'warn', msg: 'x' }), 'stage1: warning: x\n');
  t.is(formatRecord('rkt', { level: 'error', msg: 'x' }), 'rkt: error: x\n');
});

test('fields follow the message as key=value, objects as compact JSON on the same line', (t) => {
  const line = formatRecord('rkt', {
    level: 'debug',
    msg: 'executing CNI plugin',
    network: 'default',
    code: 3,
    ok: false,
    nothing: null,
    netns: '/var/run/netns/a b',
    args: [['IP', '10.1.0.5']],
    nics: [{ network: 'default', mac: '02:00:00:00:00:01' }],
  });
  t.is(line, 'rkt: debug: executing CNI plugin network=default code=3 ok=false nothing=null netns="/var/run/netns/a b" args=[["IP","10.1.0.5"]] nics=[{"network":"default","mac":"02:00:00:00:00:01"}]\n');
  t.is(line.split('\n').length, 2, 'one line');
});

test('strings that would be ambiguous bare are quoted', (t) => {
  t.is(formatRecord('rkt', { level: 'debug', msg: 'm', a: '', b: 'x=y', c: 'say "hi"', d: 'two\nlines' }), 'rkt: debug: m a="" b="x=y" c="say \\"hi\\"" d="two\\nlines"\n');
});

test('a record without a message still says its level and fields', (t) => {
  t.is(formatRecord('rkt', { level: 'debug', uuid: 'abc' }), 'rkt: debug: uuid=abc\n');
});

test('every line of a multi-line message carries the program name', (t) => {
  t.is(formatRecord('rkt', { level: 'warn', msg: 'cannot unmount /x: umount: busy\nsecond line' }), 'rkt: warning: cannot unmount /x: umount: busy\nrkt:   second line\n');
});

test("an error field shows its message, not pino's stack", (t) => {
  const err = { type: 'Error', message: 'EACCES: permission denied', stack: 'Error: EACCES\n    at x', code: 'EACCES' };
  t.is(formatRecord('rkt', { level: 'warn', msg: 'gc failed', err }), 'rkt: warning: gc failed err="EACCES: permission denied"\n');
  // log().warn(err) makes the message the error's: not said twice
  t.is(formatRecord('rkt', { level: 'warn', msg: 'EACCES: permission denied', err }), 'rkt: warning: EACCES: permission denied\n');
});

test.serial('log() writes human lines, never JSON, with the program prefix set once', (t) => {
  try {
    setDebug(true);
    const out = stderrOf(() => {
      log().debug({ argv: ['mount', '-t', 'overlay'] }, 'mount');
      log().warn({ uuid: 'u1', code: 254 }, 'stage1 gc entrypoint failed');
      setProgram('stage1');
      log().warn('--insecure-options=seccomp: apps run without seccomp filters');
      log().debug('VM size: %d MiB', 256);
    });
    t.is(
      out,
      [
        'rkt: debug: mount argv=["mount","-t","overlay"]',
        'rkt: warning: stage1 gc entrypoint failed uuid=u1 code=254',
        'stage1: warning: --insecure-options=seccomp: apps run without seccomp filters',
        'stage1: debug: VM size: 256 MiB',
        '',
      ].join('\n'),
    );
    setDebug(false);
    t.is(
      stderrOf(() => log().debug('hidden')),
      '',
      'debug lines only with --debug',
    );
  } finally {
    setProgram('rkt');
    setDebug(false);
  }
});

test.serial('say() prefixes each line with the program name', (t) => {
  t.is(
    stderrOf(() => say('kept sha512-1: in use')),
    'rkt: kept sha512-1: in use\n',
  );
});

test.serial('a user error is its message and its own exit status', (t) => {
  let code = 0;
  t.is(
    stderrOf(() => {
      code = reportFailure(new RktError('pod abc is running; stop it first ("rkt stop")'), { debug: false });
    }),
    'rkt: pod abc is running; stop it first ("rkt stop")\n',
  );
  t.is(code, EXIT.failure);
  stderrOf(() => {
    code = reportFailure(new UsageError('unknown flag --x'), { debug: false });
  });
  t.is(code, EXIT.usage);
});

test.serial('an internal error says it is a bug, exits 254 as rkt does, and shows the stack only with --debug', (t) => {
  let code = 0;
  const bug = new TypeError("Cannot read properties of undefined (reading 'apps')\nmore detail");
  const quiet = stderrOf(() => {
    code = reportFailure(bug, { debug: false });
  });
  t.is(code, EXIT.internal);
  t.is(code, 254);
  t.is(quiet, "rkt: internal error: Cannot read properties of undefined (reading 'apps')\nrkt: this is a bug in rkt; run with --debug for the stack\n");
  const cause = Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
  const loud = stderrOf(() => {
    code = reportFailure(new Error('wrapped', { cause }), { debug: true });
  });
  t.is(code, EXIT.internal);
  t.regex(loud, /^rkt: internal error: wrapped\n/);
  t.regex(loud, /\n\s+at /, 'the stack');
  t.regex(loud, /\[cause\]: Error: EIO: i\/o error, read/, 'and its cause');
  t.notRegex(loud, /run with --debug/);
});

test('rkt fails with 254 whatever the kind of failure, as rkt 1.x does', (t) => {
  t.deepEqual(EXIT, { ok: 0, failure: 254, usage: 254, internal: 254, stage1Failure: 254 });
});
