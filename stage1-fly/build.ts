import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleEntrypoint, normalizeModes, repoRoot, runAsBuildScript, stage1Manifest, writeAci } from '../src/stage1-common/image-build.js';

// Builds stage1-fly.aci: each entrypoint bundled into one ESM file under
// /fly and a /bin/sh launcher per entrypoint.
//
// Usage: node dist/stage1-fly/build.js [OUTPUT.aci]

const ENTRYPOINTS = ['run', 'enter', 'stop', 'gc'] as const;
const IMAGE_NAME = 'coreos.com/rkt/stage1-fly';

function launcher(entry: string): string {
  // fly runs on the host, so the host's node (>= 20, on PATH) runs the bundle;
  // `exec` keeps the pid stage0 started, which is the pod's pid for run.
  return `#!/bin/sh\n# rkt stage1-fly ${entry} entrypoint. Requires node >= 20 on the host PATH.\nexec node "\${0%/*}/fly/${entry}.mjs" "$@"\n`;
}

export function flyManifest(): object {
  return stage1Manifest(IMAGE_NAME, Object.fromEntries(ENTRYPOINTS.map((e) => [e, `/${e}`])));
}

export async function buildStage1Fly(output: string): Promise<string> {
  const root = repoRoot(import.meta.url);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-fly-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    fs.mkdirSync(path.join(rootfs, 'fly'), { recursive: true });
    // stage0 makes the app mount points here; an empty dir keeps the layout evident
    fs.mkdirSync(path.join(rootfs, 'opt', 'stage2'), { recursive: true });
    for (const e of ENTRYPOINTS) {
      await bundleEntrypoint(path.join(root, 'stage1-fly', 'main', `${e}.ts`), path.join(rootfs, 'fly', `${e}.mjs`));
      fs.writeFileSync(path.join(rootfs, e), launcher(e), { mode: 0o755 });
    }
    normalizeModes(work);
    return await writeAci(work, flyManifest(), output);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

runAsBuildScript(import.meta.url, 'stage1-fly.aci', buildStage1Fly);
