// A request this runtime refuses: one printable line for stderr and the
// shim's log, whatever bytes of the config it quotes.
export class OciError extends Error {
  constructor(message: string) {
    const line = message.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    super(line.length > 1000 ? `${line.slice(0, 1000)}...` : line);
  }
}
