import fs from 'node:fs';
import os from 'node:os';
import { isErrno } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { readPinned } from '../util/pinned-file.js';
import type { PodPaths } from '../stage1/contract.js';

// What a stage1 leaves in the pod directory for stage0 to read: each app's
// exit status, the pid `rkt enter` joins, and the ready mark. Only the host
// side of stage1 writes them, outside anything a pod can write, and every
// file is replaced atomically so `rkt status` never reads half of one.

/** How a process ended, as node reports it. */
export interface ProcessEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The shell convention rkt follows: the exit code, or 128 + the signal number for a signal death. */
export function exitStatusOf(end: ProcessEnd): number {
  if (end.code !== null) return end.code;
  const signo = end.signal === null ? undefined : os.constants.signals[end.signal];
  return 128 + (signo ?? 0);
}

export function writeAppExitStatus(paths: PodPaths, app: string, code: number): void {
  if (!Number.isInteger(code) || code < 0 || code > 255) throw new RangeError(`exit status of app "${app}" must be 0..255, not ${code}`);
  fs.mkdirSync(paths.statusDir, { recursive: true });
  writeFileAtomic(paths.appStatus(app), String(code));
}

/** Record why the pod, or an app of it, ended, for `rkt status`: one line; the first cause wins. */
export function writeExitCause(paths: PodPaths, cause: string): void {
  if (fs.existsSync(paths.exitCause)) return;
  writeFileAtomic(paths.exitCause, `${cause}\n`);
}

/** Why an app never ran: its pre-start event handler failed (spec/aci.md: it must succeed before the app's exec). */
export function preStartExplanation(app: string, status: number): string {
  const how = status > 128 && status < 160 ? `was killed by signal ${status - 128}` : `exited with status ${status}`;
  return `app ${app} was not started: its pre-start event handler ${how}`;
}

/** Tell stage0 (rkt status --wait-ready) that every app has been started. */
export function markReady(paths: PodPaths): void {
  writeFileAtomic(paths.ready, '');
}

export function writePid(paths: PodPaths, pid: number): void {
  writeFileAtomic(paths.pid, String(pid));
}

/**
 * Whether `pid` is still the process that runs this pod: alive, and with the
 * pod directory as its working directory (a run entrypoint never leaves it).
 * A pid file outlives its process, and pids are recycled; this keeps a stop
 * or an enter from hitting a stranger.
 */
export function isPodProcess(paths: PodPaths, pid: number): boolean {
  try {
    return fs.readlinkSync(`/proc/${pid}/cwd`) === fs.realpathSync(paths.dir);
  } catch {
    return false;
  }
}

/** The pid the run entrypoint recorded, or undefined if there is none (yet). */
export function readPid(paths: PodPaths): number | undefined {
  let text: string;
  try {
    text = readPinned(paths.pid, undefined, 32).trim();
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  const pid = Number(text);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
