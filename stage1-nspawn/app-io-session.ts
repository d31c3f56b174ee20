import type net from 'node:net';
import type { AppStreams } from '../src/appc/app-streams.js';
import { log } from '../src/log.js';
import {
  AgentProtocolError,
  decodeHostFrame,
  encodeFrame,
  FrameDecoder,
  FrameType,
  sessionFrame,
  STDIN_CHUNK_BYTES,
  type AttachRequest,
  type HostMessage,
} from '../stage1-kvm/agent-protocol.js';
import { attachRefusal } from './attach-rules.js';

// One `rkt attach` connection to the nspawn relay (app-io.ts), in the kvm
// guest agent's framing and order (guest/agent/PROTOCOL.md, "An attach
// session"): the client sends ATTACH, then STDIN, STDIN_EOF and RESIZE; the
// relay answers SESSION, then ERROR 125 if it refuses, else the app's
// output as STDOUT and STDERR frames until either side goes away. So the
// kvm client (stage1-kvm/agent-client.ts, attachToApp) serves both.
//
// The client is root on the host, but the relay lives as long as the pod
// and must not be held up or brought down by one: whatever it sends is
// decoded with the agent protocol's limits, an ATTACH must come in time,
// and a broken frame ends that connection only.

/** How long a client may take to send its ATTACH frame. */
export const ATTACH_WAIT_MS = 10_000;

/** The relay's side of what a session does to the app's streams. */
export interface SessionHooks {
  /** Another session is attached to the app. */
  busy(): boolean;
  attached(s: AppSession): void;
  detached(s: AppSession): void;
  /** Input for the app; false: wait for inputDrain before sending more. */
  input(data: Buffer): boolean;
  inputDrain(cb: () => void): void;
  inputEnd(): void;
  resize(cols: number, rows: number): void;
}

function errorFrame(message: string): Buffer {
  const status = Buffer.alloc(4);
  status.writeUInt32BE(125, 0);
  return encodeFrame(FrameType.Error, Buffer.concat([status, Buffer.from(message)]));
}

export class AppSession {
  private readonly decoder = new FrameDecoder();
  private req: AttachRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly sock: net.Socket,
    private readonly app: string,
    private readonly streams: AppStreams,
    private readonly hooks: SessionHooks,
  ) {}

  start(): void {
    this.timer = setTimeout(() => this.end(), ATTACH_WAIT_MS);
    this.sock.on('data', (d: Buffer) => this.onData(d));
    this.sock.on('close', () => this.end());
  }

  /** Whether this session is attached to the app's stdout or stderr (a terminal's output is stdout). */
  wants(n: 'stdout' | 'stderr'): boolean {
    return this.req !== undefined && !this.done && this.req[n];
  }

  /** Output for the client; false: it is not taking it as fast (see onDrain). */
  send(n: 'stdout' | 'stderr', data: Buffer): boolean {
    const type = n === 'stdout' ? FrameType.Stdout : FrameType.Stderr;
    let ok = true;
    for (let off = 0; off < data.length; off += STDIN_CHUNK_BYTES) ok = this.sock.write(encodeFrame(type, data.subarray(off, off + STDIN_CHUNK_BYTES))) && ok;
    return ok;
  }

  onDrain(cb: () => void): void {
    if (this.done) cb();
    else this.sock.once('drain', cb);
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.sock.end();
    if (this.req !== undefined) this.hooks.detached(this);
  }

  private onData(d: Buffer): void {
    let messages: HostMessage[];
    try {
      messages = this.decoder.push(d).map(decodeHostFrame);
    } catch (err) {
      if (!(err instanceof AgentProtocolError)) throw err;
      log().debug(`app ${this.app}: an attach client broke the protocol: ${err.message}`);
      this.sock.destroy();
      this.end();
      return;
    }
    for (const m of messages) {
      if (this.done) return;
      this.handle(m);
    }
  }

  private handle(m: HostMessage): void {
    if (this.req === undefined) {
      if (m.type !== 'ATTACH') {
        // nothing but an attach is served here (no EXEC: rkt enter goes through nsenter)
        this.refuse(m.type === 'EXEC' ? m.session : undefined, 'the relay of an app serves rkt attach only');
        return;
      }
      clearTimeout(this.timer);
      this.sock.write(sessionFrame(m.session));
      const why = attachRefusal(this.app, this.streams, m.request, this.hooks.busy());
      if (why !== undefined) {
        this.refuse(undefined, why);
        return;
      }
      this.req = m.request;
      if (m.request.cols && m.request.rows) this.hooks.resize(m.request.cols, m.request.rows);
      this.hooks.attached(this);
      return;
    }
    switch (m.type) {
      case 'STDIN':
        if (!this.req.stdin) return;
        if (!this.hooks.input(m.data)) {
          // back-pressure: read no more from the client until the app has taken its input
          this.sock.pause();
          this.hooks.inputDrain(() => this.sock.resume());
        }
        return;
      case 'STDIN_EOF':
        if (this.req.stdin) this.hooks.inputEnd();
        return;
      case 'RESIZE':
        this.hooks.resize(m.cols, m.rows);
        return;
      case 'SIGNAL':
        return; // the app is not the session's to signal
      default:
        this.refuse(undefined, `a second ${m.type} in one session`);
    }
  }

  private refuse(session: number | undefined, why: string): void {
    if (session !== undefined) this.sock.write(sessionFrame(session));
    this.sock.write(errorFrame(why));
    this.end();
  }
}
