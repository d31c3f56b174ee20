import test from 'ava';
import { encodePlan } from '../../src/stage1/hand-over.js';
import { LAUNCHER_ENV, takeLauncherChannel, useLauncherChannel } from '../../src/stage1/launcher-channel.js';

const OPTS = { lockFd: 21, holdFds: [22, 23], isolateMounts: true, ownProcessGroup: false, exitCause: '/p/exit-cause', statusDir: '/p/rkt/status' };

/** The plan's fields, as the launcher splits them. */
function fields(plan: Buffer): string[] {
  const len = plan.readUInt32LE(0);
  const body = plan.subarray(4).toString();
  return body.length === len && body.endsWith('\0') ? body.slice(0, -1).split('\0') : ['bad length or ending'];
}

test('the plan: length, then the fields in the launcher\'s order, env as NAME=VALUE', (t) => {
  const f = fields(encodePlan('/pods/run/x', ['/s1/run', '--net=none', 'a b'], { A: '1', B: undefined, C: 'x=y' }, OPTS));
  t.deepEqual(f.slice(0, 9), ['rkt-plan-1', '/pods/run/x', '0', '1', '21', '2', '22', '23', '/p/exit-cause']);
  t.is(f[9], '/p/rkt/status');
  t.true(f[10]!.includes('SIGINT') && f[11]!.includes('SIGTERM') && f[12]!.includes('SIGHUP'));
  t.deepEqual(f.slice(13), ['3', '/s1/run', '--net=none', 'a b', '2', 'A=1', 'C=x=y']);
});

test('a NUL byte in any field is refused rather than shifting the fields after it', (t) => {
  t.throws(() => encodePlan('/p', ['/s1/run', 'a\0b'], {}, OPTS), { message: /NUL/ });
  t.throws(() => encodePlan('/p', ['/s1/run'], { X: 'a\0b' }, OPTS), { message: /NUL/ });
});

test('the launcher channel is taken out of the environment once, and used once', (t) => {
  const env: NodeJS.ProcessEnv = { [LAUNCHER_ENV]: '123:4:5', OTHER: 'x' };
  takeLauncherChannel(env);
  t.deepEqual(env, { OTHER: 'x' });
  t.deepEqual(useLauncherChannel(), { pid: 123, plan: 4, answer: 5 });
  t.is(useLauncherChannel(), undefined);
  for (const bad of ['', '1:2', 'a:b:c', '1:2:3:4', ' 1:2:3']) {
    const e: NodeJS.ProcessEnv = { [LAUNCHER_ENV]: bad };
    takeLauncherChannel(e);
    t.is(e[LAUNCHER_ENV], undefined);
    t.is(useLauncherChannel(), undefined, bad);
  }
});
