import test, { type ExecutionContext } from 'ava';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceError } from '@grpc/grpc-js';
import { call } from '../helpers/api-client.js';
import { containerdForFile, handlersUnderTest, type Handler } from '../helpers/containerd.js';
import { CLIENT_IMAGE, SERVER_IMAGE, SERVER_PAGE, SERVER_PORT } from '../helpers/cri-images.js';
import {
  CRI_DEADLINE,
  containerStatus,
  execSync,
  readCriLog,
  removePod,
  runPod,
  sandboxStatus,
  startContainer,
  waitFor,
  waitState,
  type Pod,
} from '../helpers/cri-pod.js';

// containerd 1.6's CRI plugin driving this runtime, called as the kubelet
// calls it, over the CRI v1 gRPC API of a private containerd. One pod at a
// time (a kvm pod is a VM, slow under tcg): the tests are serial.

const handlers = handlersUnderTest();
const daemon = containerdForFile(test, handlers);

/** GET / of the pod's server from the host, retried while the server comes up. */
function httpGet(host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port: SERVER_PORT, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout reaching ${host}:${SERVER_PORT}`)));
    req.on('error', reject);
  });
}

/** A pod with the server container running, its IP in the test's subnet. */
async function serverPod(t: ExecutionContext, h: Handler, name: string): Promise<{ pod: Pod; server: string; ip: string }> {
  const c = daemon();
  const pod = await runPod(c, h, name, path.join(c.dir, 'logs'));
  // a failed assertion ends the test: its pod goes anyway, so the next test starts from a clean host
  t.teardown(() => removePod(c, pod).catch(() => undefined));
  c.notePodNetns();
  const st = await sandboxStatus(c, pod.id);
  t.is(st.state, 'SANDBOX_READY');
  t.is(st.runtime_handler, h);
  const ip = st.network?.ip ?? '';
  t.true(ip.startsWith(`${c.prefix}.`), `pod IP ${ip} from the test's CNI subnet ${c.subnet}`);
  const server = await startContainer(c, pod, { name: 'server', image: SERVER_IMAGE });
  await waitState(c, server, 'CONTAINER_RUNNING');
  return { pod, server, ip };
}

/** Remove the pod as the kubelet does, then check that nothing of it or its containers is left. */
async function removeAndCheck(t: ExecutionContext, pod: Pod, ids: string[]): Promise<void> {
  const c = daemon();
  await removePod(c, pod);
  const { containers } = await call<{ containers: unknown[] }>(c.runtime(), 'ListContainers', { filter: { pod_sandbox_id: pod.id } }, CRI_DEADLINE);
  t.deepEqual(containers, [], 'no container of the removed pod listed');
  // the shim exits just after answering the last delete
  const left = await waitFor('nothing left of the pod', 30_000, async () => {
    const l = await c.leftovers([pod.id, ...ids]);
    return l.length === 0 ? l : undefined;
  }).catch(() => c.leftovers([pod.id, ...ids]));
  t.deepEqual(left, [], 'nothing left behind');
}

function grpcCode(err: unknown): number | undefined {
  return (err as ServiceError).code;
}

for (const h of handlers) {
  test.serial(`${h}: a pod of two containers from two images, server and client on the pod's localhost, logs, exec, stop and remove`, async (t) => {
    t.timeout(30 * 60_000);
    const c = daemon();
    const { pod, server, ip } = await serverPod(t, h, `pair-${h}`);
    const client = await startContainer(c, pod, { name: 'client', image: CLIENT_IMAGE });
    await waitState(c, client, 'CONTAINER_RUNNING');

    // the client reached the server on localhost of the pod and said so on its stdout, which the CRI logs
    const clientLog = path.join(pod.logDir, 'client.log');
    const lines = await waitFor('the client to fetch the page', 300_000, async () => {
      const l = readCriLog(clientLog);
      return l.some((x) => x.message === 'client got the page') ? l : undefined;
    });
    t.deepEqual(
      lines.map((l) => `${l.stream} ${l.message}`),
      [`stdout ${SERVER_PAGE.trim()}`, 'stdout client got the page'],
    );
    t.is((await containerStatus(c, client)).log_path, clientLog);

    // the pod's IP from CNI answers from the host
    t.is(await waitFor('the server from the host', 120_000, () => httpGet(ip)), SERVER_PAGE);
    // httpd -v logs each request ("ADDRESS:PORT: response:200") on stderr: the server's log has
    // the client's and the host's
    const requests = await waitFor('the server to log two requests', 60_000, async () => {
      const l = readCriLog(path.join(pod.logDir, 'server.log')).filter((x) => /response:200/.test(x.message));
      return l.length >= 2 ? l : undefined;
    }).catch((err: Error) => {
      t.fail(`${err.message}; the server's log: ${JSON.stringify(readCriLog(path.join(pod.logDir, 'server.log')))}`);
      return [];
    });
    t.true(requests.some((l) => l.message.includes('127.0.0.1')), 'the client came from localhost of the pod');
    t.deepEqual([...new Set(requests.map((l) => l.stream))], ['stderr'], "the server's stderr logged as stderr");

    // ExecSync: both streams and the exit status, with the image's environment and the pod's
    const ex = await execSync(c, server, ['/bin/sh', '-c', 'echo out $POD_NAME $(pwd); echo err >&2; exit 3']);
    t.deepEqual(ex, { stdout: `out pair-${h} /www\n`, stderr: 'err\n', exit_code: 3 });

    const { containers } = await call<{ containers: { id: string; state: string }[] }>(c.runtime(), 'ListContainers', { filter: { pod_sandbox_id: pod.id } }, CRI_DEADLINE);
    t.deepEqual(containers.map((x) => `${x.id} ${x.state}`).sort(), [`${client} CONTAINER_RUNNING`, `${server} CONTAINER_RUNNING`].sort());

    // StopContainer: SIGTERM, which the client's shell traps to exit 0
    await call(c.runtime(), 'StopContainer', { container_id: client, timeout: 60 }, CRI_DEADLINE);
    const stopped = await containerStatus(c, client);
    t.is(stopped.state, 'CONTAINER_EXITED');
    t.is(stopped.exit_code, 0);
    // the server is not touched by its neighbour's stop
    t.is((await containerStatus(c, server)).state, 'CONTAINER_RUNNING');

    await removeAndCheck(t, pod, [server, client]);
  });

  test.serial(`${h}: unknown ids, a second start, an exec after exit are errors`, async (t) => {
    t.timeout(30 * 60_000);
    const c = daemon();
    const rt = c.runtime();
    const unknown = 'f'.repeat(64);
    for (const [method, req] of [
      ['ContainerStatus', { container_id: unknown }],
      ['StartContainer', { container_id: unknown }],
      ['ExecSync', { container_id: unknown, cmd: ['/bin/true'], timeout: 10 }],
      ['PodSandboxStatus', { pod_sandbox_id: unknown }],
      ['StopPodSandbox', { pod_sandbox_id: unknown }],
    ] as const) {
      const err = await t.throwsAsync(call(rt, method, req, 60_000), undefined, `${method} of an unknown id`);
      t.is(grpcCode(err), 5, `${method}: NOT_FOUND (${err?.message})`);
    }

    const { pod, server } = await serverPod(t, h, `bad-${h}`);
    const again = await t.throwsAsync(call(rt, 'StartContainer', { container_id: server }, CRI_DEADLINE));
    t.regex(again?.message ?? '', /running/i, 'a second start says the container runs');
    t.is((await containerStatus(c, server)).state, 'CONTAINER_RUNNING', 'and leaves it running');

    // a container whose process exits: its status and code, and exec into it refused
    const quick = await startContainer(c, pod, { name: 'quick', image: SERVER_IMAGE, command: ['/bin/sh', '-c', 'echo bye; exit 5'] });
    const done = await waitState(c, quick, 'CONTAINER_EXITED');
    t.is(done.exit_code, 5);
    t.deepEqual(readCriLog(path.join(pod.logDir, 'quick.log')).map((l) => l.message), ['bye']);
    await t.throwsAsync(execSync(c, quick, ['/bin/true']), undefined, 'no exec into an exited container');

    await removeAndCheck(t, pod, [server, quick]);
  });

  test.serial(`${h}: the shim killed with -9 mid-pod: the containers exit, stop and remove leave nothing`, async (t) => {
    t.timeout(30 * 60_000);
    const c = daemon();
    const { pod, server } = await serverPod(t, h, `shim-${h}`);
    const shim = c.shims().find((s) => s.id === pod.id);
    if (!shim) throw new Error(`no shim found for pod ${pod.id}: ${JSON.stringify(c.shims())}`);
    process.kill(shim.pid, 'SIGKILL');
    // containerd sees its shim gone and deletes what the shim ran through the runtime's forced delete
    const st = await waitFor('the server container to be reported gone', 300_000, async () => {
      const s = await containerStatus(c, server);
      return s.state === 'CONTAINER_EXITED' || s.state === 'CONTAINER_UNKNOWN' ? s : undefined;
    });
    t.not(st.state, 'CONTAINER_RUNNING');
    t.is((await waitFor('the sandbox NOTREADY', 300_000, async () => {
      const s = await sandboxStatus(c, pod.id);
      return s.state === 'SANDBOX_NOTREADY' ? s : undefined;
    })).state, 'SANDBOX_NOTREADY');
    await removeAndCheck(t, pod, [server]);
  });

  test.serial(`${h}: containerd restarted mid-pod: the pod still runs and answers, then goes cleanly`, async (t) => {
    t.timeout(30 * 60_000);
    const c = daemon();
    const { pod, server, ip } = await serverPod(t, h, `restart-${h}`);
    const shimBefore = c.shims().find((s) => s.id === pod.id)?.pid;
    await c.restart();
    // the shim outlived the daemon; the restarted daemon asks it (and so the runtime's state) again
    t.is(c.shims().find((s) => s.id === pod.id)?.pid, shimBefore, 'the same shim serves the pod');
    await sleep(1000);
    t.is((await sandboxStatus(c, pod.id)).state, 'SANDBOX_READY');
    t.is((await containerStatus(c, server)).state, 'CONTAINER_RUNNING');
    t.is((await execSync(c, server, ['/bin/sh', '-c', 'echo still here'])).stdout, 'still here\n');
    t.is(await waitFor('the server from the host', 120_000, () => httpGet(ip)), SERVER_PAGE);
    const tasks = await c.ctr('k8s.io', ['tasks', 'list']);
    t.regex(String(tasks.stdout), new RegExp(`${server}\\s+\\d+\\s+RUNNING`), 'ctr sees the task running (the runtime answers state)');
    await removeAndCheck(t, pod, [server]);
  });
}
