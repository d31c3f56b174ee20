import { AgentProtocolError, FRAME_HEADER_BYTES, FRAME_MAX_PAYLOAD, KNOWN_TYPES, type Frame, type FrameTypeCode } from './agent-protocol.js';

// The agent protocol's frames (agent-protocol.ts) out of a byte stream.

/**
 * Splits a byte stream into frames, whatever the chunking of the transport.
 * Chunks are kept as they come and joined once per frame: joining on every
 * push would cost time quadratic in the frame size when the guest dribbles a
 * large frame a few bytes at a time.
 */
const EMPTY = Buffer.alloc(0);

export class FrameDecoder {
  private chunks: Buffer[] = [];
  /** Index of the first chunk still buffered (shifting the array each time would be quadratic too). */
  private head = 0;
  private length = 0;

  /** Every frame completed by this chunk, in order. Throws AgentProtocolError on a bad header. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.length >= FRAME_HEADER_BYTES) {
      const header = this.peek(FRAME_HEADER_BYTES);
      const type = header.readUInt8(0);
      const len = header.readUInt32BE(1);
      if (!KNOWN_TYPES.has(type)) throw new AgentProtocolError(`unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
      if (len > FRAME_MAX_PAYLOAD) throw new AgentProtocolError(`frame of ${len} bytes exceeds ${FRAME_MAX_PAYLOAD}`);
      if (this.length - FRAME_HEADER_BYTES < len) break;
      this.take(FRAME_HEADER_BYTES);
      frames.push({ type: type as FrameTypeCode, payload: this.take(len) });
    }
    if (this.head > 0 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return frames;
  }

  /** Bytes of an incomplete frame still buffered. */
  get buffered(): number {
    return this.length;
  }

  /** The first n buffered bytes, left in place. */
  private peek(n: number): Buffer {
    const first = this.chunks[this.head]!;
    return first.length >= n ? first : this.copy(n, false);
  }

  /** The first n buffered bytes, removed; always a copy, as the caller may keep it while later chunks arrive. */
  private take(n: number): Buffer {
    return this.copy(n, true);
  }

  private copy(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let i = this.head;
    while (filled < n) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k < c.length) {
        if (consume) this.chunks[i] = c.subarray(k);
      } else {
        if (consume) this.chunks[i] = EMPTY; // let go of it now, not at the next compaction
        i++;
      }
    }
    if (consume) {
      this.head = i;
      this.length -= n;
    }
    return out;
  }
}
