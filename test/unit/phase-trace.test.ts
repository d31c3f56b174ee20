import test from 'ava';
import { setDebug } from '../../src/log.js';
import { formatMark, parseMarkLine, PhaseTrace, TRACE_LAST_ENV, TRACE_ORIGIN_ENV } from '../../src/util/phase-trace.js';
import { BootMarks } from '../../stage1-kvm/boot-marks.js';
import { stderrOf } from '../helpers/stderr.js';

// The pod start's timeline: marks relative to one origin, durations since
// the previous mark, and the hand-over from stage0 to stage1 through the
// environment. Clocks are played by a counter; no timing is asserted.

function clock(start: number): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('marks are offsets from the origin, each with the time since the previous one', (t) => {
  const c = clock(1_000_000);
  const trace = new PhaseTrace(1_000_000, 0, c.now);
  c.advance(40);
  t.deepEqual(trace.mark('stage0-parse'), { phase: 'stage0-parse', at: 40, took: 40 });
  c.advance(15.25);
  t.deepEqual(trace.mark('image-lookup'), { phase: 'image-lookup', at: 55.25, took: 15.25 });
  t.deepEqual(
    trace.list().map((m) => m.phase),
    ['stage0-parse', 'image-lookup'],
  );
});

test('the hand-over continues the timeline in the child; the parent\'s next mark has no duration', (t) => {
  const c = clock(2_000_000);
  const stage0 = new PhaseTrace(2_000_000, 0, c.now);
  c.advance(100);
  stage0.mark('pod-preparation');
  c.advance(5);
  const env = stage0.env();
  t.deepEqual(Object.keys(env).sort(), [TRACE_LAST_ENV, TRACE_ORIGIN_ENV].sort());
  c.advance(60);
  const stage1 = PhaseTrace.fromEnv(env, c.now);
  t.is(stage1.origin, 2_000_000);
  // the child's first mark spans the hand-over and its own start-up
  t.deepEqual(stage1.mark('stage1-start'), { phase: 'stage1-start', at: 165, took: 65 });
  c.advance(200);
  const back = stage0.mark('stage0-exit');
  t.is(back.at, 365);
  t.is(back.took, undefined);
  c.advance(1);
  t.is(stage0.mark('later').took, 1);
});

test('a missing, malformed or future origin starts a timeline of this process\'s own', (t) => {
  const c = clock(performance.timeOrigin + 10);
  for (const env of [{}, { [TRACE_ORIGIN_ENV]: 'yesterday' }, { [TRACE_ORIGIN_ENV]: '-5' }, { [TRACE_ORIGIN_ENV]: '1e3' }, { [TRACE_ORIGIN_ENV]: String(performance.timeOrigin + 1e9) }]) {
    const trace = PhaseTrace.fromEnv(env, c.now);
    t.is(trace.origin, performance.timeOrigin, JSON.stringify(env));
    t.is(trace.mark('x').took, 10);
  }
  // a good origin with a bad last mark: durations from the origin
  const trace = PhaseTrace.fromEnv({ [TRACE_ORIGIN_ENV]: String(performance.timeOrigin), [TRACE_LAST_ENV]: 'x' }, c.now);
  t.is(trace.mark('y').took, 10);
});

test('a mark line parses back to the mark, with or without its duration', (t) => {
  for (const m of [
    { phase: 'app-start', at: 1234.5, took: 12.3 },
    { phase: 'stage0-exit', at: 99.0 },
  ]) {
    const line = `stage1: debug: ${formatMark(m)}`;
    t.deepEqual(parseMarkLine(line), { program: 'stage1', ...m });
  }
  t.is(parseMarkLine('rkt: debug: pod prepared uuid=x'), undefined);
  t.is(parseMarkLine('rkt: debug: phase Bad +1.0 ms (1.0 ms)'), undefined);
  t.is(parseMarkLine('phase x +1.0 ms'), undefined);
});

test('marks are debug lines: printed with --debug only', (t) => {
  const trace = new PhaseTrace(0, 0, () => 5);
  try {
    setDebug(false);
    t.is(stderrOf(() => trace.mark('quiet')), '');
    setDebug(true);
    t.is(stderrOf(() => trace.mark('loud')), 'rkt: debug: phase loud +5.0 ms (0.0 ms)\n');
  } finally {
    setDebug(false);
  }
});

test('the guest console marks the kernel\'s first words and the hand-over to init, once each, across chunks', (t) => {
  const phases = (chunks: string[]): string[] => {
    const boot = new BootMarks();
    return chunks.flatMap((c) => boot.push(c));
  };
  t.deepEqual(phases(['Linux version 6.1\n', 'lots\nof boot\nRun /usr/lib/systemd/sys', 'temd as init process\n', 'Run /sbin/init as init process\n']), ['guest-kernel', 'guest-init']);
  t.deepEqual(phases(['[    0.5] Run /init as init process\r\n']), ['guest-kernel', 'guest-init']);
  t.deepEqual(phases(['', 'no init line here\n']), ['guest-kernel']);
  // a guest that prints without newlines keeps no more than a short partial line
  const boot = new BootMarks();
  for (let i = 0; i < 1000; i++) boot.push('x'.repeat(1000));
  t.true((boot as unknown as { partial: string }).partial.length <= 256);
});
