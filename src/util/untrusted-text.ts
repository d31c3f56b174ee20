// Text a guest wrote (its console, files it left in the pod) on its way to a
// person: `rkt status`, stderr lines, a terminal. A hostile guest chooses
// every byte of it, and a terminal obeys what it is sent: escape sequences
// move the cursor and rewrite what is already on screen, retitle the
// window, set the clipboard, on some terminals make it answer into its own
// input. What survives the filter is printable text only:
//
// - bytes that are not UTF-8 become U+FFFD (a stray 8-bit C1 byte too, so
//   no terminal reads one as a CSI or OSC introducer);
// - ESC sequences (CSI, OSC, DCS, SOS, PM, APC, and the short ones) and
//   their C1 forms (U+009B, U+009D, ...) are dropped whole: their
//   parameters would otherwise be left behind as noise;
// - every other C0 and C1 control and DEL is dropped, except "\n" and "\t";
//   "\r\n" and a lone "\r" become "\n" (the console's line ends);
// - bidirectional formatting controls are dropped: they reorder how the
//   rest of a line is displayed.
//
// Nothing is buffered beyond three bytes of an unfinished UTF-8 character:
// a sequence that never ends is abandoned after MAX_ESCAPE_CHARS, and the
// text after it is shown again (a guest cannot hide its later output by
// opening an OSC string and never closing it).

/** Characters an escape sequence may run to before it is abandoned. */
export const MAX_ESCAPE_CHARS = 4096;
/** Characters kept of one line of guest text in a message or `rkt status`. */
export const MAX_LINE_CHARS = 300;

const ESC = 0x1b;
const BIDI = new Set([0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069]);

type State = 'text' | 'esc' | 'escIntermediate' | 'csi' | 'string' | 'stringEsc';

/** Streaming filter: push chunks as they arrive (sequences and characters may straddle chunks), then end(). */
export class TextFilter {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private state: State = 'text';
  private seqLen = 0;
  private pendingCr = false;

  /** The printable text of the next chunk of bytes. */
  push(chunk: Uint8Array): string {
    return this.filter(this.decoder.decode(chunk, { stream: true }));
  }

  /** The printable text of the next piece of an already decoded text. */
  pushText(text: string): string {
    return this.filter(text);
  }

  /** What is left: an unfinished character becomes U+FFFD, a pending "\r" a line end. */
  end(): string {
    const rest = this.filter(this.decoder.decode());
    const cr = this.pendingCr ? '\n' : '';
    this.state = 'text';
    this.seqLen = 0;
    this.pendingCr = false;
    return rest + cr;
  }

  private filter(s: string): string {
    const out: string[] = [];
    let runStart = -1;
    const flush = (i: number): void => {
      if (runStart >= 0) out.push(s.slice(runStart, i));
      runStart = -1;
    };
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (this.state !== 'text') {
        if (++this.seqLen > MAX_ESCAPE_CHARS) this.state = 'text';
        else if (!this.inSequence(c)) continue;
        // the sequence ended on something that is not part of it: read that as text
      }
      if (this.pendingCr) {
        this.pendingCr = false;
        flush(i);
        out.push('\n');
        if (c === 0x0a) continue;
      }
      if (printable(c) || c === 0x0a || c === 0x09) {
        if (runStart < 0) runStart = i;
        continue;
      }
      flush(i);
      if (c === 0x0d) this.pendingCr = true;
      else if (c === ESC) this.enter('esc');
      else if (c === 0x9b) this.enter('csi');
      else if (c === 0x90 || c === 0x98 || c === 0x9d || c === 0x9e || c === 0x9f) this.enter('string');
      // anything else (other controls, DEL, bidi) is dropped
    }
    flush(s.length);
    return out.join('');
  }

  private enter(state: State): void {
    this.state = state;
    this.seqLen = 0;
  }

  /**
   * Advance the escape-sequence state with `c`. Returns true when `c` is
   * not part of the sequence and must be read as text (the state is then
   * back to text); false when the sequence consumed it.
   */
  private inSequence(c: number): boolean {
    switch (this.state) {
      case 'esc':
        if (c === 0x5b) this.state = 'csi';
        else if (c === 0x5d || c === 0x50 || c === 0x58 || c === 0x5e || c === 0x5f) this.state = 'string';
        else if (c >= 0x20 && c <= 0x2f) this.state = 'escIntermediate';
        else if (c === ESC) this.seqLen = 0;
        else if (c >= 0x30 && c <= 0x7e) this.state = 'text';
        else return this.abandon();
        return false;
      case 'escIntermediate':
        if (c >= 0x20 && c <= 0x2f) return false;
        if (c >= 0x30 && c <= 0x7e) {
          this.state = 'text';
          return false;
        }
        return this.abandon();
      case 'csi':
        if (c >= 0x20 && c <= 0x3f) return false;
        if (c >= 0x40 && c <= 0x7e) {
          this.state = 'text';
          return false;
        }
        return this.abandon();
      case 'string':
        if (c === 0x07 || c === 0x9c) this.state = 'text';
        else if (c === ESC) this.state = 'stringEsc';
        return false;
      case 'stringEsc':
        // ESC \ is the string terminator; any other ESC ends the string and starts a sequence
        if (c === 0x5c) {
          this.state = 'text';
          return false;
        }
        this.state = 'esc';
        return this.inSequence(c);
      default:
        return true;
    }
  }

  private abandon(): true {
    this.state = 'text';
    return true;
  }
}

function printable(c: number): boolean {
  if (c < 0x20 || c === 0x7f) return false;
  if (c >= 0x80 && c <= 0x9f) return false;
  return !BIDI.has(c);
}

/** Guest bytes or text as printable text with "\n" and "\t" kept. */
export function sanitizeText(input: Uint8Array | string): string {
  const f = new TextFilter();
  return (typeof input === 'string' ? f.pushText(input) : f.push(input)) + f.end();
}

/** At most `max` characters, with "…" in place of what was cut; a surrogate pair is never split. */
export function capLine(s: string, max = MAX_LINE_CHARS): string {
  if (s.length <= max) return s;
  let cut = Math.max(0, max - 1);
  const c = s.charCodeAt(cut - 1);
  if (c >= 0xd800 && c <= 0xdbff) cut--;
  return `${s.slice(0, cut)}…`;
}

/** Guest text as one printable line for a message or `rkt status`: line ends and tabs become spaces, at most `max` characters. */
export function sanitizeLine(input: Uint8Array | string, max = MAX_LINE_CHARS): string {
  return capLine(sanitizeText(input).replace(/[\n\t]+/g, ' ').trim(), max);
}
