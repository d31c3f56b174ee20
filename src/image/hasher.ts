// SHA-512 of a stream, computed off the main thread once the stream is big.
//
// Hashing is the largest single cost of an import (about as much as parsing
// and validating every tar header), and both are CPU-bound on one thread.
// Moving the hash to a worker lets the two overlap on a machine with a spare
// core. Small inputs are hashed inline: starting a worker costs more than
// hashing a few megabytes.

import crypto from 'node:crypto';
import { Worker } from 'node:worker_threads';

const INLINE_LIMIT = 8 * 1024 * 1024;
const BATCH = 1024 * 1024;
// Cap on bytes posted to the worker but not yet hashed, so a fast reader
// cannot queue the whole image in memory.
const MAX_IN_FLIGHT = 32 * 1024 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha512');
parentPort.on('message', (m) => {
  if (m === 'end') parentPort.postMessage({ digest: hash.digest('hex') });
  else { hash.update(new Uint8Array(m)); parentPort.postMessage({ done: m.byteLength }); }
});
`;

export class StreamHasher {
  /** Input held back until it is clear whether a worker pays off. */
  private early: Buffer[] | undefined = [];
  private earlyLength = 0;
  private worker: Worker | undefined;
  private batch: Uint8Array | undefined;
  private batchLength = 0;
  private inFlight = 0;
  private failure: Error | undefined;
  private waiting: (() => void) | undefined;
  private digestWaiter: { resolve: (hex: string) => void; reject: (err: Error) => void } | undefined;

  /**
   * Add bytes (they must not change afterwards). Returns a promise, to be
   * awaited, only when the worker has fallen too far behind.
   */
  update(chunk: Buffer): Promise<void> | undefined {
    if (this.failure) return Promise.reject(this.failure);
    if (this.early) {
      this.early.push(chunk);
      this.earlyLength += chunk.length;
      if (this.earlyLength < INLINE_LIMIT) return undefined;
      this.startWorker();
      for (const c of this.early) this.send(c);
      this.early = undefined;
    } else {
      this.send(chunk);
    }
    if (this.inFlight <= MAX_IN_FLIGHT) return undefined;
    return new Promise((resolve, reject) => {
      this.waiting = () => (this.failure ? reject(this.failure) : resolve());
    });
  }

  /** Hex SHA-512 of everything added. */
  async digest(): Promise<string> {
    if (this.failure) throw this.failure;
    if (this.early) {
      const hash = crypto.createHash('sha512');
      for (const c of this.early) hash.update(c);
      this.early = [];
      return hash.digest('hex');
    }
    this.flushBatch();
    const worker = this.worker!;
    try {
      return await new Promise<string>((resolve, reject) => {
        this.digestWaiter = { resolve, reject };
        worker.postMessage('end');
      });
    } finally {
      void worker.terminate();
    }
  }

  destroy(): void {
    this.fail(new Error('hashing aborted'));
  }

  private startWorker(): void {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    worker.on('message', (m: { done?: number; digest?: string }) => {
      if (m.digest !== undefined) {
        this.digestWaiter?.resolve(m.digest);
        return;
      }
      this.inFlight -= m.done ?? 0;
      if (this.inFlight <= MAX_IN_FLIGHT / 2 && this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w();
      }
    });
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', () => this.fail(new Error('hashing worker exited')));
    this.worker = worker;
  }

  private send(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      this.batch ??= new Uint8Array(BATCH);
      const n = Math.min(chunk.length - off, BATCH - this.batchLength);
      this.batch.set(chunk.subarray(off, off + n), this.batchLength);
      this.batchLength += n;
      off += n;
      if (this.batchLength === BATCH) this.flushBatch();
    }
  }

  private flushBatch(): void {
    if (!this.batch || this.batchLength === 0) return;
    // A full batch is transferred as is; only the last, partial one is copied.
    const whole = this.batch.buffer as ArrayBuffer;
    const buf = this.batchLength === BATCH ? whole : whole.slice(0, this.batchLength);
    this.inFlight += buf.byteLength;
    this.worker!.postMessage(buf, [buf]);
    this.batch = undefined;
    this.batchLength = 0;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.digestWaiter?.reject(err);
    this.waiting?.();
    this.waiting = undefined;
    if (this.worker) void this.worker.terminate();
  }
}
