import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { parseSignal } from '../../src/oci/commands.js';
import { stateJson } from '../../src/oci/reports.js';
import { OciError } from '../../src/oci/errors.js';
import { rktError } from '../../src/oci/rkt.js';
import { run } from '../../src/oci/main.js';
import { tempDir } from '../helpers/tmp.js';
import { StateDir, checkId, currentStatus, processStart, type ContainerState } from '../../src/oci/state.js';

// The OCI front's records under --root and its command line, without rkt:
// what state and delete read after a restart, and the refusals that come
// before any pod is touched.

const tmpRoot = (t: { teardown(fn: () => void): void }): string => tempDir(t, 'oci-state-');

function record(over: Partial<ContainerState> = {}): ContainerState {
  return {
    version: 1,
    id: 'c1',
    bundle: '/b',
    role: 'standalone',
    flavor: 'nspawn',
    podUuid: '11111111-2222-3333-4444-555555555555',
    app: 'c1',
    status: 'running',
    pid: process.pid,
    pidStart: processStart(process.pid)!,
    created: '2026-12-07T10:00:00.000Z',
    annotations: { a: 'b' },
    identity: { env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
    ...over,
  };
}

test('a container id is claimed once; its record is written whole and read back', (t) => {
  const states = new StateDir(path.join(tmpRoot(t), 'root'));
  const lock = states.claim('c1');
  t.throws(() => states.claim('c1'), { instanceOf: OciError, message: 'container with id c1 already exists' });
  states.write(record());
  lock.release();
  t.deepEqual(states.read('c1'), record());
  t.deepEqual(states.ids(), ['c1']);
  const files = fs.readdirSync(states.dir('c1'));
  t.false(files.some((f) => f.includes('.tmp-')), 'no temporary file is left by the atomic write');
  states.remove('c1');
  t.throws(() => states.read('c1'), { message: 'container c1 does not exist' });
});

test("state prints runc's JSON: stopped once the process is gone, whatever the record says", (t) => {
  const states = new StateDir(tmpRoot(t));
  states.claim('c1').release();
  states.write(record());
  const live = JSON.parse(stateJson({ states }, 'c1'));
  t.like(live, { ociVersion: '1.0.2', id: 'c1', status: 'running', pid: process.pid, bundle: '/b', annotations: { a: 'b' } });
  t.is(typeof live.created, 'string');
  // a pid whose start time differs is another process: the container's has ended
  states.write(record({ pidStart: '1' }));
  const gone = JSON.parse(stateJson({ states }, 'c1'));
  t.is(gone.status, 'stopped');
  t.is(gone.pid, 0);
  t.is(currentStatus(record({ pid: 0 })), 'stopped');
  t.is(currentStatus(record({ status: 'created' })), 'created');
});

test('damaged or foreign records, and bad ids, are clear errors', (t) => {
  const states = new StateDir(tmpRoot(t));
  states.claim('c1').release();
  fs.writeFileSync(states.file('c1'), '{"version": 1, "id": ');
  t.throws(() => states.read('c1'), { message: /the state of container c1 .* is damaged/ });
  fs.writeFileSync(states.file('c1'), JSON.stringify(record({ version: 9 })));
  t.throws(() => states.read('c1'), { message: /is not this runtime's/ });
  fs.writeFileSync(states.file('c1'), JSON.stringify(record({ id: 'other' })));
  t.throws(() => states.read('c1'), { message: /is not this runtime's/ });
  for (const bad of ['', '.', '..', 'a/b', 'a b', '../../etc']) t.throws(() => checkId(bad), { instanceOf: OciError }, bad);
  t.notThrows(() => checkId('abc_DEF-1.2+3'));
});

test('signals by number or name, with or without SIG', (t) => {
  t.is(parseSignal('9'), 9);
  t.is(parseSignal('SIGTERM'), 15);
  t.is(parseSignal('term'), 15);
  t.throws(() => parseSignal('SIGNOPE'), { message: 'unknown signal "SIGNOPE"' });
  t.throws(() => parseSignal('99'), { message: /out of range/ });
});

test("the command line: runc's global flags, errors as one line on stderr and a JSON line in --log, exit status 1", async (t) => {
  const dir = tmpRoot(t);
  const log = path.join(dir, 'log.json');
  const launcher = { flavor: 'nspawn', rkt: '/nonexistent/rkt', console: '/nonexistent/rkt-oci-console' };
  const cases: [string[], RegExp][] = [
    [['--root', dir, '--log', log, '--log-format', 'json', 'state', 'nope'], /^container nope does not exist$/],
    [['--root', dir, 'pause', 'x'], /^runc command "pause" is not supported/],
    [['--root', dir, 'start'], /^"start" requires exactly 1 argument/],
    [['--root', dir, 'kill', '--bogus', 'x'], /^flag provided but not defined: -bogus$/],
    [['--root', dir, 'create', '--preserve-fds', '2', 'x'], /^--preserve-fds is not supported/],
    [['--root', dir, 'create', '--bundle', dir, 'x'], /^cannot read the bundle config .*config\.json: ENOENT$/],
    [['--root', dir, 'create', '--bundle', dir, '../x'], /^invalid container id "\.\.\/x"/],
    [['--root', dir, '--rootless', 'true', 'state', 'x'], /^--rootless true/],
    [[], /^usage: rkt-oci-nspawn/],
  ];
  const write = process.stderr.write.bind(process.stderr);
  for (const [argv, message] of cases) {
    let err = '';
    process.stderr.write = ((chunk: string) => ((err += chunk), true)) as typeof process.stderr.write;
    let code: number;
    try {
      code = await run(argv, launcher);
    } finally {
      process.stderr.write = write;
    }
    t.is(code, 1, argv.join(' '));
    t.regex(err.trim(), message, argv.join(' '));
    t.is(err.trim().split('\n').length, 1, 'one line');
  }
  const line = JSON.parse(fs.readFileSync(log, 'utf8').trim());
  t.like(line, { level: 'error', msg: 'container nope does not exist' });
  t.deepEqual(fs.readdirSync(dir).sort(), ['log.json'], 'no record for anything refused');
});

test('rktError: a crash of rkt itself is told by its error line, not by node\'s version line', (t) => {
  const crash = 'file:///x/rkt.js:1\n  throw err;\n  ^\n\nTypeError: Cannot read properties of undefined (reading \'pid\')\n    at f (file:///x/rkt.js:1:2)\n\nNode.js v20.20.2\n';
  t.is(rktError(crash), "rkt crashed: TypeError: Cannot read properties of undefined (reading 'pid')");
  t.is(rktError('rkt: warning: w\nrkt: pod x is not running\n'), 'rkt: pod x is not running');
  t.is(rktError('something odd\n'), 'something odd');
});
