// QMP framing: qemu writes one JSON object per line, each terminated by CRLF,
// and never a raw newline inside an object (strings escape it). A socket read
// may end anywhere, so bytes are buffered until a full line is present.

/** Splits a character stream into complete lines, CR and LF removed, blank lines dropped. */
export class LineSplitter {
  private pending = '';

  /**
   * @param maxLineChars cap on one line, complete or still buffered: the only
   *   data kept from the peer between reads. Without it a peer that never
   *   sends a newline (wrong socket, binary garbage) would grow it without bound.
   */
  constructor(private readonly maxLineChars: number) {}

  /** Returns the lines completed by `chunk`; throws RangeError on an overlong line. */
  push(chunk: string): string[] {
    // Only the new chunk is searched: a long line arriving in many reads is
    // not rescanned from its start each time.
    const nl = chunk.lastIndexOf('\n');
    if (nl < 0) {
      this.pending += chunk;
      this.check(this.pending.length);
      return [];
    }
    const parts = (this.pending + chunk.slice(0, nl)).split('\n');
    this.pending = chunk.slice(nl + 1);
    this.check(this.pending.length);
    const lines: string[] = [];
    for (const part of parts) {
      this.check(part.length);
      const line = part.endsWith('\r') ? part.slice(0, -1) : part;
      if (line.trim() !== '') lines.push(line);
    }
    return lines;
  }

  /** Characters received after the last line end (a truncated message at EOF); bounded by maxLineChars. */
  get remainder(): string {
    return this.pending;
  }

  private check(chars: number): void {
    if (chars > this.maxLineChars) {
      throw new RangeError(`a message exceeded ${this.maxLineChars} characters without a line end`);
    }
  }
}
