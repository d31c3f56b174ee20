import { log } from '../../src/log.js';
import { QmpCommandError, QmpTimeoutError, formatMs } from './errors.js';
import { isRecord } from './wire.js';

// The commands a QMP client has sent and not yet seen answered: matching
// answers to them by id, the answers qemu sends without one, and the
// timeouts. The client owns the socket; this owns the bookkeeping.

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

export class CommandBook {
  private readonly pending = new Map<number, PendingCommand>();
  /** Ids in the order sent, of commands owed an answer (qemu answers in order). */
  private owed: number[] = [];
  /** The answer without an id that started the current run of them, if one is going on. */
  private idlessRun: Record<string, unknown> | undefined;
  private idlessRunLength = 0;

  constructor(private readonly socketPath: string) {}

  get size(): number {
    return this.pending.size;
  }

  /** A command just sent; it fails with a timeout error unless answered within `timeoutMs`. */
  add(id: number, command: string, timeoutMs: number, resolve: (value: unknown) => void, reject: (err: Error) => void): void {
    const entry: PendingCommand = { command, resolve, reject, timer: undefined };
    if (Number.isFinite(timeoutMs)) {
      entry.timer = setTimeout(() => {
        this.pending.delete(id);
        const msg = `qemu did not answer '${command}' on ${this.socketPath} within ${formatMs(timeoutMs)}; is the VM still running?`;
        reject(new QmpTimeoutError(this.socketPath, command, timeoutMs, msg));
      }, timeoutMs);
    }
    this.pending.set(id, entry);
    this.owed.push(id);
  }

  /** The connection is over: every command still waiting fails with the error `errorFor` makes. */
  failAll(errorFor: (command: string) => Error): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.owed = [];
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(errorFor(entry.command));
    }
  }

  /** An answer from qemu (a message with "return" or "error"). */
  answer(msg: Record<string, unknown>): void {
    if (!('id' in msg)) {
      this.answerWithoutId(msg);
      return;
    }
    const id = msg.id;
    const at = this.owed.indexOf(id as number);
    if (at >= 0) {
      // After errors without an id, a command sent before this one and still
      // owed an answer had its request go unread: qemu answers in order (see
      // answerWithoutId), and its error was taken for another's. Otherwise
      // answers are matched by id alone, in whatever order they come.
      const passedOver = this.idlessRun === undefined ? [] : this.owed.splice(0, at);
      this.owed.splice(this.owed.indexOf(id as number), 1);
      for (const earlier of passedOver) this.settle(earlier, this.idlessRun as Record<string, unknown>);
    }
    this.idlessRun = undefined;
    this.settle(id, msg);
  }

  /**
   * An answer without an id. qemu sends one when it could not read a request
   * far enough to find its id: JSON its parser refused (its nesting or size
   * limits, which arguments can exceed), or not an object. rkt enables no
   * out-of-band execution, so qemu handles requests one at a time and
   * answers them in the order sent: the answer is the oldest command's still
   * owed one. That command fails with it at once instead of running into its
   * timeout (if it already timed out, this is its late answer, dropped).
   * But one unreadable request can cost many such errors: qemu's parser
   * resynchronises token by token (a request nested too deep gets one per
   * bracket), so the errors that follow, up to the next answer with an id,
   * are taken as the same request's and only logged. Should two requests in
   * a row be unreadable, the second one fails when the answer to a later
   * command shows that it was passed over (dispatchResponse), or at its
   * timeout.
   */
  private answerWithoutId(msg: Record<string, unknown>): void {
    const where = `on ${this.socketPath}: ${JSON.stringify(msg).slice(0, 200)}`;
    const inRun = this.idlessRun !== undefined;
    this.idlessRun = msg;
    if (inRun) {
      // Thousands of them for one request: said once.
      if (this.idlessRunLength++ === 1) log().debug(`QMP: more answers without an id (qemu resynchronising after an unreadable request), dropped, e.g. ${where}`);
      return;
    }
    this.idlessRunLength = 1;
    const id = this.owed.shift();
    const cmd = id === undefined ? undefined : this.pending.get(id)?.command;
    log().debug(`QMP: answer without an id (qemu could not read a request), taken as ${cmd === undefined ? 'nobody' : `'${cmd}'`}'s ${where}`);
    if (id !== undefined) this.settle(id, msg);
  }

  /** Hands an answer to the command with this id, if one still waits for it. */
  private settle(id: unknown, msg: Record<string, unknown>): void {
    const entry = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (entry === undefined) {
      // The late answer of a timed-out command (the spec tells clients to drop those).
      log().debug(`QMP: dropping an answer no command waits for on ${this.socketPath}: ${JSON.stringify(msg).slice(0, 200)}`);
      return;
    }
    this.pending.delete(id as number);
    clearTimeout(entry.timer);
    if ('error' in msg) {
      const e = isRecord(msg.error) ? msg.error : {};
      const cls = typeof e.class === 'string' ? e.class : 'GenericError';
      const desc = typeof e.desc === 'string' ? e.desc : 'no description';
      entry.reject(new QmpCommandError(this.socketPath, entry.command, cls, desc));
    } else {
      entry.resolve(msg.return);
    }
  }
}
