import fs from 'node:fs';
import { log } from '../src/log.js';
import { lastLines } from './output.js';
import { podFile } from './pod-files.js';

// The pod's console log, kept by the run entrypoint (qemu writes no file of
// it): what the guest printed on its serial console, already filtered to
// printable text (src/util/untrusted-text.ts), in console.log, and when
// that reaches CONSOLE_LOG_MAX_BYTES it becomes console.log.1 (replacing
// the one before) and a new console.log starts. A guest that prints
// without end costs the host at most twice the cap on disk.

/** The size at which console.log is rotated; the pod keeps at most this twice (current and previous). */
export const CONSOLE_LOG_MAX_BYTES = 1024 * 1024;

export class ConsoleLog {
  private fd: number | undefined;
  private size = 0;
  private failed = false;

  constructor(
    private readonly file: string,
    private readonly maxBytes = CONSOLE_LOG_MAX_BYTES,
  ) {}

  static forPod(podDir: string): ConsoleLog {
    return new ConsoleLog(podFile(podDir, 'consoleLog'));
  }

  get previousFile(): string {
    return `${this.file}.1`;
  }

  append(text: string): void {
    if (text === '' || this.failed) return;
    let buf = Buffer.from(text);
    // only a caller passing more than the cap at once (the relay's chunks are 64 KiB) loses the head
    if (buf.length > this.maxBytes) buf = buf.subarray(buf.length - this.maxBytes);
    try {
      if (this.fd === undefined) this.open();
      if (this.size > 0 && this.size + buf.length > this.maxBytes) this.rotate();
      fs.writeSync(this.fd!, buf);
      this.size += buf.length;
    } catch (err) {
      // a full disk must not take the pod down with it: the log stops, the pod goes on
      this.failed = true;
      log().warn(`cannot write the console log ${this.file}: ${(err as Error).message}; console output is no longer kept`);
      this.close();
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private open(): void {
    // an earlier boot of the same pod (run-prepared after a failure) is kept, within the cap
    this.fd = fs.openSync(this.file, 'a', 0o600);
    this.size = fs.fstatSync(this.fd).size;
  }

  private rotate(): void {
    this.close();
    fs.renameSync(this.file, this.previousFile);
    this.open();
  }
}

/** The last `n` lines the guest printed on its console, sanitised and capped (current log and the one before). */
export function consoleTail(podDir: string, n: number): string[] {
  const file = podFile(podDir, 'consoleLog');
  return lastLines([`${file}.1`, file], n);
}
