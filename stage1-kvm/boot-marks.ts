// The guest's boot as the phase trace (src/util/phase-trace.ts) shows it,
// read off the serial console (console-relay.ts makes the marks): `guest-kernel` at the first text the guest
// prints (the kernel's banner; with --debug, earlycon prints it at once),
// `guest-init` when the kernel hands over to init ("Run /path as init
// process"). The console is the guest's to write, so a hostile guest can
// fake or hide these two marks; they time a boot for a person reading
// --debug output and decide nothing.

/** Longest partial line kept while looking for the init line; the kernel's is far shorter. */
const PARTIAL_MAX = 256;
const INIT_LINE = /^Run \/\S+ as init process/;

export class BootMarks {
  private partial = '';
  private kernel = false;
  private init = false;

  /** Feed the console's filtered text as it arrives; returns the phases it ended. */
  push(text: string): string[] {
    if (this.init || text === '') return [];
    const ended: string[] = [];
    if (!this.kernel) {
      this.kernel = true;
      ended.push('guest-kernel');
    }
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!.slice(-PARTIAL_MAX);
    if (lines.some((l) => INIT_LINE.test(l.replace(/^\[[ 0-9.]*\] /, '').trimEnd()))) {
      this.init = true;
      this.partial = '';
      ended.push('guest-init');
    }
    return ended;
  }
}
