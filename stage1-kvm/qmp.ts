// QMP client for the kvm stage1: one instance per pod's qemu monitor socket.
//
// Protocol (qemu docs/interop/qmp-spec.rst): on connect qemu sends a greeting,
// the client must send `qmp_capabilities` before anything else works, then
// commands carry an `id` echoed in their response, and events may arrive at any
// time between responses. qemu emits the event a command causes *before* that
// command's response (RESUME before cont's return, SHUTDOWN before quit's), so
// a wait started after `await execute(...)` would miss it: arm the wait first,
// or pass `since: client.eventMark()` taken before the command.

import type net from 'node:net';
import {
  QmpClosedError,
  QmpProtocolError,
  QmpTimeoutError,
  TRUNCATED_EXCERPT_CHARS,
  formatMs,
  type QmpTruncatedMessage,
} from './qmp/errors.js';
import { CommandBook } from './qmp/commands.js';
import { LineSplitter } from './qmp/framing.js';
import { EventHub, type QmpWaitOptions } from './qmp/events.js';
import type { AnyListener } from './qmp/listeners.js';
import type { KnownQmpEventName, QmpEvent, QmpEventOf, QmpGreeting, QmpStatus } from './qmp/types.js';
import { isRecord, openSocket, parseGreeting, parseMessage, parseTimestamp } from './qmp/wire.js';

export * from './qmp/errors.js';
export type * from './qmp/types.js';
export type { QmpWaitOptions } from './qmp/events.js';

export interface QmpConnectOptions {
  /**
   * One budget for the handshake (the greeting, then the answer to
   * qmp_capabilities), counted from the moment the socket is connected; the
   * retrying of retryUntilMs comes before it and is not part of it. Also the
   * default timeout of every later command. Default 5000.
   */
  timeoutMs?: number;
  /**
   * Keep retrying for this long while the socket is absent or refuses (qemu
   * still starting). Default 0. connect() thus takes at most about
   * retryUntilMs + timeoutMs.
   */
  retryUntilMs?: number;
}

export interface QmpExecuteOptions {
  /** Overrides the client's default; Infinity waits forever. */
  timeoutMs?: number;
}

export type QmpCloseReason = QmpClosedError | QmpProtocolError;

const DEFAULT_TIMEOUT_MS = 5000;
// Cap on one message from qemu, and so on what is buffered between reads.
// The largest reply seen in practice is query-qmp-schema (a few hundred KiB);
// qemu's own parser caps a request at 64 MiB likewise.
const MAX_LINE_CHARS = 64 * 1024 * 1024;

export class QmpClient {
  readonly socketPath: string;

  private readonly socket: net.Socket;
  private readonly defaultTimeoutMs: number;
  private readonly splitter = new LineSplitter(MAX_LINE_CHARS);
  private readonly commands: CommandBook;
  /** Ids of the commands sent whose answer has not arrived, oldest first, timed-out ones included. */
  private readonly events: EventHub;
  private greetingMsg: QmpGreeting | undefined;
  private nextId = 1;
  private socketError: Error | undefined;
  private closeReason: QmpCloseReason | undefined;
  private greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void } | undefined;
  private resolveClosed!: () => void;
  private readonly closed = new Promise<void>((resolve) => (this.resolveClosed = resolve));

  private constructor(socket: net.Socket, socketPath: string, defaultTimeoutMs: number) {
    this.socket = socket;
    this.socketPath = socketPath;
    this.defaultTimeoutMs = defaultTimeoutMs;
    this.events = new EventHub(socketPath);
    this.commands = new CommandBook(socketPath);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    // 'close' always follows 'error'; remember the cause for the message.
    socket.on('error', (err) => (this.socketError = err));
    socket.on('close', () => {
      this.finish(new QmpClosedError(socketPath, true, undefined, { cause: this.socketError, truncated: this.truncatedAtEof() }));
      this.resolveClosed();
    });
  }

  /** Connects, reads the greeting, negotiates capabilities; resolves when commands may be sent. */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const socket = await openSocket(socketPath, opts.retryUntilMs ?? 0);
    const client = new QmpClient(socket, socketPath, timeoutMs);
    const deadline = Date.now() + timeoutMs;
    try {
      await client.readGreeting(timeoutMs);
      // We enable no capability: out-of-band execution is not needed by rkt
      // (and its absence is what keeps qemu's answers in order, see answerWithoutId).
      await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(0, deadline - Date.now()) }).catch((err: unknown) => {
        if (!(err instanceof QmpTimeoutError)) throw err;
        const msg = `qemu did not answer 'qmp_capabilities' on ${socketPath} within ${formatMs(timeoutMs)} of connecting; is the VM still running?`;
        throw new QmpTimeoutError(socketPath, 'qmp_capabilities', timeoutMs, msg);
      });
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  /** qemu's version and offered capabilities, from the greeting. */
  get greeting(): QmpGreeting {
    // connect() only hands out clients that have been greeted.
    return this.greetingMsg as QmpGreeting;
  }

  /** qemu's version as "major.minor.micro". */
  get qemuVersion(): string {
    const v = this.greeting.version.qemu;
    return `${v.major}.${v.minor}.${v.micro}`;
  }

  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  /** Work still waiting for qemu; for diagnostics and leak checks in tests. */
  get outstanding(): { commands: number; eventWaiters: number } {
    return { commands: this.commands.size, eventWaiters: this.events.waiting };
  }

  /**
   * Runs a command. Responses are matched by id. A timeout does not cancel the
   * command inside qemu (QMP cannot); its late answer is dropped.
   */
  execute<T = unknown>(command: string, args?: object, opts: QmpExecuteOptions = {}): Promise<T> {
    if (this.closeReason) return Promise.reject(this.closedErrorFor(`'${command}'`));
    const id = this.nextId++;
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    let line: string;
    try {
      // Before anything is registered: unserialisable args (BigInt, cycles) must leave no trace.
      line = `${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`;
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<T>((resolve, reject) => {
      this.commands.add(id, command, timeoutMs, (v) => resolve(v as T), reject);
      this.socket.write(line);
    });
  }

  /** Position in the event stream; pass it as `since` to a later waitForEvent. */
  eventMark(): number {
    return this.events.mark;
  }

  /**
   * Resolves with the first matching event. The wait is armed synchronously, so
   * calling this before execute() cannot miss the event the command causes.
   */
  waitForEvent<N extends KnownQmpEventName>(names: N | readonly N[], opts: QmpWaitOptions<QmpEventOf<N>>): Promise<QmpEventOf<N>>;
  waitForEvent(names: string | readonly string[], opts: QmpWaitOptions<QmpEvent>): Promise<QmpEvent>;
  waitForEvent(names: string | readonly string[], opts: QmpWaitOptions<QmpEvent>): Promise<QmpEvent> {
    const closed = this.closeReason ? (label: string) => this.closedErrorFor(label) : undefined;
    return this.events.wait(typeof names === 'string' ? [names] : names, opts, closed);
  }

  /** Resolves with the reason once the connection is closed (by either side). */
  async waitForClose(opts: { timeoutMs: number }): Promise<QmpCloseReason> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      if (!Number.isFinite(opts.timeoutMs)) return;
      timer = setTimeout(() => {
        const msg = `qemu still holds its QMP socket ${this.socketPath} open after ${formatMs(opts.timeoutMs)}; it is not exiting: kill the qemu process`;
        reject(new QmpTimeoutError(this.socketPath, 'close', opts.timeoutMs, msg));
      }, opts.timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return this.closeReason as QmpCloseReason;
  }

  on(name: 'event', listener: (event: QmpEvent) => void): this;
  on(name: 'close', listener: (reason: QmpCloseReason) => void): this;
  on<N extends KnownQmpEventName>(name: N, listener: (event: QmpEventOf<N>) => void): this;
  on(name: string, listener: (event: QmpEvent) => void): this;
  on(name: string, listener: AnyListener): this {
    if (!this.closeReason) this.events.listeners.add(name, listener, false);
    else if (name === 'close') this.lateClose(listener);
    // Any other listener added once closed would never fire: not kept.
    return this;
  }

  once(name: 'event', listener: (event: QmpEvent) => void): this;
  once(name: 'close', listener: (reason: QmpCloseReason) => void): this;
  once<N extends KnownQmpEventName>(name: N, listener: (event: QmpEventOf<N>) => void): this;
  once(name: string, listener: (event: QmpEvent) => void): this;
  once(name: string, listener: AnyListener): this {
    if (!this.closeReason) this.events.listeners.add(name, listener, true);
    else if (name === 'close') this.lateClose(listener);
    return this;
  }

  off(name: string, listener: AnyListener): this {
    this.events.listeners.remove(name, listener);
    return this;
  }

  listenerCount(name?: string): number {
    return this.events.listeners.count(name);
  }

  async queryStatus(opts?: QmpExecuteOptions): Promise<QmpStatus> {
    const r = await this.execute<QmpStatus>('query-status', undefined, opts);
    return { running: r.running, status: r.status };
  }

  /** Presses the ACPI power button; the guest decides whether and when to shut down. */
  async systemPowerdown(opts?: QmpExecuteOptions): Promise<void> {
    await this.execute('system_powerdown', undefined, opts);
  }

  async cont(opts?: QmpExecuteOptions): Promise<void> {
    await this.execute('cont', undefined, opts);
  }

  async stop(opts?: QmpExecuteOptions): Promise<void> {
    await this.execute('stop', undefined, opts);
  }

  /**
   * Tells qemu to exit and resolves once it has closed the socket (which it
   * does as it exits). The process may outlive the socket by a moment: reap it.
   */
  async quit(opts: QmpExecuteOptions = {}): Promise<void> {
    // One budget for answer plus exit: callers think "quit within 5s".
    const deadline = Date.now() + (opts.timeoutMs ?? this.defaultTimeoutMs);
    try {
      await this.execute('quit', undefined, { timeoutMs: deadline - Date.now() });
    } catch (err) {
      // qemu may go away before its answer is flushed: that is what we asked for.
      if (!(err instanceof QmpClosedError && err.byPeer)) throw err;
    }
    await this.waitForClose({ timeoutMs: Math.max(0, deadline - Date.now()) });
  }

  /** Closes the connection (qemu keeps running); rejects outstanding work. Idempotent. */
  close(): Promise<void> {
    if (!this.closeReason) this.finish(new QmpClosedError(this.socketPath, false, undefined));
    return this.closed;
  }

  /**
   * A 'close' listener added after the connection closed still learns why:
   * once, and asynchronously as it would have (never from inside on()).
   * Registered as a once listener meanwhile, so off() can still withdraw it.
   */
  private lateClose(listener: AnyListener): void {
    this.events.listeners.add('close', listener, true);
    process.nextTick(() => this.events.listeners.emit('close', this.closeReason));
  }

  private readGreeting(timeoutMs: number): Promise<QmpGreeting> {
    return new Promise<QmpGreeting>((resolve, reject) => {
      // setTimeout(Infinity) would fire at once, hence the check.
      const timer = !Number.isFinite(timeoutMs)
        ? undefined
        : setTimeout(() => {
            this.greetingWaiter = undefined;
            const msg = `qemu sent no QMP greeting on ${this.socketPath} within ${formatMs(timeoutMs)}; another client may hold the monitor (qemu serves one at a time)`;
            reject(new QmpTimeoutError(this.socketPath, 'greeting', timeoutMs, msg));
          }, timeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        this.greetingWaiter = undefined;
      };
      this.greetingWaiter = {
        resolve: (g) => (settle(), resolve(g)),
        reject: (e) => (settle(), reject(e)),
      };
    });
  }

  private onData(chunk: string): void {
    let lines: string[];
    try {
      lines = this.splitter.push(chunk);
    } catch (err) {
      this.finish(new QmpProtocolError(this.socketPath, (err as Error).message, err));
      return;
    }
    for (const line of lines) {
      if (this.closeReason) return; // a listener closed us mid-chunk
      let msg: Record<string, unknown>;
      try {
        msg = parseMessage(line, this.socketPath);
      } catch (err) {
        this.finish(err as QmpProtocolError);
        return;
      }
      this.dispatch(msg, line);
    }
  }

  private dispatch(msg: Record<string, unknown>, line: string): void {
    if (this.greetingMsg === undefined) {
      const greeting = parseGreeting(msg);
      if (greeting === undefined) {
        // the line, not JSON.stringify(msg): re-encoding a deeply nested object overflows the stack
        this.finish(new QmpProtocolError(this.socketPath, `expected the QMP greeting, got ${line.slice(0, 80)}`));
      } else {
        this.greetingMsg = greeting;
        this.greetingWaiter?.resolve(greeting);
      }
      return;
    }
    if (typeof msg.event === 'string') this.dispatchEvent(msg, msg.event);
    else if ('return' in msg || 'error' in msg) this.commands.answer(msg);
    // Anything else is a message shape from a future qemu: ignore it.
  }

  /** What was left of a message cut off by the end of the connection, bounded, for the close reason. */
  private truncatedAtEof(): QmpTruncatedMessage | undefined {
    const rest = this.splitter.remainder;
    if (rest.trim() === '') return undefined;
    return { chars: rest.length, excerpt: rest.slice(0, TRUNCATED_EXCERPT_CHARS) };
  }

  private dispatchEvent(msg: Record<string, unknown>, name: string): void {
    const data = isRecord(msg.data) ? msg.data : undefined;
    this.events.deliver({ event: name, data, timestamp: parseTimestamp(msg.timestamp) });
  }

  private closedErrorFor(what: string): QmpCloseReason {
    const reason = this.closeReason;
    if (reason instanceof QmpProtocolError) return reason;
    return new QmpClosedError(this.socketPath, reason?.byPeer ?? false, what, { cause: reason?.cause, truncated: reason?.truncated });
  }

  /** Single exit path: whatever ends the connection, everything outstanding is settled exactly once. */
  private finish(reason: QmpCloseReason): void {
    if (this.closeReason) return;
    this.closeReason = reason;
    this.socket.destroy();
    this.greetingWaiter?.reject(this.closedErrorFor('the QMP greeting'));
    this.commands.failAll((command) => this.closedErrorFor(`'${command}'`));
    this.events.failWaiters((label) => this.closedErrorFor(label));
    this.events.listeners.emit('close', reason);
    this.events.listeners.clear();
  }
}
