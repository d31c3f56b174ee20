// Compression of ACI files, detected from content. File names lie (the spec
// mandates ".aci" whatever the compression), so only magic bytes count.
//
// gzip runs in-process (zlib, on the thread pool); bzip2 and xz run as child
// processes, which are fast, already on every host, and keep a decoder bug
// out of our address space. A decoder that fails, or input that ends early,
// always surfaces as an ImageFormatError: the output stream never ends
// cleanly before the decoder has said the input was complete.

import { spawn } from 'node:child_process';
import { Readable, Transform, pipeline } from 'node:stream';
import zlib from 'node:zlib';
import { ImageFormatError, RktError } from '../errors.js';

export type Compression = 'gzip' | 'bzip2' | 'xz' | 'none';

/** Bytes needed to tell every supported format apart. */
export const SNIFF_BYTES = 512;

const MAGIC: [Compression, number[]][] = [
  ['gzip', [0x1f, 0x8b, 0x08]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
];

// Formats people hand us by mistake, named so the error says what to do.
const KNOWN_OTHERS: [string, number[]][] = [
  ['zstd-compressed data (appc allows gzip, bzip2 or xz)', [0x28, 0xb5, 0x2f, 0xfd]],
  ['a zip archive', [0x50, 0x4b, 0x03, 0x04]],
  ['an OpenPGP message (decrypt the image first)', [0x85]],
  ['an ASCII-armored OpenPGP file (is this the .asc signature?)', [...Buffer.from('-----BEGIN PGP')]],
  ['an HTML page (check the URL)', [...Buffer.from('<!DOCTYPE')]],
  ['an HTML page (check the URL)', [...Buffer.from('<html')]],
];

function startsWith(buf: Buffer, magic: number[]): boolean {
  return buf.length >= magic.length && magic.every((b, i) => buf[i] === b);
}

function plausibleTarHeader(head: Buffer): boolean {
  if (head.length < 512) return false;
  const magic = head.subarray(257, 262).toString('latin1');
  if (magic === 'ustar') return true;
  // A pre-POSIX header has no magic; its checksum still has to add up.
  const field = head.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 8 * 0x20;
  for (let i = 0; i < 512; i++) if (i < 148 || i >= 156) sum += head[i]!;
  return sum === parseInt(field, 8);
}

/** Classify the first bytes of an image; throws ImageFormatError if none fits. */
export function detectCompression(head: Buffer, name = 'image'): Compression {
  for (const [kind, magic] of MAGIC) if (startsWith(head, magic)) return kind;
  if (plausibleTarHeader(head)) return 'none';
  if (head.length >= 1024 && head.subarray(0, 1024).every((b) => b === 0)) return 'none';
  const known = KNOWN_OTHERS.find(([, magic]) => startsWith(head, magic));
  const what = known ? known[0] : `first bytes ${head.subarray(0, 8).toString('hex').replace(/(..)/g, '$1 ').trim() || '(empty file)'}`;
  throw new ImageFormatError(`${name} is not an ACI: unknown format (${what}); expected a tar archive, optionally gzip, bzip2 or xz compressed`);
}

export interface DecompressOptions {
  /** How to name the image in messages. */
  name?: string;
  signal?: AbortSignal;
}

type Setup = { it: AsyncIterator<Buffer>; teardown: () => void };

/**
 * The uncompressed bytes of an ACI, whatever its compression. Destroying the
 * returned stream stops any decoder process and destroys `source`.
 */
export function decompress(source: Readable, opts: DecompressOptions = {}): Readable {
  const name = opts.name ?? 'image';
  let setup: Setup | undefined;
  let pulling = false;
  const ready = prepare(source, name).then((s) => {
    setup = s;
    if (out.destroyed) s.teardown();
  });
  // Fail the stream (and release the source) even if nobody is reading yet.
  ready.catch((err: unknown) => out.destroy(classify(err, name)));

  const out = new Readable({
    highWaterMark: 1024 * 1024,
    read() {
      void pull();
    },
    destroy(err, cb) {
      setup?.teardown();
      source.destroy();
      cb(err);
    },
  });
  const signal = opts.signal;
  if (signal) {
    const onAbort = (): void => {
      out.destroy(new RktError(`reading ${name} was aborted`));
    };
    if (signal.aborted) queueMicrotask(onAbort);
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      out.once('close', () => signal.removeEventListener('abort', onAbort));
    }
  }

  async function pull(): Promise<void> {
    if (pulling) return;
    pulling = true;
    try {
      await ready;
      for (;;) {
        const r = await setup!.it.next();
        if (out.destroyed) return;
        if (r.done) {
          out.push(null);
          return;
        }
        if (!out.push(r.value)) return;
      }
    } catch (err) {
      out.destroy(classify(err, name));
    } finally {
      pulling = false;
    }
  }
  return out;
}

function classify(err: unknown, name: string): Error {
  if (err instanceof RktError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return new ImageFormatError(`${name} is corrupt or truncated: gzip: ${(err as Error).message}`, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}

async function prepare(source: Readable, name: string): Promise<Setup> {
  const src = source[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const head: Buffer[] = [];
  let headLen = 0;
  let ended = false;
  while (headLen < SNIFF_BYTES) {
    const r = await src.next();
    if (r.done) {
      ended = true;
      break;
    }
    const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    head.push(b);
    headLen += b.length;
  }
  const first = Buffer.concat(head);
  const kind = detectCompression(first, name);
  async function* all(): AsyncGenerator<Buffer> {
    yield first;
    while (!ended) {
      const r = await src.next();
      if (r.done) return;
      yield typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    }
  }
  // Uncompressed input skips the stream machinery: one hop fewer per chunk.
  if (kind === 'none') return { it: all(), teardown: () => void src.return?.() };
  const input = Readable.from(all(), { objectMode: false, highWaterMark: 1024 * 1024 });
  const teardownInput = (): void => {
    input.destroy();
    void src.return?.();
  };
  if (kind === 'gzip') {
    const gunzip = zlib.createGunzip({ chunkSize: 256 * 1024 });
    pipeline(input, gunzip, () => undefined);
    return {
      it: gunzip[Symbol.asyncIterator](),
      teardown: () => {
        gunzip.destroy();
        teardownInput();
      },
    };
  }
  return spawnDecoder(kind, input, name, teardownInput);
}

function spawnDecoder(tool: 'bzip2' | 'xz', input: Readable, name: string, teardownInput: () => void): Setup {
  const args = tool === 'xz' ? ['-dc', '-T0'] : ['-dc'];
  const child = spawn(tool, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    if (stderr.length < 4096) stderr += s;
  });
  let spawnError: Error | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      resolve({ code: null, signal: null });
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  const gate = new Transform({
    readableHighWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _enc, cb) {
      cb(null, chunk);
    },
    // Hold back the end of output until the decoder has exited: only a clean
    // exit says the compressed stream was complete and intact.
    flush(cb) {
      void exited.then(({ code, signal }) => cb(code === 0 ? null : failure(code, signal)));
    },
  });
  const failure = (code: number | null, signal: NodeJS.Signals | null): Error => {
    if (spawnError) {
      return new RktError(`cannot decompress ${name}: could not run ${tool} (${spawnError.message}); install ${tool === 'xz' ? 'xz-utils' : 'bzip2'}`);
    }
    // The first line is the diagnosis; bzip2 follows it with advice about files.
    const first = stderr.trim().split('\n')[0]?.replace(/^(xz|bzip2): (\(stdin\): )?/, '').replace(/[;.]$/, '');
    const why = first || (signal ? `killed by ${signal}` : `exit status ${code}`);
    return new ImageFormatError(`${name} is corrupt or truncated: ${tool}: ${why}`);
  };
  child.once('error', () => gate.destroy(failure(null, null)));
  pipeline(input, child.stdin, (err) => {
    // EPIPE just means the decoder stopped reading; its exit status tells why.
    if (err && (err as NodeJS.ErrnoException).code !== 'EPIPE' && !gate.destroyed) {
      gate.destroy(err);
      child.kill('SIGKILL');
    }
  });
  pipeline(child.stdout, gate, () => undefined);
  return {
    it: gate[Symbol.asyncIterator](),
    teardown: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      gate.destroy();
      teardownInput();
    },
  };
}
