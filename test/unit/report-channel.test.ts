import test from 'ava';
import fc from 'fast-check';
import { ChannelReports, parseReportLine, REPORT_BAD_LINES_MAX, REPORT_LINE_MAX, NET_ERROR_MAX } from '../../src/stage1-common/report-channel.js';

// The host end of the report channel takes hostile bytes: the grammar, the
// bounds, and that a lying or babbling pod can affect only what it says
// about its own apps.

const APPS = new Set(['web', 'db']);

test('the grammar: started, exited with a status and the OOM flag or a failed pre-start, net-error', (t) => {
  t.deepEqual(parseReportLine('started web', APPS), { kind: 'started', app: 'web' });
  t.deepEqual(parseReportLine('pre-start web', APPS), { kind: 'pre-start', app: 'web' });
  t.deepEqual(parseReportLine('exited db 0 -', APPS), { kind: 'exited', app: 'db', status: 0, oom: false, preStart: false });
  t.deepEqual(parseReportLine('exited web 137 oom', APPS), { kind: 'exited', app: 'web', status: 137, oom: true, preStart: false });
  t.deepEqual(parseReportLine('exited web 3 pre-start', APPS), { kind: 'exited', app: 'web', status: 3, oom: false, preStart: true });
  t.deepEqual(parseReportLine('net-error rkt-network: no interface', APPS), { kind: 'net-error', text: 'rkt-network: no interface' });
});

test('anything else is refused: unknown apps, bad statuses, extra words, path tricks', (t) => {
  for (const line of [
    'started nobody',
    'started ../web',
    'started web extra',
    'exited web 256 -',
    'exited web -1 -',
    'exited web 01 -',
    'exited web 3',
    'exited web 3 maybe',
    'exited web 3 pre-stop',
    'pre-start nobody',
    'pre-start web now',
    'exited web 3 pre-start oom',
    'exited web 3 - more',
    'Started web',
    '',
    'started',
    'started  web',
    `exited web ${'9'.repeat(40)} -`,
  ]) {
    t.is(parseReportLine(line, APPS), undefined, JSON.stringify(line));
  }
});

test('net-error text is printable ASCII only and cut short', (t) => {
  const r = parseReportLine(`net-error \x1b[31mred\x07\u00e9 ${'x'.repeat(1000)}`.slice(0, REPORT_LINE_MAX), APPS);
  t.is(r?.kind, 'net-error');
  const text = r?.kind === 'net-error' ? r.text : '';
  t.true(text.length <= NET_ERROR_MAX);
  t.regex(text, /^[\x20-\x7e]*$/);
  t.false(text.includes('\x1b'));
});

test('the first exit reported for an app is final; lines split anywhere are put together', (t) => {
  const r = new ChannelReports(['web', 'db']);
  for (const piece of ['star', 'ted web\nexi', 'ted web 3 -\nexited web 0 -\n', 'exited db 1 oom\n']) r.push(piece);
  t.deepEqual([...r.started()].sort(), ['db', 'web']);
  t.deepEqual(r.exits(), [
    { app: 'web', status: 3 },
    { app: 'db', status: 1 },
  ]);
  t.deepEqual([...r.oomKilled()], ['db']);
  t.deepEqual([...r.preStartFailed()], []);
});

test('a failed pre-start is the end of its app, and says so', (t) => {
  const r = new ChannelReports(['web', 'db']);
  r.push('pre-start web\nexited web 3 pre-start\nexited web 0 -\n');
  t.deepEqual([...r.preStarting()], ['web']);
  t.deepEqual(r.exits(), [{ app: 'web', status: 3 }]);
  t.deepEqual([...r.preStartFailed()], ['web']);
  t.deepEqual([...r.started()], ['web']);
});

test('an overlong line is dropped whole, and what follows still counts', (t) => {
  const r = new ChannelReports(['web']);
  r.push(`exited web 1 -${'x'.repeat(REPORT_LINE_MAX * 3)}`);
  r.push('x'.repeat(100_000));
  r.push('\nexited web 2 -\n');
  t.deepEqual(r.exits(), [{ app: 'web', status: 2 }]);
});

test('a channel that keeps sending garbage is ignored from then on, without keeping it', (t) => {
  const r = new ChannelReports(['web']);
  for (let i = 0; i < REPORT_BAD_LINES_MAX; i++) r.push('garbage\n');
  r.push('exited web 0 -\n');
  t.deepEqual(r.exits(), [], 'nothing is believed after the channel turned hostile');
});

test('fuzz: no input throws, and only known apps with statuses 0..255 are ever reported', (t) => {
  const runs = Number(process.env.RKT_FUZZ_RUNS ?? 300);
  const seed = Number(process.env.RKT_FUZZ_SEED ?? 9001);
  const line = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.constantFrom('started web', 'exited web 0 -', 'exited db 255 oom', 'net-error x', 'started ', 'exited  db'),
    fc.tuple(fc.constantFrom('started', 'exited', 'net-error'), fc.string({ maxLength: 20 }), fc.integer({ min: -5, max: 300 })).map(([v, a, n]) => `${v} ${a} ${n} -`),
  );
  t.notThrows(() =>
    fc.assert(
    fc.property(fc.array(fc.oneof(line.map((l) => `${l}\n`), fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b))), { maxLength: 40 }), (chunks) => {
      const r = new ChannelReports(['web', 'db']);
      for (const c of chunks) r.push(c);
      for (const e of r.exits()) {
        if (!APPS.has(e.app) || !Number.isInteger(e.status) || e.status < 0 || e.status > 255) return false;
      }
      const net = r.netError();
      return [...r.started()].every((a) => APPS.has(a)) && (net === undefined || (net.length <= NET_ERROR_MAX && /^[\x20-\x7e]*$/.test(net)));
    }),
    { numRuns: runs, seed },
    ),
  );
});
