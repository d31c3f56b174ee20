import fs from 'node:fs';
import path from 'node:path';
import { busyboxLayer, buildImage, writeOciLayout, type BuiltImage } from './oci.js';
import { packTar, type Entry } from './tar.js';

// The images of the containerd tests, built here from the host's busybox and
// imported into a private containerd as OCI archives: nothing is pulled.

export const PAUSE_IMAGE = 'docker.io/rkt-test/pause:1';
export const SERVER_IMAGE = 'docker.io/rkt-test/server:1';
export const CLIENT_IMAGE = 'docker.io/rkt-test/client:1';

/** The port the server image listens on, on every address of its pod. */
export const SERVER_PORT = 8080;
/** What the server image serves at "/". */
export const SERVER_PAGE = 'hello from the server image\n';

// busybox applets the images use beyond busyboxLayer's shell basics
const APPLETS = ['sleep', 'httpd', 'wget', 'nc', 'hostname', 'kill', 'ps', 'mkdir'];

/** Exit at SIGTERM (a container's PID 1 has no default action for it), else idle. */
export const IDLE = "trap 'exit 0' TERM INT; while :; do sleep 1; done";

function base(): Entry[][] {
  return [busyboxLayer(), APPLETS.map((a): Entry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' }))];
}

/** The sandbox image CRI starts first in every pod: it only waits. */
export function pauseImage(): Promise<BuiltImage> {
  return buildImage({ layers: base(), config: { Entrypoint: ['/bin/sh', '-c', IDLE] } });
}

/** httpd serving SERVER_PAGE on SERVER_PORT of all the pod's addresses. */
export function serverImage(): Promise<BuiltImage> {
  const www: Entry[] = [
    { name: 'www/', type: 'directory', mode: 0o755 },
    { name: 'www/index.html', data: SERVER_PAGE, mode: 0o644 },
  ];
  return buildImage({
    layers: [...base(), www],
    config: { Entrypoint: ['/bin/httpd', '-f', '-v', '-p', String(SERVER_PORT), '-h', '/www'], WorkingDir: '/www' },
  });
}

/** A client that fetches the server's page from localhost of its pod, prints it, then idles. */
export function clientImage(): Promise<BuiltImage> {
  const fetch = `until wget -q -O - http://127.0.0.1:${SERVER_PORT}/; do sleep 1; done; echo client got the page; ${IDLE}`;
  return buildImage({ layers: base(), config: { Entrypoint: ['/bin/sh', '-c'], Cmd: [fetch], Env: ['PATH=/bin'] } });
}

/**
 * An OCI image archive (an image layout in a tar) holding `images` by full
 * name: containerd's importer takes the name from the io.containerd.image.name
 * annotation, and other tools read the tag from the OCI ref name.
 */
export async function ociArchive(file: string, images: Record<string, BuiltImage>): Promise<void> {
  const dir = `${file}.layout`;
  writeOciLayout(dir, images);
  const indexFile = path.join(dir, 'index.json');
  const index = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
  for (const m of index.manifests) {
    const name = m.annotations['org.opencontainers.image.ref.name']!;
    m.annotations = { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.slice(name.lastIndexOf(':') + 1) };
  }
  fs.writeFileSync(indexFile, JSON.stringify(index));
  const entries: Entry[] = [];
  for (const rel of fs.readdirSync(dir, { recursive: true }).map(String).sort()) {
    const p = path.join(dir, rel);
    entries.push(fs.statSync(p).isDirectory() ? { name: `${rel}/`, type: 'directory', mode: 0o755 } : { name: rel, data: fs.readFileSync(p), mode: 0o644 });
  }
  fs.writeFileSync(file, await packTar(entries));
  fs.rmSync(dir, { recursive: true, force: true });
}

/** The three test images in one archive at `file`. */
export async function testImagesArchive(file: string): Promise<void> {
  await ociArchive(file, { [PAUSE_IMAGE]: await pauseImage(), [SERVER_IMAGE]: await serverImage(), [CLIENT_IMAGE]: await clientImage() });
}
