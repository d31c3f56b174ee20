// One read of a stream, fed to several consumers: the way to be sure two
// consumers saw the same bytes (a signature check and the import it vouches
// for) is to read the source once, not to open it twice.

import type { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';

export interface TeeBranch {
  stream: Writable;
  /**
   * The consumer may stop taking data before the end (an importer that has
   * seen the end of its archive): a branch closed early is then skipped, not
   * an error.
   */
  mayStopEarly?: boolean;
}

/**
 * Write every chunk of `source` to each branch, reading on only when all
 * branches have taken it (memory stays bounded by the slowest), then end
 * them. Rejects if the source or a branch that must take everything fails;
 * the source and every branch are then destroyed with the error.
 */
export async function tee(source: Readable, branches: TeeBranch[]): Promise<void> {
  // failures are read from stream.errored; a listener keeps them from crashing the process
  const ignore = (): void => undefined;
  for (const b of branches) b.stream.on('error', ignore);
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      await Promise.all(branches.map((b) => writeTo(b, chunk)));
    }
    const required = branches.filter((b) => !gone(b));
    for (const b of required) b.stream.end();
    await Promise.all(
      required.map(async (b) => {
        try {
          await finished(b.stream);
        } catch (err) {
          if (!b.mayStopEarly) throw err;
        }
      }),
    );
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    source.destroy(e);
    for (const b of branches) b.stream.destroy(e);
    throw e;
  }
}

function gone(b: TeeBranch): boolean {
  return b.stream.destroyed || b.stream.writableEnded;
}

async function writeTo(b: TeeBranch, chunk: Buffer): Promise<void> {
  if (gone(b)) {
    if (b.mayStopEarly && !b.stream.errored) return;
    throw b.stream.errored ?? new Error('a consumer of the stream closed before its end');
  }
  if (b.stream.write(chunk)) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      b.stream.off('drain', done);
      b.stream.off('close', done);
      b.stream.off('error', done);
      resolve();
    };
    b.stream.on('drain', done);
    b.stream.on('close', done);
    b.stream.on('error', done);
  });
  if (b.stream.errored && !b.mayStopEarly) throw b.stream.errored;
}
