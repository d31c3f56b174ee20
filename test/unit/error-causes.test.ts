import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImageNotFoundError, RktError, UsageError, whyUnreadable } from '../../src/errors.js';
import type { GlobalOptions } from '../../src/config/global.js';
import { fetchFile } from '../../src/fetch/fetch.js';
import { podInfo } from '../../src/pod/info.js';
import { Pod } from '../../src/pod/pod.js';
import type { Store } from '../../src/store/store.js';
import { PodPaths, readRunOptions } from '../../src/stage1/contract.js';
import { AppSpecError, readPodFile } from '../../src/stage1-common/app-spec.js';

// A file that cannot be read for another reason than "it does not exist"
// must say so, with the system's words (which name the errno), and keep the
// original error as the cause. Directories stand in for unreadable files:
// reading one fails with EISDIR even as root.

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'error-causes-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const UUID = '0a1b2c3d-0000-4000-8000-000000000001';

function podIn(t: { teardown(fn: () => void): void }): Pod {
  const pod = new Pod(tmp(t), UUID, 'prepared');
  fs.mkdirSync(pod.dir, { recursive: true });
  return pod;
}

test('whyUnreadable: "does not exist" only for ENOENT, else the errno in the message', (t) => {
  t.is(whyUnreadable(Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), { code: 'ENOENT' })), 'does not exist');
  t.is(whyUnreadable(Object.assign(new Error("EACCES: permission denied, open '/x'"), { code: 'EACCES' })), "cannot be read (EACCES: permission denied, open '/x')");
});

test('run-options.json: none is undefined; unreadable or not JSON is an error with its cause', (t) => {
  const paths = new PodPaths(tmp(t));
  t.is(readRunOptions(paths), undefined);
  fs.writeFileSync(paths.runOptions, '{"net":["default"]}');
  t.deepEqual(readRunOptions(paths), { net: ['default'] });
  fs.writeFileSync(paths.runOptions, '{"net":');
  const bad = t.throws(() => readRunOptions(paths), { instanceOf: RktError, message: /run-options\.json are not valid JSON .*damaged/ });
  t.true(bad?.cause instanceof SyntaxError);
  fs.rmSync(paths.runOptions);
  fs.mkdirSync(paths.runOptions);
  const dir = t.throws(() => readRunOptions(paths), { instanceOf: RktError, message: /run-options\.json cannot be read \(EISDIR/ });
  t.is((dir?.cause as NodeJS.ErrnoException).code, 'EISDIR');
});

test('a pod file stage0 writes: missing, or unreadable with the errno', (t) => {
  const dir = tmp(t);
  t.throws(() => readPodFile(path.join(dir, 'pod'), 'pod manifest'), { instanceOf: AppSpecError, message: /pod manifest .* is missing; the pod directory is incomplete/ });
  const err = t.throws(() => readPodFile(dir, 'pod manifest'), { instanceOf: AppSpecError, message: /pod manifest .* cannot be read \(EISDIR/ });
  t.is((err?.cause as NodeJS.ErrnoException).code, 'EISDIR');
});

test('pod manifest: not written yet is not an error for listing, an unreadable one is', (t) => {
  const pod = podIn(t);
  t.is(pod.manifestIfWritten(), undefined);
  t.throws(() => pod.manifest(), { instanceOf: RktError, message: new RegExp(`pod ${UUID} has no manifest yet \\(it is prepared\\)`) });
  fs.mkdirSync(pod.paths.manifest);
  const err = t.throws(() => pod.manifest(), { instanceOf: RktError, message: new RegExp(`the manifest of pod ${UUID} cannot be read \\(EISDIR`) });
  t.is((err?.cause as NodeJS.ErrnoException).code, 'EISDIR');
  t.throws(() => pod.appNames(), { instanceOf: RktError, message: /EISDIR/ }, 'enter is told why, not "0 apps"');
});

test.serial('rkt list shows a pod with an unreadable manifest, without apps, and warns why', (t) => {
  const pod = podIn(t);
  fs.mkdirSync(pod.paths.manifest);
  const chunks: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((c: string | Uint8Array) => chunks.push(String(c)) > 0) as typeof process.stderr.write;
  let info;
  try {
    info = podInfo(pod);
  } finally {
    process.stderr.write = write;
  }
  t.deepEqual(info.apps, []);
  t.regex(chunks.join(''), new RegExp(`^rkt: warning: pod ${UUID}: the manifest of pod ${UUID} cannot be read \\(EISDIR`));
});

test('a UUID file that cannot be read says why', (t) => {
  const dir = tmp(t);
  t.throws(() => Pod.readUuidFile(path.join(dir, 'nope')), { instanceOf: UsageError, message: /UUID file .*nope does not exist$/ });
  const err = t.throws(() => Pod.readUuidFile(dir), { instanceOf: UsageError, message: /UUID file .* cannot be read \(EISDIR/ });
  t.truthy(err?.cause);
});

test('fetch: a missing image file is "does not exist", another failure keeps its errno', async (t) => {
  const dir = tmp(t);
  const store = {} as Store;
  const globals = {} as GlobalOptions;
  await t.throwsAsync(fetchFile(store, globals, path.join(dir, 'nope.aci')), { instanceOf: ImageNotFoundError, message: /nope\.aci does not exist$/ });
  fs.writeFileSync(path.join(dir, 'file'), '');
  const err = await t.throwsAsync(fetchFile(store, globals, path.join(dir, 'file', 'x.aci')), { message: /x\.aci cannot be read \(ENOTDIR/ });
  t.false(err instanceof ImageNotFoundError);
  t.true(err instanceof RktError);
  t.is((err?.cause as NodeJS.ErrnoException).code, 'ENOTDIR');
});
