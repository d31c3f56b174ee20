import test from 'ava';
import fc from 'fast-check';
import { capLine, MAX_ESCAPE_CHARS, MAX_LINE_CHARS, sanitizeLine, sanitizeText, TextFilter } from '../../src/util/untrusted-text.js';

// Guest text on its way to a person: what a hostile guest could make a
// terminal do must not survive, and what is ordinary text must.

/** Anything a terminal could act on: C0 but "\n" and "\t", DEL, C1, bidi controls. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

test('plain text, line ends and tabs are kept; CRLF and a lone CR become LF', (t) => {
  t.is(sanitizeText('hello wörld ✓ 日本\tx\n'), 'hello wörld ✓ 日本\tx\n');
  t.is(sanitizeText('a\r\nb\rc\r'), 'a\nb\nc\n');
  t.is(sanitizeText('\u{1f600} ok'), '\u{1f600} ok');
});

test('C0 controls, DEL and bidi controls are dropped', (t) => {
  t.is(sanitizeText('a\x00b\x07c\x08d\x0be\x0cf\x7fg'), 'abcdefg');
  t.is(sanitizeText('safe\u202etxt.exe\u2066x\u2069'), 'safetxt.exex');
});

test('CSI sequences go whole: colours, cursor moves, erase, private modes', (t) => {
  t.is(sanitizeText('\x1b[0;32mgreen\x1b[0m'), 'green');
  t.is(sanitizeText('x\x1b[2J\x1b[H\x1b[?1049h\x1b[3;1Hy'), 'xy');
  t.is(sanitizeText('\x1b[>0c\x1b[6n'), '', 'queries that make a terminal answer into its input');
  // a malformed CSI ends where the first foreign character is; that character is text
  t.is(sanitizeText('\x1b[12\x01z'), 'z');
  t.is(sanitizeText('\x1b[12\nz'), '\nz');
});

test('OSC, DCS, APC, PM and SOS strings go whole, ended by BEL, ST or ESC \\', (t) => {
  t.is(sanitizeText('a\x1b]0;pwned title\x07b'), 'ab');
  t.is(sanitizeText('a\x1b]52;c;ZXZpbA==\x1b\\b'), 'ab', 'clipboard write');
  t.is(sanitizeText('a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b'), 'alinkb');
  t.is(sanitizeText('a\x1bPq#0;2;0;0;0\x1b\\b'), 'ab');
  t.is(sanitizeText('a\x1b_apc\x1b\\b\x1b^pm\x07c\x1bXsos\x1b\\d'), 'abcd');
  // another ESC inside a string ends it and starts a sequence of its own
  t.is(sanitizeText('a\x1b]0;t\x1b[31mb'), 'ab');
});

test('short ESC sequences go: charsets, keypad modes, index, reset', (t) => {
  t.is(sanitizeText('a\x1b(0b\x1b)Bc\x1b=d\x1b>e\x1bcf\x1b7g\x1b8h\x1b#8i'), 'abcdefghi');
  t.is(sanitizeText('a\x1b\x1b[1mb'), 'ab');
  t.is(sanitizeText('end\x1b'), 'end');
});

test('C1 controls: 8-bit bytes are not UTF-8 and become U+FFFD; encoded ones are dropped with their sequence', (t) => {
  t.is(sanitizeText(bytes('a\x9b31mb\x9d0;x\x9cc\x85d')), 'a\ufffd31mb\ufffd0;x\ufffdc\ufffdd');
  t.is(sanitizeText('a\u009b31mb\u009d0;title\u009cc\u0085d\u0090dcs\u009ce'), 'abcde');
});

test('malformed UTF-8 becomes U+FFFD, never a control', (t) => {
  const bad = Buffer.from([0x61, 0xc3, 0x28, 0x62, 0xe2, 0x82, 0x63, 0xf0, 0x28, 0x8c, 0x28, 0xc0, 0x9b, 0xed, 0xa0, 0x80, 0x64, 0xff]);
  const out = sanitizeText(bad);
  t.false(UNSAFE.test(out), JSON.stringify(out));
  t.regex(out, /^a\ufffd\(b\ufffdc\ufffd\(\ufffd\(\ufffd+d\ufffd$/);
  // an overlong encoding of ESC (C0 9B) or of CSI (C2 9B decodes to U+009B, dropped as a sequence start)
  t.is(sanitizeText(Buffer.from([0xc0, 0x9b, 0x5b, 0x32, 0x4a, 0x78])), '\ufffd\ufffd[2Jx');
  t.is(sanitizeText(Buffer.from([0xc2, 0x9b, 0x32, 0x4a, 0x78])), 'x');
});

test('sequences and characters split across chunks are filtered as if whole', (t) => {
  const whole = Buffer.from('é\x1b]0;title\x1b\\a\x1b[1;31mb\r\nc\u009b2Jd✓\x1b(Be\r');
  const expected = sanitizeText(whole);
  t.is(expected, 'éab\ncd✓e\n');
  for (let i = 0; i <= whole.length; i++) {
    const f = new TextFilter();
    t.is(f.push(whole.subarray(0, i)) + f.push(whole.subarray(i)) + f.end(), expected, `split at ${i}`);
  }
  const f = new TextFilter();
  let byByte = '';
  for (const b of whole) byByte += f.push(Buffer.from([b]));
  t.is(byByte + f.end(), expected, 'one byte at a time');
});

test('an escape string that never ends is abandoned: later text shows again', (t) => {
  const hidden = 'h'.repeat(MAX_ESCAPE_CHARS + 10);
  const out = sanitizeText(`a\x1b]0;${hidden}`);
  t.true(out.startsWith('a'));
  t.true(out.length > 0 && out.length < 20, String(out.length));
  t.true(sanitizeText(`\x1b[${'1;'.repeat(MAX_ESCAPE_CHARS)}visible`).endsWith('visible'));
});

test('a 1 MB line: filtered in bounded time; one line of it is capped', (t) => {
  const big = Buffer.alloc(1024 * 1024, 'x');
  big.write('\x1b[31m', 1000, 'latin1');
  const t0 = Date.now();
  const out = sanitizeText(big);
  t.is(out.length, 1024 * 1024 - 5);
  t.true(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
  const line = sanitizeLine(big);
  t.is(line.length, MAX_LINE_CHARS);
  t.true(line.endsWith('…'));
});

test('sanitizeLine: one line, tabs and line ends as spaces, trimmed', (t) => {
  t.is(sanitizeLine('  a\tb\r\nc\x1b[1m\n'), 'a b c');
  t.is(sanitizeLine('abcdef', 4), 'abc…');
  // a surrogate pair is never cut in half
  t.is(capLine('ab\u{1f600}cd', 4), 'ab…');
  t.is(capLine('abc', 3), 'abc');
});

test('property: nothing a terminal acts on survives, whatever the bytes and however they are chunked', (t) => {
  const interesting = fc.constantFrom(0x1b, 0x5b, 0x5d, 0x07, 0x5c, 0x9b, 0x9d, 0x9c, 0xc2, 0x0d, 0x0a, 0x00, 0x7f, 0x50, 0x3b, 0x31, 0x6d);
  const byte = fc.oneof(fc.integer({ min: 0, max: 255 }), interesting);
  t.notThrows(() => fc.assert(
    fc.property(fc.array(byte, { maxLength: 300 }), fc.array(fc.nat(300), { maxLength: 5 }), (arr, cuts) => {
      const input = Buffer.from(arr);
      const whole = sanitizeText(input);
      if (UNSAFE.test(whole) || whole.includes('\x1b')) return false;
      const points = [...new Set(cuts.map((c) => c % (input.length + 1)))].sort((a, b) => a - b);
      const f = new TextFilter();
      let out = '';
      let prev = 0;
      for (const p of [...points, input.length]) {
        out += f.push(input.subarray(prev, p));
        prev = p;
      }
      return out + f.end() === whole;
    }),
    { numRuns: 2000 },
  ));
  // also as text (UTF-16 input: lone surrogates and every C1 code point)
  t.notThrows(() => fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => !UNSAFE.test(sanitizeText(s)) && !sanitizeText(s).includes('\x1b')),
    { numRuns: 2000 },
  ));
});
