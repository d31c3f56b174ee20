import fs from 'node:fs';

// What the host runs and mounts, read from /proc, for tests that must find
// what they left behind.

export interface Proc {
  pid: number;
  argv: string[];
}

export function processes(): Proc[] {
  const out: Proc[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      if (argv.length > 0) out.push({ pid: Number(e), argv });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Mount points under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((m) => m.replace(/\\040/g, ' '))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .reverse();
}

/** The network namespace path in an OCI runtime spec, if it names one. */
export function specNetns(spec: unknown): string | undefined {
  const ns = (spec as { linux?: { namespaces?: { type: string; path?: string }[] } })?.linux?.namespaces ?? [];
  return ns.find((n) => n.type === 'network')?.path || undefined;
}
