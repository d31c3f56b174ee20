// CRI pod start through a private containerd 1.6 (the test harness's, test/helpers/containerd.ts):
// RunPodSandbox + CreateContainer + StartContainer until ContainerStatus says RUNNING, timed from
// the first call, for two runtime handlers in turn in the same run (the pods are removed between
// runs, untimed). Writes the times in hyperfine's --export-json shape for bench/ratio.mjs.
// Usage: node bench/cri-start.mjs OUT.json RUNS HANDLER PEER  (as root, after npm run build)
import fs from 'node:fs';
import path from 'node:path';
import { Containerd } from '../dist/test/helpers/containerd.js';
import { SERVER_IMAGE } from '../dist/test/helpers/cri-images.js';
import { removePod, runPod, startContainer, waitState } from '../dist/test/helpers/cri-pod.js';

const [out, runsArg, ...handlers] = process.argv.slice(2);
const runs = Number(runsArg);
const cd = await Containerd.start(handlers);
const times = Object.fromEntries(handlers.map((h) => [h, []]));
try {
  // one untimed warm-up pod each (the snapshots of the image are made then), then RUNS rounds
  for (let i = -1; i < runs; i++) {
    for (const h of handlers) {
      const t0 = performance.now();
      const pod = await runPod(cd, h, `bench-${i + 1}`, path.join(cd.dir, 'logs'));
      const id = await startContainer(cd, pod, { name: 'server', image: SERVER_IMAGE });
      await waitState(cd, id, 'CONTAINER_RUNNING');
      const s = (performance.now() - t0) / 1000;
      if (i >= 0) times[h].push(s);
      console.error(`${h} ${i < 0 ? 'warm-up' : `run ${i + 1}`}: ${s.toFixed(3)} s`);
      await removePod(cd, pod);
    }
  }
} finally {
  await cd.stop();
}
fs.writeFileSync(out, JSON.stringify({ results: handlers.map((h) => ({ command: h, times: times[h] })) }));
