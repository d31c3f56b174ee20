import { pino, type Logger } from 'pino';

// Quiet by default: only warnings reach stderr. --debug shows every step.
// Logs always go to stderr so that stdout carries only machine output.
let logger: Logger | undefined;

function make(level: string): Logger {
  return pino(
    { level, base: undefined, timestamp: false, formatters: { level: (label) => ({ level: label }) } },
    pino.destination({ dest: 2, sync: true }),
  );
}

export function setDebug(on: boolean): void {
  logger = make(on ? 'debug' : 'warn');
}

export function log(): Logger {
  logger ??= make(process.env.RKT_DEBUG === '1' ? 'debug' : 'warn');
  return logger;
}

/** A one-line notice to the user on stderr, in rkt's plain style (not JSON). */
export function warn(message: string): void {
  process.stderr.write(`rkt: ${message}\n`);
}
