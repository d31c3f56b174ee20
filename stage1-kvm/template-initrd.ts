import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

// The template VM's initramfs (template.ts): one static program,
// guest/template/init.c, as /init. The kernel unpacks its own built-in
// initramfs first (/dev/console, /root), so init has a console.

interface CpioEntry {
  name: string;
  mode: number;
  data: Buffer;
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function newcHeader(ino: number, e: CpioEntry | undefined, name: string): Buffer {
  const nameBytes = Buffer.byteLength(name) + 1;
  const fields = [ino, e?.mode ?? 0, 0, 0, e ? 1 : 0, 0, e?.data.length ?? 0, 0, 0, 0, 0, nameBytes, 0];
  const head = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`;
  return Buffer.concat([Buffer.from(head), Buffer.from(`${name}\0`), pad4(110 + nameBytes)]);
}

/** An uncompressed "newc" cpio archive (what the kernel unpacks as an initramfs), root's, with fixed times. */
export function newcArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => parts.push(newcHeader(i + 1, e, e.name), e.data, pad4(e.data.length)));
  parts.push(newcHeader(0, undefined, 'TRAILER!!!'));
  const body = Buffer.concat(parts);
  // archives are padded to 512-byte blocks, as cpio(1) writes them
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/** Build guest/template/init.c (static, like the agent) and write the initramfs holding it to `out`. */
export async function buildTemplateInitrd(root: string, out: string): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-template-init-'));
  try {
    const bin = path.join(work, 'init');
    const r = await execa('gcc', ['-static', '-O2', '-s', '-std=gnu11', '-Wall', '-Wextra', '-o', bin, path.join(root, 'guest', 'template', 'init.c')], { reject: false });
    if (r.exitCode !== 0) throw new Error(`cannot build the template's init (gcc and libc6-dev are needed): ${String(r.stderr).trim() || r.message}`);
    fs.writeFileSync(out, newcArchive([{ name: 'init', mode: 0o100755, data: fs.readFileSync(bin) }]), { mode: 0o644 });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
