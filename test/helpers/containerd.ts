import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestFn } from 'ava';
import { execa, type Result } from 'execa';
import { call, protoClient, type Client } from './api-client.js';
import { REPO, RKT } from './rkt.js';
import { holdHost, uniqueNet } from '../integration/net-helpers.js';
import { testImagesArchive } from './cri-images.js';
import { mountsUnder, processes, specNetns } from './host-procs.js';
import { cniConflist, containerdToml, handlerBinary, HANDLERS, needContainerdPrereqs, type Handler } from './containerd-config.js';

export { handlerBinary, handlersUnderTest, HANDLERS, type Handler } from './containerd-config.js';

// A private containerd for one test file: its own config, root, state, gRPC
// socket and CNI network (a bridge on a subnet of its own) in a temporary
// directory, with the CRI plugin and three runtime handlers: containerd's
// own runc, and this checkout's OCI runtime front in its two flavors. The
// system's containerd, if any, is neither used nor touched. stop() takes
// everything down again, whatever state the test left it in.

/** The namespaces the tests use; containers' cgroups go under a directory named for theirs. */
export const CTR_NAMESPACE = 'rkt-ctr';
const CGROUP_PARENTS = ['k8s.io', CTR_NAMESPACE];

export interface CtrOptions {
  input?: string;
  timeout?: number;
}

export class Containerd {
  readonly dir: string;
  readonly socket: string;
  readonly config: string;
  readonly logFile: string;
  readonly bridge: string;
  readonly subnet: string;
  /** The first three octets of the subnet; the bridge (the pods' gateway) is .1. */
  readonly prefix: string;
  readonly handlers: Handler[];
  private proc: ChildProcess | undefined;
  private release: (() => Promise<void>) | undefined;
  private clients: Client[] = [];
  /** Network namespaces seen in the pods' specs, removed at stop() if CRI left them. */
  private netns = new Set<string>();
  /** The sockets of the shims seen alive: one killed with -9 leaves its socket, which containerd 1.6 does not remove. */
  private shimSockets = new Set<string>();

  /** Empty directories that containerd, ctr or runc make outside `dir` and leave, and that did not exist before. */
  private hostDirs: string[];

  private constructor(handlers: Handler[]) {
    const cgroups = fs.readdirSync('/sys/fs/cgroup').flatMap((c) => CGROUP_PARENTS.map((p) => path.join('/sys/fs/cgroup', c, p)));
    // deepest first, so that removing them in order empties their parents
    this.hostDirs = [...cgroups, '/run/containerd/fifo', '/run/containerd/s', '/run/containerd'].filter((d) => !fs.existsSync(d));
    this.handlers = handlers;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctrd-'));
    this.socket = path.join(this.dir, 'containerd.sock');
    this.config = path.join(this.dir, 'config.toml');
    this.logFile = path.join(this.dir, 'containerd.log');
    const net = uniqueNet();
    this.subnet = net.subnet;
    this.prefix = net.prefix;
    this.bridge = `crt${net.name.slice(2, 11)}`;
  }

  /**
   * Start a private containerd with the test images imported into the CRI's
   * namespace (k8s.io). It holds the host's networking lock (shared with the
   * networking tests, which compare the whole host) until stop().
   */
  static async start(handlers: Handler[] = HANDLERS): Promise<Containerd> {
    needContainerdPrereqs(handlers);
    const release = await holdHost();
    let cd: Containerd | undefined;
    try {
      // runc is always there: the CRI's default handler must exist
      cd = new Containerd([...new Set<Handler>(['runc', ...handlers])]);
      cd.release = release;
      await cd.sharedMount();
      cd.writeConfig();
      await cd.launch();
      await cd.importImages('k8s.io');
      return cd;
    } catch (err) {
      // the first failure is the one to report; a teardown failure after it goes with it
      if (cd) await cd.stop().catch((e: Error) => ((err as Error).message += `\n(and tearing down: ${e.message})`));
      else await release();
      throw err;
    }
  }

  /** The rkt data dir of the rkt handlers' pods. */
  get rktDir(): string {
    return path.join(this.dir, 'rkt');
  }

  /** The OCI runtime front's configuration file (RKT_OCI_CONFIG): rkt's global flags for a private world. */
  get runtimeConfig(): string {
    return path.join(this.dir, 'rkt-oci.json');
  }

  private rktGlobals(): string[] {
    return [`--dir=${this.rktDir}`, `--local-config=${path.join(this.dir, 'rkt-etc')}`, `--system-config=${path.join(this.dir, 'rkt-lib')}`];
  }

  /**
   * The directory as a shared mount of its own, as / is on a systemd host (a
   * Kubernetes node): a container's root that containerd mounts after its pod
   * started reaches the pod's mount namespace by propagation. This test host's
   * / is private, which no node's is.
   */
  private async sharedMount(): Promise<void> {
    await execa('mount', ['--bind', this.dir, this.dir]);
    await execa('mount', ['--make-rshared', this.dir]);
  }

  /** Where ctr makes its FIFOs for a task's stdio (`--fifo-dir`) instead of /run/containerd/fifo. */
  get fifoDir(): string {
    return path.join(this.dir, 'fifo');
  }

  /** Where a handler keeps its containers' state: the runc `--root` that the shim passes, per namespace. */
  handlerRoot(h: Handler): string {
    return path.join(this.dir, 'runtime', h);
  }

  private writeConfig(): void {
    fs.writeFileSync(this.config, containerdToml({ dir: this.dir, socket: this.socket, handlers: this.handlers, handlerRoot: (h) => this.handlerRoot(h) }));
    fs.mkdirSync(path.join(this.dir, 'net.d'));
    const net = cniConflist(`rkt-cri-${path.basename(this.dir).slice(-6).toLowerCase()}`, this.bridge, this.subnet, path.join(this.dir, 'cni-ipam'));
    fs.writeFileSync(path.join(this.dir, 'net.d', '10-rkt-cri.conflist'), JSON.stringify(net, null, 2));
    for (const d of ['rkt-etc', 'rkt-lib']) fs.mkdirSync(path.join(this.dir, d));
    fs.writeFileSync(this.runtimeConfig, JSON.stringify({ rktArgs: this.rktGlobals(), sandboxArgs: [] }));
  }

  /** Start the daemon and wait until its CRI answers. */
  private async launch(): Promise<void> {
    const log = fs.openSync(this.logFile, 'a');
    // the shims inherit this environment, and the runtimes the shims': the
    // rkt handlers find this checkout's stage1 images and their configuration (a
    // private rkt data dir) through it
    const env = { ...process.env, RKT_STAGE1_IMAGES_DIR: process.env.RKT_STAGE1_IMAGES_DIR ?? path.join(REPO, 'build'), RKT_OCI_CONFIG: this.runtimeConfig };
    const proc = spawn('containerd', ['--config', this.config], { stdio: ['ignore', log, log], env });
    fs.closeSync(log);
    this.proc = proc;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`containerd exited at start:\n${this.log().slice(-3000)}`);
      try {
        if (fs.existsSync(this.socket)) {
          await call(this.runtime(), 'Version', { version: 'v1' }, 2000);
          return;
        }
      } catch (err) {
        // UNIMPLEMENTED: containerd runs but its CRI plugin did not load; its log says why
        if ((err as { code?: number }).code === 12) throw new Error(`containerd's CRI plugin did not load:\n${this.criErrors()}`);
        if (Date.now() > deadline) throw new Error(`containerd's CRI did not answer within 60 s (${(err as Error).message}):\n${this.log().slice(-3000)}`);
      }
      if (Date.now() > deadline) throw new Error(`containerd did not make its socket within 60 s:\n${this.log().slice(-3000)}`);
      await sleep(200);
    }
  }

  /** The log's lines about the CRI plugin at error or warning level. */
  private criErrors(): string {
    return this.log()
      .split('\n')
      .filter((l) => /level=(error|warning|fatal)/.test(l) && /cri/i.test(l))
      .join('\n');
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** The CRI RuntimeService client (a new one after a restart). */
  runtime(): Client {
    return this.client('RuntimeService');
  }

  /** The CRI ImageService client. */
  images(): Client {
    return this.client('ImageService');
  }

  private client(service: string): Client {
    const c = protoClient('test/helpers/cri-api.proto', 'runtime.v1', service, `unix://${this.socket}`);
    this.clients.push(c);
    return c;
  }

  /** Run `ctr` against this containerd in namespace `ns`; never throws on a non-zero exit. */
  ctr(ns: string, args: string[], opts: CtrOptions = {}): Promise<Result> {
    return execa('ctr', ['--address', this.socket, '--namespace', ns, ...args], {
      reject: false,
      input: opts.input ?? '',
      timeout: opts.timeout ?? 120_000,
    }) as unknown as Promise<Result>;
  }

  /** Build the test images (cri-images.ts) and import them into namespace `ns`. */
  async importImages(ns: string): Promise<void> {
    const archive = path.join(this.dir, 'images.tar');
    if (!fs.existsSync(archive)) await testImagesArchive(archive);
    const r = await this.ctr(ns, ['images', 'import', archive]);
    if (r.exitCode !== 0) throw new Error(`ctr images import failed: ${String(r.stderr)}`);
  }

  /** SIGTERM the daemon (its shims and their containers stay, as in an upgrade) and start it again. */
  async restart(): Promise<void> {
    await this.stopDaemon();
    await this.launch();
  }

  private async stopDaemon(): Promise<void> {
    for (const c of this.clients.splice(0)) c.close();
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
  }

  /** The shims this containerd started, with the id they were started for. */
  shims(): { pid: number; id: string; ns: string }[] {
    const found = processes()
      .filter((p) => path.basename(p.argv[0]!).startsWith('containerd-shim') && p.argv.includes(this.socket))
      .map((p) => ({ pid: p.pid, id: p.argv[p.argv.indexOf('-id') + 1] ?? '', ns: p.argv[p.argv.indexOf('-namespace') + 1] ?? '' }));
    for (const s of found) this.shimSockets.add(this.shimSocket(s.ns, s.id));
    return found;
  }

  /**
   * The socket a shim of this containerd listens on for the task `id`: shared
   * /run/containerd/s, named by a hash of containerd's address, namespace and id.
   */
  shimSocket(ns: string, id: string): string {
    return path.join('/run/containerd/s', crypto.createHash('sha256').update(path.join(this.socket, ns, id)).digest('hex'));
  }

  /**
   * Remember the network namespaces and shim sockets of the tasks that exist
   * now, so stop() can remove them if containerd does not.
   */
  notePodNetns(): void {
    const tasks = path.join(this.dir, 'state', 'io.containerd.runtime.v2.task');
    if (!fs.existsSync(tasks)) return;
    for (const ns of fs.readdirSync(tasks)) {
      for (const id of fs.readdirSync(path.join(tasks, ns))) {
        this.shimSockets.add(this.shimSocket(ns, id));
        try {
          const p = specNetns(JSON.parse(fs.readFileSync(path.join(tasks, ns, id, 'config.json'), 'utf8')));
          if (p) this.netns.add(p);
        } catch {
          // no spec (being deleted)
        }
      }
    }
  }

  /**
   * What is left on the host of the containers and pods with these ids:
   * shims, runtime state, task bundles, mounts, processes naming them, plus
   * any network namespace of a pod and any interface on the pods' bridge,
   * and of the rkt handlers' private rkt world: running pods, processes and
   * mounts in its data dir (the tests run one pod at a time, so after a
   * pod's removal there is none). Empty when everything is gone.
   */
  async leftovers(ids: string[]): Promise<string[]> {
    const left: string[] = [];
    for (const p of await this.rktPods()) if (p.state === 'running') left.push(`rkt pod ${p.name} running`);
    for (const p of processes()) if (p.pid !== process.pid && p.argv.some((a) => a.includes(this.rktDir))) left.push(`process ${p.pid} in the rkt data dir: ${p.argv.join(' ').slice(0, 200)}`);
    for (const m of mountsUnder(this.rktDir)) left.push(`mount ${m}`);
    for (const s of this.shims()) if (ids.includes(s.id)) left.push(`shim pid ${s.pid} for ${s.id}`);
    for (const p of processes()) if (p.pid !== process.pid && ids.some((id) => p.argv.some((a) => a.includes(id)))) left.push(`process ${p.pid}: ${p.argv.join(' ').slice(0, 200)}`);
    for (const h of this.handlers) {
      const root = this.handlerRoot(h);
      if (!fs.existsSync(root)) continue;
      for (const ns of fs.readdirSync(root)) for (const id of fs.readdirSync(path.join(root, ns))) if (ids.includes(id)) left.push(`${h} state ${path.join(root, ns, id)}`);
    }
    const tasks = path.join(this.dir, 'state', 'io.containerd.runtime.v2.task');
    if (fs.existsSync(tasks)) for (const ns of fs.readdirSync(tasks)) for (const id of fs.readdirSync(path.join(tasks, ns))) if (ids.includes(id)) left.push(`task bundle ${ns}/${id}`);
    for (const m of mountsUnder(this.dir)) if (ids.some((id) => m.includes(id))) left.push(`mount ${m}`);
    for (const n of this.netns) if (fs.existsSync(n)) left.push(`network namespace ${n}`);
    const links = fs.existsSync(`/sys/class/net/${this.bridge}/brif`) ? fs.readdirSync(`/sys/class/net/${this.bridge}/brif`) : [];
    for (const l of links) left.push(`interface ${l} on ${this.bridge}`);
    return left;
  }

  /** Everything down: pods, containers, tasks, shims, mounts, namespaces, the bridge, the daemon, the directory. */
  async stop(): Promise<void> {
    const problems: string[] = [];
    try {
      this.notePodNetns();
      if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) await this.removeAll().catch((err: Error) => problems.push(`removing pods: ${err.message}`));
      await this.stopDaemon();
      for (const s of this.shims()) {
        try {
          process.kill(s.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      // what a killed shim could not delete: the runtimes' own forced delete, as the shim would call it
      for (const h of this.handlers) {
        const root = this.handlerRoot(h);
        if (!fs.existsSync(root)) continue;
        for (const ns of fs.readdirSync(root)) {
          for (const id of fs.readdirSync(path.join(root, ns))) {
            await execa(handlerBinary(h), ['--root', path.join(root, ns), 'delete', '--force', id], { reject: false, timeout: 60_000 });
          }
        }
      }
      await this.stopRktPods().catch((err: Error) => problems.push(`stopping rkt pods: ${err.message}`));
      // whatever still runs from this world (the tests started all of it): killed, then rkt collects its pods
      const stray = processes().filter((p) => p.pid !== process.pid && p.argv.some((a) => a.includes(this.dir)));
      if (stray.length > 0) {
        problems.push(`processes left running, killed: ${stray.map((p) => `${p.pid} ${p.argv.join(' ').slice(0, 120)}`).join('; ')}`);
        for (const p of stray) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
        await sleep(500);
        await this.stopRktPods().catch((err: Error) => problems.push(`collecting rkt pods: ${err.message}`));
      }
      for (const sock of this.shimSockets) fs.rmSync(sock, { force: true });
      for (const m of mountsUnder(this.dir)) await execa('umount', ['-l', m], { reject: false });
      for (const n of this.netns) {
        if (!fs.existsSync(n)) continue;
        await execa('umount', ['-l', n], { reject: false });
        fs.rmSync(n, { force: true });
      }
      await execa('ip', ['link', 'del', this.bridge], { reject: false });
      fs.rmSync(this.dir, { recursive: true, force: true });
      for (const d of this.hostDirs) {
        try {
          fs.rmdirSync(d);
        } catch {
          // not made, or no longer empty: someone else's now
        }
      }
    } finally {
      await this.release?.();
      this.release = undefined;
    }
    if (problems.length > 0) throw new Error(problems.join('; '));
  }

  /** The pods in the rkt handlers' data dir, as `rkt list --format=json` gives them. */
  private async rktPods(): Promise<{ name: string; state: string }[]> {
    if (!fs.existsSync(this.rktDir)) return [];
    const list = await execa(RKT, [...this.rktGlobals(), 'list', '--format=json'], { reject: false });
    if (list.exitCode !== 0) throw new Error(`rkt list in the handlers' data dir failed: ${String(list.stderr)}`);
    return JSON.parse(String(list.stdout) || '[]') as { name: string; state: string }[];
  }

  /** Any pod the rkt handlers left in their data dir: stopped, then collected. */
  private async stopRktPods(): Promise<void> {
    for (const p of await this.rktPods()) if (p.state === 'running') await execa(RKT, [...this.rktGlobals(), 'stop', '--force', p.name], { reject: false, timeout: 60_000 });
    await execa(RKT, [...this.rktGlobals(), 'gc', '--grace-period=0s'], { reject: false, timeout: 120_000 });
  }

  /** Stop and remove every CRI pod and every ctr container, as a kubelet and an operator would. */
  private async removeAll(): Promise<void> {
    const rt = this.runtime();
    const long = 180_000;
    // none when the CRI plugin did not load
    const { items } = await call<{ items: { id: string }[] }>(rt, 'ListPodSandbox', {}, long).catch(() => ({ items: [] }));
    for (const p of items) {
      const st = await call<{ info: Record<string, string> }>(rt, 'PodSandboxStatus', { pod_sandbox_id: p.id, verbose: true }, long).catch(() => undefined);
      try {
        const n = specNetns((JSON.parse(st?.info.info ?? '{}') as { runtimeSpec?: unknown }).runtimeSpec);
        if (n) this.netns.add(n);
      } catch {
        // no verbose info
      }
      await call(rt, 'StopPodSandbox', { pod_sandbox_id: p.id }, long).catch(() => undefined);
      await call(rt, 'RemovePodSandbox', { pod_sandbox_id: p.id }, long).catch(() => undefined);
    }
    const nss = String((await this.ctr('default', ['namespaces', 'list', '--quiet'])).stdout).split('\n').filter((n) => n !== '');
    for (const ns of nss) {
      for (const id of String((await this.ctr(ns, ['tasks', 'list', '--quiet'])).stdout).split('\n').filter((x) => x !== '')) {
        await this.ctr(ns, ['tasks', 'kill', '--signal', 'SIGKILL', '--all', id]);
        await this.ctr(ns, ['tasks', 'delete', '--force', id], { timeout: long });
      }
      for (const id of String((await this.ctr(ns, ['containers', 'list', '--quiet'])).stdout).split('\n').filter((x) => x !== '')) {
        await this.ctr(ns, ['containers', 'delete', id], { timeout: long });
      }
    }
  }
}

/**
 * One private containerd for a test file, started before its tests (with
 * `prepare`, e.g. importing images) and stopped after them, failed or not;
 * the returned function gives it to the tests.
 */
export function containerdForFile(test: TestFn, handlers: Handler[], prepare?: (cd: Containerd) => Promise<void>): () => Containerd {
  let cd: Containerd | undefined;
  test.before(async (t) => {
    t.timeout(10 * 60_000);
    cd = await Containerd.start(handlers);
    await prepare?.(cd);
  });
  test.after.always(async (t) => {
    // a pod a failed test left behind is stopped here: a VM under tcg takes its time
    t.timeout(15 * 60_000);
    await cd?.stop();
  });
  return () => {
    if (!cd) throw new Error('containerd did not start');
    return cd;
  };
}
