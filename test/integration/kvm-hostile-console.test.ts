import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { buildAci } from '../helpers/aci.js';
import { RKT } from '../helpers/rkt.js';
import { podStatus, sleep } from '../helpers/pods.js';
import { KVM, podDir, runInBackground, setup } from './kvm-common.js';

// The guest's serial console as a hostile guest uses it. A root app (the
// compromised guest) floods it, prints fake kernel panics and terminal
// escape sequences on it; the host must keep a bounded log, decide that
// the guest panicked only from qemu's pvpanic signal, and show guest text
// to nobody but a raw `rkt attach` with its control characters in. Apps
// have a private /dev without the console, so the app does what a
// compromised guest would: it leaves its cgroup (and so its device policy)
// and mounts a devtmpfs of its own, through which it reaches ttyS0 and kmsg.

const CONSOLE_LOG_MAX = 1024 * 1024;
const FLOOD_MIB = 50;

/** A root app that holds the capabilities a compromised guest would use. */
const ROOT_APP = { exec: ['/bin/sh', '-c', 'true'], user: '0', group: '0' };
const CAPS = '--caps-retain=CAP_SYS_BOOT,CAP_DAC_OVERRIDE,CAP_SYS_ADMIN';
/** The compromised guest's way to the console: out of its cgroup, a devtmpfs at /m. */
const ESCAPE = 'echo $$ > /sys/fs/cgroup/cgroup.procs && mkdir -p /m && mount -t devtmpfs devtmpfs /m';

/** Control characters a terminal acts on, in text decoded from valid UTF-8: C0 but \n and \t, DEL, C1. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

/** The bytes as text, failing if they are not UTF-8 (a raw C1 byte is not) or hold a control character. */
function assertPrintable(t: ExecutionContext, what: string, bytes: Uint8Array): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    t.fail(`${what} is not valid UTF-8 (a raw 8-bit control byte?)`);
    return '';
  }
  const m = CONTROL.exec(text);
  t.is(m, null, `${what} holds control character U+${m?.[0].codePointAt(0)?.toString(16).padStart(4, '0')} near ${JSON.stringify(text.slice(Math.max(0, (m?.index ?? 0) - 40), (m?.index ?? 0) + 10))}`);
  return text;
}

/** What a hostile app prints on the console: colours, a screen wipe, a title, a clipboard write, C1 CSI (UTF-8 and raw), BEL, DEL, NUL. */
const JUNK_SH = String.raw`printf 'junk-start \033[31mred\033[0m \033[2J\033[H \033]0;pwned-title\007 \033]52;c;ZXZpbA==\033\\ \302\2336n \233[5n bell\007 del\177 nul\000 visible-end\r\n'`;

test.serial(`a root app writes ${FLOOD_MIB} MiB to the serial console: the console log stays within its cap and the pod ends normally`, async (t) => {
  // the emulated 16550 moves about 0.25 MiB/s under tcg: over 3 minutes for the whole flood
  t.timeout(15 * 60_000);
  const line = `${'flood-0123456789'.repeat(4)}\n`;
  const chunk = line.repeat(Math.floor(65536 / line.length));
  const rounds = Math.ceil((FLOOD_MIB * 1024 * 1024) / chunk.length);
  const { env } = await setup(t, ROOT_APP);
  const exec = ['/bin/sh', '-c', `${ESCAPE} && i=0; while [ $i -lt ${rounds} ]; do cat /flood.txt; i=$((i+1)); done > /m/ttyS0 && echo flooded`];
  const flood = await buildAci(env.root, { name: 'example.com/flood', app: { ...ROOT_APP, exec }, files: { 'flood.txt': chunk } });
  const t0 = Date.now();
  const { child, uuid } = await runInBackground(t, env, [flood, CAPS]);
  let maxCur = 0;
  let maxPrev = 0;
  let done = false;
  void child.finally(() => (done = true));
  while (!done) {
    const dir = podDir(env, uuid);
    if (dir !== undefined) {
      maxCur = Math.max(maxCur, sizeOf(path.join(dir, 'qemu', 'console.log')));
      maxPrev = Math.max(maxPrev, sizeOf(path.join(dir, 'qemu', 'console.log.1')));
    }
    await sleep(100);
  }
  const r = await child;
  t.log(`${FLOOD_MIB} MiB through the console in ${((Date.now() - t0) / 1000).toFixed(1)} s (rkt run included)`);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /flooded/, 'the app wrote everything');
  const dir = podDir(env, uuid)!;
  t.true(fs.existsSync(path.join(dir, 'qemu', 'console.log.1')), 'the log was rotated: more than the cap went through it');
  t.true(maxCur <= CONSOLE_LOG_MAX && maxPrev <= CONSOLE_LOG_MAX, `console.log reached ${maxCur} bytes, console.log.1 ${maxPrev}`);
  const big = fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isFile() && sizeOf(path.join(dir, f)) > CONSOLE_LOG_MAX);
  t.deepEqual(big, [], 'no file of the pod grew beyond the cap');
  t.regex(fs.readFileSync(path.join(dir, 'qemu', 'console.log'), 'utf8'), /flood-0123456789/);
  t.is((await podStatus(env, uuid)).exit_cause, undefined);
});

test.serial('a fake "Kernel panic" on the console (and in the kernel log) is not a panic', async (t) => {
  const { env, image } = await setup(t, ROOT_APP);
  const script = [
    ESCAPE,
    "echo '[    9.999999] Kernel panic - not syncing: fake panic from an app' > /m/ttyS0",
    "echo '<0>Kernel panic - not syncing: fake panic through kmsg' > /m/kmsg",
    'echo wrote-fake-panic',
    // an abnormal end that is no panic: the guest powers off under its apps
    'busybox poweroff -f',
  ].join(' && ');
  const uuidFile = env.file('uuid');
  const r = await env.run(['run', ...KVM, `--uuid-file-save=${uuidFile}`, image, CAPS, '--exec=/bin/sh', '--', '-c', script], { timeout: 240_000 });
  t.regex(String(r.stdout), /wrote-fake-panic/, String(r.stderr));
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const consoleLog = fs.readFileSync(path.join(podDir(env, uuid)!, 'qemu', 'console.log'), 'utf8');
  t.regex(consoleLog, /Kernel panic - not syncing: fake panic from an app/, 'the fake line did reach the console');
  const st = await podStatus(env, uuid);
  t.truthy(st.exit_cause, 'the pod ended before its app could report');
  t.notRegex(st.exit_cause ?? '', /panic/i);
  t.notRegex(String(r.stderr), /guest panicked/);
});

test.serial('escape sequences and C1 controls printed by the guest reach neither --debug stderr nor rkt status', async (t) => {
  const { env, image } = await setup(t, ROOT_APP);
  const uuidFile = env.file('uuid');
  const r = await execa(RKT, [...env.globals(), '--debug', 'run', ...KVM, `--uuid-file-save=${uuidFile}`, image, CAPS, '--exec=/bin/sh', '--', '-c', `${ESCAPE} && ${JUNK_SH} > /m/ttyS0 && busybox poweroff -f`], {
    reject: false,
    stdin: 'ignore',
    encoding: 'buffer',
    timeout: 240_000,
  });
  const stderr = assertPrintable(t, 'rkt --debug run stderr', r.stderr as Uint8Array);
  t.regex(stderr, /junk-start red/, 'the console copy on stderr carries the text around the sequences');
  t.regex(stderr, /visible-end/);
  t.notRegex(stderr, /pwned-title|ZXZpbA==/, 'OSC strings go whole');
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const dir = podDir(env, uuid)!;
  assertPrintable(t, 'console.log', fs.readFileSync(path.join(dir, 'qemu', 'console.log')));
  for (const args of [['status', uuid], ['status', '--format=json', uuid], ['list', '--full']]) {
    const s = await execa(RKT, [...env.globals(), ...args], { reject: false, encoding: 'buffer' });
    t.is(s.exitCode, 0);
    assertPrintable(t, `rkt ${args.join(' ')}`, s.stdout as Uint8Array);
  }
});

test.serial('a real kernel panic is reported as such, from the pvpanic signal; the quoted panic line is sanitised', async (t) => {
  const { env, image } = await setup(t, ROOT_APP);
  const uuidFile = env.file('uuid');
  // init= takes over from systemd: a missing one is a real panic ("Requested init ... failed"), and its
  // name, printed by the guest kernel, carries a title change, a colour and a C1 CSI
  const r = await execa(RKT, [...env.globals(), 'run', ...KVM, `--uuid-file-save=${uuidFile}`, image], {
    reject: false,
    stdin: 'ignore',
    encoding: 'buffer',
    timeout: 240_000,
    env: { RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS: 'init=/no/such/init\x1b]0;pwned\x07\x1b[31m\u009b2Jend' },
  });
  const stderr = assertPrintable(t, 'rkt run stderr', r.stderr as Uint8Array);
  t.not(r.exitCode, 0);
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const st = await podStatus(env, uuid);
  // on the template path (RKT_KVM_TEMPLATE=on) init= is executed by the template's init, whose end is the panic
  const cause = process.env.RKT_KVM_TEMPLATE === 'on' ? /^guest panicked: not syncing: Attempted to kill init! exitcode=0x00000100$/ : /^guest panicked: not syncing: Requested init \/no\/such\/initend failed \(error -2\)\.$/;
  t.regex(st.exit_cause ?? '', cause);
  t.regex(stderr, /guest panicked/);
  const s = await execa(RKT, [...env.globals(), 'status', uuid], { reject: false, encoding: 'buffer' });
  assertPrintable(t, 'rkt status', s.stdout as Uint8Array);
});

function sizeOf(f: string): number {
  try {
    return fs.statSync(f).size;
  } catch {
    // not there (yet, or any more)
    return 0;
  }
}
