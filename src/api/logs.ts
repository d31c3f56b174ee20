import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrno } from '../errors.js';
import { Pod } from '../pod/pod.js';
import { stage1Manifest } from '../stage1/invoke.js';
import { PinnedFile } from '../util/pinned-file.js';
import { TextFilter } from '../util/untrusted-text.js';
import { int64, type GetLogsRequest } from './messages.js';
import { ApiError } from './status.js';

// GetLogs, as far as a pod keeps logs. Of the three flavors only kvm keeps
// one: the guest's serial console, which its run entrypoint writes to
// qemu/console.log in the pod directory and rotates to console.log.1 (the
// kvm flavor's documented pod files; stage0 reads them by name, it never
// imports a flavor). There is no per-app log and no time stamp on a line.
// The directory is qemu's, and qemu runs the guest: the files are opened
// without following links, only as regular files under the pod directory,
// read at most MAX_READ bytes from their end, and stripped of control
// characters again, as anything a guest could have touched.

const CONSOLE_LOG = path.join('qemu', 'console.log');
const MAX_READ = 4 * 1024 * 1024;
const FOLLOW_POLL_MS = 250;

function openLog(pod: Pod, file: string): { pinned: PinnedFile; fd: number; ino: number } | undefined {
  let pinned: PinnedFile;
  try {
    pinned = PinnedFile.open(file, 'file', { within: pod.dir });
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  try {
    const fd = pinned.reopen(fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    return { pinned, fd, ino: fs.fstatSync(fd).ino };
  } catch (err) {
    pinned.close();
    throw err;
  }
}

function closeLog(l: { pinned: PinnedFile; fd: number }): void {
  fs.closeSync(l.fd);
  l.pinned.close();
}

/** Read from `pos` to the end (at most MAX_READ, from the end); returns the text and the new position. */
function readFrom(fd: number, pos: number): { text: Buffer; pos: number } {
  const size = fs.fstatSync(fd).size;
  if (size < pos) pos = 0; // truncated: start again
  const start = Math.max(pos, size - MAX_READ);
  const buf = Buffer.alloc(size - start);
  let n = 0;
  while (n < buf.length) {
    const got = fs.readSync(fd, buf, n, buf.length - n, start + n);
    if (got === 0) break;
    n += got;
  }
  return { text: buf.subarray(0, n), pos: start + n };
}

/** Splits sanitised text into lines, keeping an unfinished last line for later. */
class LineSplitter {
  private readonly filter = new TextFilter();
  private rest = '';
  push(bytes: Buffer): string[] {
    const parts = (this.rest + this.filter.push(bytes)).split('\n');
    this.rest = parts.pop()!;
    return parts;
  }
  end(): string[] {
    const last = this.rest + this.filter.end();
    this.rest = '';
    return last === '' ? [] : [last];
  }
}

function stage1Name(pod: Pod): string {
  try {
    return stage1Manifest(pod.paths).name;
  } catch {
    return 'unknown';
  }
}

export interface LogSink {
  send(lines: string[]): void;
  cancelled(): boolean;
}

/** Check a GetLogs request before any line is sent. */
function checkRequest(dataDir: string, req: GetLogsRequest): Pod {
  if (req.pod_id === '') throw new ApiError('INVALID_ARGUMENT', 'no pod_id given');
  if (req.lines < 0) throw new ApiError('INVALID_ARGUMENT', `lines must not be negative (got ${req.lines})`);
  if (int64(req.since_time, 'since_time') !== 0 || int64(req.until_time, 'until_time') !== 0) {
    throw new ApiError('UNIMPLEMENTED', 'since_time and until_time cannot be honoured: console log lines carry no time stamps; ask for the last lines instead');
  }
  const pod = Pod.find(dataDir, req.pod_id);
  if (req.app_name !== '') {
    const apps = pod.manifestIfWritten()?.apps.map((a) => a.name) ?? [];
    if (!apps.includes(req.app_name)) throw new ApiError('NOT_FOUND', `pod ${pod.uuid} has no app named "${req.app_name}"`);
    throw new ApiError('UNIMPLEMENTED', `pod ${pod.uuid} keeps no per-app logs (a kvm pod keeps one console log for the whole pod); ask without app_name`);
  }
  return pod;
}

export async function streamLogs(dataDir: string, req: GetLogsRequest, sink: LogSink): Promise<void> {
  const pod = checkRequest(dataDir, req);
  const current = path.join(pod.dir, CONSOLE_LOG);
  const previous = `${current}.1`;
  let cur = openLog(pod, current);
  const prev = openLog(pod, previous);
  if (!cur && !prev) {
    throw new ApiError('NOT_FOUND', `pod ${pod.uuid} has no logs: its stage1 (${stage1Name(pod)}) keeps none; only kvm pods keep a console log`);
  }
  const split = new LineSplitter();
  let lines: string[] = [];
  if (prev) {
    lines.push(...split.push(readFrom(prev.fd, 0).text));
    closeLog(prev);
  }
  let pos = 0;
  if (cur) {
    const r = readFrom(cur.fd, 0);
    pos = r.pos;
    lines.push(...split.push(r.text));
  }
  if (!req.follow) lines.push(...split.end());
  if (req.lines > 0) lines = lines.slice(-req.lines);
  try {
    if (lines.length > 0) sink.send(lines);
    while (req.follow && !sink.cancelled()) {
      const running = Pod.find(dataDir, pod.uuid).state() === 'running';
      // the run entrypoint rotates by renaming: finish the old file, then go on with the new one
      let ino: number | undefined;
      try {
        ino = fs.lstatSync(current).ino;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
      if (cur) {
        const r = readFrom(cur.fd, pos);
        pos = r.pos;
        const got = split.push(r.text);
        if (got.length > 0) sink.send(got);
      }
      if (ino !== undefined && ino !== cur?.ino) {
        if (cur) closeLog(cur);
        cur = openLog(pod, current);
        pos = 0;
        continue;
      }
      if (!running) break;
      await sleep(FOLLOW_POLL_MS);
    }
    const tail = req.follow ? split.end() : [];
    if (tail.length > 0 && !sink.cancelled()) sink.send(tail);
  } finally {
    if (cur) closeLog(cur);
  }
}
