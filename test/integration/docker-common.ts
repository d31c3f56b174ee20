import { busyboxLayer } from '../helpers/oci.js';
import type { Entry } from '../helpers/tar.js';

// What the docker image tests share.

/** Three layers: a whiteout, an opaque directory, a whited-out directory. */
export function threeLayers(): Entry[][] {
  return [
    [
      ...busyboxLayer(),
      { name: 'etc/removed.conf', data: 'should be gone\n' },
      { name: 'etc/kept.conf', data: 'kept\n' },
      { name: 'opt/', type: 'directory' },
      { name: 'opt/dir/', type: 'directory' },
      { name: 'opt/dir/a', data: 'a' },
      { name: 'opt/dir/b', data: 'b' },
      { name: 'var/', type: 'directory' },
      { name: 'var/old/', type: 'directory' },
      { name: 'var/old/x', data: 'x' },
    ],
    [
      { name: 'etc/', type: 'directory' },
      { name: 'etc/.wh.removed.conf', data: '' },
      { name: 'opt/dir/', type: 'directory' },
      { name: 'opt/dir/.wh..wh..opq', data: '' },
      { name: 'opt/dir/c', data: 'c' },
      { name: 'app/', type: 'directory', mode: 0o755 },
      { name: 'app/data.txt', data: 'layer two data\n' },
    ],
    [
      { name: 'var/', type: 'directory' },
      { name: 'var/.wh.old', data: '' },
      { name: 'app/', type: 'directory', mode: 0o755 },
      { name: 'app/data.txt', data: 'layer three data\n' },
      { name: 'home/', type: 'directory' },
      { name: 'home/app/', type: 'directory', uid: 1000, gid: 1000 },
    ],
  ];
}

