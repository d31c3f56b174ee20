import path from 'node:path';
import { needCommand, needFile, needRoot } from './prereqs.js';
import { REPO } from './rkt.js';
import { PAUSE_IMAGE } from './cri-images.js';

// What the test containerd is made of: its handlers and the runtimes behind
// them, its config.toml (version 2) and its CNI network.

export type Handler = 'runc' | 'rkt-nspawn' | 'rkt-kvm';
export const HANDLERS: Handler[] = ['runc', 'rkt-nspawn', 'rkt-kvm'];

/** The runc-compatible binary behind a handler. */
export function handlerBinary(h: Handler): string {
  return h === 'runc' ? needCommand('runc', 'runc') : path.join(REPO, 'bin', h.replace('rkt-', 'rkt-oci-'));
}

/**
 * The handlers the containerd tests run: this runtime's two flavors, or the
 * comma-separated list in RKT_TEST_CRI_HANDLERS (runc there checks the
 * harness itself against containerd's reference runtime).
 */
export function handlersUnderTest(): Handler[] {
  const list = (process.env.RKT_TEST_CRI_HANDLERS ?? 'rkt-nspawn,rkt-kvm').split(',').filter((h) => h !== '');
  for (const h of list) if (!HANDLERS.includes(h as Handler)) throw new Error(`RKT_TEST_CRI_HANDLERS: unknown handler ${h} (known: ${HANDLERS.join(', ')})`);
  return list as Handler[];
}

/** Throws, saying what to install or build, unless containerd and the handlers' runtimes are at hand. */
export function needContainerdPrereqs(handlers: Handler[]): void {
  needRoot('the containerd tests');
  needCommand('containerd', 'containerd');
  needCommand('ctr', 'containerd');
  needCommand('containerd-shim-runc-v2', 'containerd');
  for (const plugin of ['bridge', 'host-local', 'loopback']) needFile(`/usr/lib/cni/${plugin}`, 'install the Debian package containernetworking-plugins (scripts/setup.sh does)');
  for (const h of handlers) {
    needFile(handlerBinary(h), 'it is part of the checkout: build with "npm run build"');
    if (h === 'rkt-nspawn') needFile(path.join(REPO, 'build', 'stage1-coreos.aci'), 'build it with "node dist/stage1-nspawn/build.js build/stage1-coreos.aci"');
    if (h === 'rkt-kvm') needFile(path.join(REPO, 'build', 'stage1-kvm.aci'), 'build it with "node dist/stage1-kvm/build.js build/stage1-kvm.aci"');
  }
}

export interface TomlOptions {
  dir: string;
  socket: string;
  handlers: Handler[];
  handlerRoot(h: Handler): string;
}

/**
 * containerd's configuration: everything under `dir`, the CRI plugin with
 * the test's CNI conf dir, the test's pause image, overlayfs, and each
 * handler as a runc v2 shim runtime whose runc binary is the handler's.
 */
export function containerdToml(o: TomlOptions): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  const q = JSON.stringify;
  const lines = [
    'version = 2',
    `root = ${q(path.join(o.dir, 'root'))}`,
    `state = ${q(path.join(o.dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
    '[grpc]',
    `  address = ${q(o.socket)}`,
    '[ttrpc]',
    `  address = ${q(`${o.socket}.ttrpc`)}`,
    '[debug]',
    '  level = "debug"',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(path.join(o.dir, 'opt'))}`,
    `[${cri}]`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    // pods get -998 by default; lowering the score below containerd's own needs a privilege a nested test host may not have
    '  restrict_oom_score_adj = true',
    `[${cri}.containerd]`,
    '  snapshotter = "overlayfs"',
    '  default_runtime_name = "runc"',
    ...o.handlers.flatMap((h) => [
      `[${cri}.containerd.runtimes.${q(h)}]`,
      '  runtime_type = "io.containerd.runc.v2"',
      `[${cri}.containerd.runtimes.${q(h)}.options]`,
      `  BinaryName = ${q(handlerBinary(h))}`,
      `  Root = ${q(o.handlerRoot(h))}`,
    ]),
    `[${cri}.cni]`,
    '  bin_dir = "/usr/lib/cni"',
    `  conf_dir = ${q(path.join(o.dir, 'net.d'))}`,
    '  max_conf_num = 1',
  ];
  return `${lines.join('\n')}\n`;
}

/** A bridge network with host-local addresses from `subnet`, the bridge being the gateway; no masquerading. */
export function cniConflist(name: string, bridge: string, subnet: string, ipamDir: string): object {
  return {
    cniVersion: '0.4.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: ipamDir },
      },
    ],
  };
}
