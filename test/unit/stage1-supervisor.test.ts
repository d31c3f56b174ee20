import test from 'ava';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RktError } from '../../src/errors.js';
import type { AppExit, AppReports } from '../../src/stage1-common/app-reports.js';
import type { AppSpec } from '../../src/stage1-common/app-spec.js';
import { PodSupervisor, podStatus, type EngineEnd, type PodEngine } from '../../src/stage1-common/supervisor.js';
import { PodPaths } from '../../src/stage1/contract.js';

// The shared pod supervisor against a scripted engine: what the pod
// reports and when the pod ends is driven by each test.

function spec(name: string): AppSpec {
  return { name, isolators: {} } as unknown as AppSpec;
}

class FakeReports implements AppReports {
  startedSet = new Set<string>();
  exitList: AppExit[] = [];
  oom = new Set<string>();
  preStartingSet = new Set<string>();
  preStartFailedSet = new Set<string>();
  preStarting(): Set<string> {
    return this.preStartingSet;
  }
  preStartFailed(): Set<string> {
    return this.preStartFailedSet;
  }
  started(): Set<string> {
    return this.startedSet;
  }
  exits(): AppExit[] {
    return this.exitList;
  }
  oomKilled(): Set<string> {
    return this.oom;
  }
}

class FakeEngine implements PodEngine {
  specs: AppSpec[] = [];
  get reports(): FakeReports {
    return this.fakeReports;
  }
  calls: string[] = [];
  hasEnded = false;
  ended: Promise<EngineEnd>;
  private resolveEnd!: (e: EngineEnd) => void;
  failPrepare: Error | undefined;
  failure: Error | undefined;
  /** What the pod does once started. */
  onStart: (e: FakeEngine) => void = () => undefined;
  /** What a power-off does. */
  onPowerOff: (e: FakeEngine) => void = () => undefined;

  constructor(
    private readonly fakeReports: FakeReports,
    private readonly names: string[],
  ) {
    this.ended = new Promise((r) => (this.resolveEnd = r));
  }
  end(e: EngineEnd): void {
    this.hasEnded = true;
    this.resolveEnd(e);
  }
  exit(app: string, status: number): void {
    this.fakeReports.exitList.push({ app, status });
  }
  async prepare(): Promise<void> {
    this.calls.push('prepare');
    this.specs = this.names.map(spec);
    if (this.failPrepare) throw this.failPrepare;
  }
  async start(): Promise<void> {
    this.calls.push('start');
    setTimeout(() => this.onStart(this), 5);
  }
  powerOff(): void {
    this.calls.push('powerOff');
    this.onPowerOff(this);
  }
  forceEnd(): void {
    this.calls.push('forceEnd');
    this.end({ code: 0, signal: null });
  }
  kill(): void {
    this.calls.push('kill');
    this.end({ code: null, signal: 'SIGKILL' });
  }
  onStarted(): void {
    this.calls.push('started');
  }
  startFailure(): Error | undefined {
    return this.failure;
  }
  bootTimedOut(ms: number): Error {
    return new RktError(`not started within ${ms} ms`);
  }
  async finish(): Promise<void> {
    this.calls.push('finish');
  }
  abnormalEnd(end: EngineEnd): { cause: string; status: number } {
    return { cause: `ended early (${end.signal ?? end.code})`, status: end.signal === 'SIGKILL' ? 137 : 254 };
  }
  async cleanup(): Promise<void> {
    this.calls.push('cleanup');
  }
}

function setup(t: { teardown(fn: () => void): void }, names: string[], extra: { bootMs?: number; graceMs?: number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'supervisor-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const paths = new PodPaths(dir);
  const reports = new FakeReports();
  const engine = new FakeEngine(reports, names);
  const signals = new EventEmitter();
  const sup = new PodSupervisor(engine, {
    paths,
    bootTimeoutMs: () => extra.bootMs ?? 2000,
    endGraceMs: extra.graceMs ?? 2000,
    interactive: true,
    signals,
    pollMs: 2,
  });
  const cause = (): string | undefined => (fs.existsSync(paths.exitCause) ? fs.readFileSync(paths.exitCause, 'utf8').trim() : undefined);
  return { paths, reports, engine, signals, sup, cause };
}

test('a pod whose apps run and exit: ready mark, the app status, every stage in order', async (t) => {
  const { engine, reports, sup, paths, cause } = setup(t, ['a']);
  engine.onStart = (e) => {
    reports.startedSet.add('a');
    setTimeout(() => {
      e.exit('a', 3);
      e.end({ code: 0, signal: null });
    }, 20);
  };
  t.is(await sup.run(), 3);
  t.true(fs.existsSync(paths.ready));
  t.is(fs.readFileSync(paths.appStatus('a'), 'utf8'), '3', 'the host wrote the reported status where rkt status reads it');
  t.deepEqual(engine.calls, ['prepare', 'start', 'started', 'finish', 'cleanup']);
  t.is(cause(), undefined);
});

test('the pod status is the first failing app in exit order', (t) => {
  t.is(podStatus([spec('a'), spec('b')], [{ app: 'b', status: 0 }, { app: 'a', status: 4 }]), 4);
  t.is(podStatus([spec('a'), spec('b')], [{ app: 'b', status: 2 }, { app: 'a', status: 4 }]), 2);
  t.is(podStatus([spec('a'), spec('b')], [{ app: 'a', status: 0 }, { app: 'b', status: 0 }]), 0);
  t.is(podStatus([spec('a')], [{ app: 'a', status: 9 }]), 9);
});

test('a stop signal powers the pod off; a later one forces the end; an echo within a second does not', async (t) => {
  const { engine, reports, sup, signals } = setup(t, ['a']);
  engine.onStart = () => {
    reports.startedSet.add('a');
    setTimeout(() => {
      signals.emit('SIGTERM', 'SIGTERM');
      signals.emit('SIGINT', 'SIGINT'); // the echo
    }, 10);
  };
  let forced = 0;
  engine.onPowerOff = (e) => {
    // a stubborn pod: only a second request, a while later, ends it
    setTimeout(() => {
      forced = e.calls.filter((c) => c === 'forceEnd').length;
      signals.emit('SIGTERM', 'SIGTERM');
    }, 1100);
  };
  const status = await sup.run();
  t.is(forced, 0, 'the echo did not force the end');
  t.deepEqual(engine.calls.filter((c) => c === 'powerOff' || c === 'forceEnd'), ['powerOff', 'forceEnd']);
  t.is(status, 254, 'the abnormal end status, as the apps never reported');
});

test('a stop request before the pod starts: nothing is started', async (t) => {
  const { engine, sup, signals } = setup(t, ['a']);
  const prepare = engine.prepare.bind(engine);
  engine.prepare = async () => {
    signals.emit('SIGTERM', 'SIGTERM');
    await prepare();
  };
  t.is(await sup.run(), 128 + os.constants.signals.SIGTERM);
  t.deepEqual(engine.calls, ['prepare', 'cleanup']);
});

test('a pod that never starts its apps is killed at the boot timeout, and the cause recorded', async (t) => {
  const { engine, sup, cause } = setup(t, ['a'], { bootMs: 50 });
  await t.throwsAsync(sup.run(), { message: 'not started within 50 ms' });
  t.true(engine.calls.includes('kill'));
  t.is(engine.calls.at(-1), 'cleanup');
  t.is(cause(), 'stage1 failed: not started within 50 ms');
});

test('an app whose pre-start handler runs is past the boot: the boot timeout no longer applies to it', async (t) => {
  const { engine, reports, sup, paths } = setup(t, ['a', 'b'], { bootMs: 50 });
  engine.onStart = (e) => {
    reports.startedSet.add('b');
    reports.preStartingSet.add('a');
    // the handler takes several boot timeouts, then the app starts and exits
    setTimeout(() => reports.startedSet.add('a'), 200);
    // end once the supervisor has seen every app start (on a loaded host
    // timers fire late, and a fixed delay could end the pod before it looked)
    const end = (tries: number) => {
      if (!fs.existsSync(paths.ready) && tries > 0) return void setTimeout(() => end(tries - 1), 50);
      e.exit('a', 0);
      e.exit('b', 0);
      e.end({ code: 0, signal: null });
    };
    setTimeout(() => end(100), 300);
  };
  t.is(await sup.run(), 0);
  t.false(engine.calls.includes('kill'));
  t.true(fs.existsSync(paths.ready));
});

test('a failed pre-start is explained in the exit cause', async (t) => {
  const { engine, reports, sup, cause } = setup(t, ['a']);
  engine.onStart = (e) => {
    reports.preStartFailedSet.add('a');
    e.exit('a', 7);
    e.end({ code: 0, signal: null });
  };
  t.is(await sup.run(), 7);
  t.is(cause(), 'app a was not started: its pre-start event handler exited with status 7');
});

test('a failure the pod reports while starting ends it at once', async (t) => {
  const { engine, sup, cause } = setup(t, ['a']);
  engine.onStart = (e) => (e.failure = new RktError('no network in the guest'));
  await t.throwsAsync(sup.run(), { message: 'no network in the guest' });
  t.regex(cause() ?? '', /no network/);
});

test('a refusal in prepare: the cause is recorded, nothing started, cleanup runs', async (t) => {
  const { engine, sup, cause } = setup(t, ['a']);
  engine.failPrepare = new RktError('bad isolator\nsecond line');
  await t.throwsAsync(sup.run(), { message: /bad isolator/ });
  t.deepEqual(engine.calls, ['prepare', 'cleanup']);
  t.is(cause(), 'stage1 failed: bad isolator');
});

test('a pod that ends before its apps report: the engine says why, and the status says how', async (t) => {
  const { engine, reports, sup, cause } = setup(t, ['a', 'b']);
  engine.onStart = (e) => {
    reports.startedSet.add('a').add('b');
    setTimeout(() => {
      e.exit('a', 0);
      e.end({ code: null, signal: 'SIGKILL' });
    }, 10);
  };
  t.is(await sup.run(), 137);
  t.is(cause(), 'ended early (SIGKILL)');
});

test('every app exited but the pod stays up: it is ended after the grace period', async (t) => {
  const { engine, reports, sup } = setup(t, ['a'], { graceMs: 150 });
  engine.onStart = (e) => {
    reports.startedSet.add('a');
    e.exit('a', 0);
  };
  const t0 = Date.now();
  t.is(await sup.run(), 0);
  t.true(engine.calls.includes('forceEnd'));
  t.true(Date.now() - t0 >= 150);
});

test('an OOM kill is explained in the exit cause', async (t) => {
  const { engine, reports, sup, cause } = setup(t, ['a']);
  engine.onStart = (e) => {
    reports.startedSet.add('a');
    reports.oom.add('a');
    e.exit('a', 137);
    e.end({ code: 0, signal: null });
  };
  t.is(await sup.run(), 137);
  t.regex(cause() ?? '', /app a was killed by the kernel's OOM killer/);
});
