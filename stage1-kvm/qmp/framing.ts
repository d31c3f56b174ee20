// QMP framing: qemu writes one JSON object per line, each terminated by CRLF,
// and never a raw newline inside an object (strings escape it). A socket read
// may end anywhere, so bytes are buffered until a full line is present.

/** Splits a character stream into complete lines, CR and LF removed, blank lines dropped. */
export class LineSplitter {
  private pending = '';

  /**
   * @param maxLineChars guard against a peer that never sends a newline (wrong
   *   socket, binary garbage): without it the buffer would grow without bound.
   */
  constructor(private readonly maxLineChars: number) {}

  /** Returns the lines completed by `chunk`; throws RangeError on an overlong line. */
  push(chunk: string): string[] {
    const text = this.pending + chunk;
    const parts = text.split('\n');
    this.pending = parts.pop() ?? '';
    if (this.pending.length > this.maxLineChars) {
      throw new RangeError(`a message exceeded ${this.maxLineChars} characters without a line end`);
    }
    const lines: string[] = [];
    for (const part of parts) {
      const line = part.endsWith('\r') ? part.slice(0, -1) : part;
      if (line.trim() !== '') lines.push(line);
    }
    return lines;
  }

  /** Characters received after the last line end (a truncated message at EOF). */
  get remainder(): string {
    return this.pending;
  }
}
