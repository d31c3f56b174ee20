// QMP framing: qemu writes one JSON object per line, each terminated by CRLF,
// and never a raw newline inside an object (strings escape it). A socket read
// may end anywhere, so bytes are buffered until a full line is present.

/**
 * Splits a character stream into complete lines, CR and LF removed, blank
 * lines dropped. Only the new chunk is searched for line ends, and a partial
 * line is joined once it completes: rescanning the buffer on every chunk
 * would cost time quadratic in the line length.
 */
export class LineSplitter {
  private parts: string[] = [];
  private partsLength = 0;

  /**
   * @param maxLineChars cap on one line, complete or still buffered: the only
   *   data kept from the peer between reads. Without it a peer that never
   *   sends a newline (wrong socket, binary garbage) would grow it without bound.
   */
  constructor(private readonly maxLineChars: number) {}

  /** Returns the lines completed by `chunk`; throws RangeError on an overlong line. */
  push(chunk: string): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      const piece = chunk.slice(start, nl);
      this.check(this.partsLength + piece.length);
      const raw = this.parts.length === 0 ? piece : this.parts.join('') + piece;
      this.parts = [];
      this.partsLength = 0;
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() !== '') lines.push(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.check(this.partsLength + chunk.length - start);
      this.parts.push(chunk.slice(start));
      this.partsLength += chunk.length - start;
    }
    return lines;
  }

  /** Characters received after the last line end (a truncated message at EOF); bounded by maxLineChars. */
  get remainder(): string {
    return this.parts.join('');
  }

  private check(chars: number): void {
    if (chars > this.maxLineChars) throw new RangeError(`a message exceeded ${this.maxLineChars} characters without a line end`);
  }
}
