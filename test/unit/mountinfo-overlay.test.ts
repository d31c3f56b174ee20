import test from 'ava';
import fc from 'fast-check';
import { mountOf, parseMountinfo, parseMountinfoLine } from '../../src/util/mounts.js';
import { overlayLayersAt, OverlayOptionsError, parseOverlayOptions, splitOverlayOptions } from '../../src/util/overlay-layers.js';

// Lines as a 6.x kernel shows them (containerd's snapshot layout).
const SNAP = '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots';
const TABLE = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
  '30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=1024k',
  `426 30 0:68 / /run/c/task/k8s.io/abc/rootfs rw,relatime shared:7 - overlay overlay rw,lowerdir=${SNAP}/2/fs:${SNAP}/1/fs,upperdir=${SNAP}/3/fs,workdir=${SNAP}/3/work,uuid=on`,
  '427 30 0:69 /sub /run/my\\040dir rw - overlay overlay rw,lowerdir=/a,upperdir=/u,workdir=/w',
  '428 22 8:1 /srv/x /mnt/bound rw - ext4 /dev/sda1 rw',
].join('\n');

test('mountinfo lines: fields, the optional fields skipped, \\040 and \\134 in paths unescaped', (t) => {
  const m = parseMountinfoLine('36 35 98:0 /mnt\\134x /mnt/a\\040b rw,noatime master:1 shared:2 - ext3 /dev/ro\\040ot rw,errors=continue');
  t.deepEqual(m, { id: 36, parentId: 35, root: '/mnt\\x', mountPoint: '/mnt/a b', fsType: 'ext3', source: '/dev/ro ot', superOptions: 'rw,errors=continue' });
  t.is(parseMountinfoLine('36 35 98:0 / /x rw - ext4 /dev/sda rw')?.superOptions, 'rw');
});

test('malformed mountinfo lines are left out, not read as mounts', (t) => {
  for (const bad of ['', 'garbage', '1 2 3 / /x rw', '1 2 3 / /x rw - ext4', 'a b 0:1 / /x rw - ext4 s rw', '1 2 0:1 rel /x rw - ext4 s rw', '1 2 0:1 / x rw - ext4 s rw', '1 2 0:1 / /x - ext4 s rw']) {
    t.is(parseMountinfoLine(bad), undefined, bad);
  }
  t.is(parseMountinfo(`${TABLE}\nnonsense line\n\n`).length, 5);
});

test('the mount a path is on: the longest mounted prefix', (t) => {
  const table = parseMountinfo(TABLE);
  t.is(mountOf('/run/c/task/k8s.io/abc/rootfs', table)?.id, 426);
  t.is(mountOf('/run/c/task/k8s.io/abc/rootfs/etc', table)?.id, 426);
  t.is(mountOf('/run/c/task/k8s.io/abc/rootfsX', table)?.id, 30);
  t.is(mountOf('/home', table)?.id, 22);
});

test('an overlay mount root gives its layers, upper first', (t) => {
  const table = parseMountinfo(TABLE);
  t.deepEqual(overlayLayersAt('/run/c/task/k8s.io/abc/rootfs', table)?.layers, [`${SNAP}/3/fs`, `${SNAP}/2/fs`, `${SNAP}/1/fs`]);
  t.is(overlayLayersAt('/mnt/bound', table), undefined);
  t.is(overlayLayersAt('/home', table), undefined);
  t.throws(() => overlayLayersAt('/run/c/task/k8s.io/abc/rootfs/etc', table), { instanceOf: OverlayOptionsError, message: /inside an overlay/ });
  t.throws(() => overlayLayersAt('/run/my dir', table), { instanceOf: OverlayOptionsError, message: /inside an overlay/ });
});

test('overlay options: escaped space, colon, comma and backslash in layer paths', (t) => {
  // the kernel shows a path as given ("\" escaping ":" and ","), escaped again as \ooo
  t.deepEqual(parseOverlayOptions('ro,lowerdir=/l\\0402:/l\\134:4:/l\\134\\0543:/b\\134\\134s,redirect_dir=on'), { lower: ['/l 2', '/l:4', '/l,3', '/b\\s'] });
  t.deepEqual(parseOverlayOptions('rw,lowerdir=/a,upperdir=/u\\040p,workdir=/w'), { upper: '/u p', lower: ['/a'] });
  t.deepEqual(parseOverlayOptions('rw,lowerdir+=/a,lowerdir+=/b,upperdir=/u,workdir=/w'), { upper: '/u', lower: ['/a', '/b'] });
});

test('overlay options: a raw comma inside a lowerdir list stays in its path', (t) => {
  t.deepEqual(splitOverlayOptions('rw,lowerdir=/a,b:/c,upperdir=/u,d,workdir=/w,index=off'), ['rw', 'lowerdir=/a,b:/c', 'upperdir=/u,d', 'workdir=/w', 'index=off']);
  t.deepEqual(parseOverlayOptions('rw,lowerdir=/a,b:/c,upperdir=/u,workdir=/w'), { upper: '/u', lower: ['/a,b', '/c'] });
});

test('overlay options that name no usable merged layers are refused', (t) => {
  for (const bad of ['rw,upperdir=/u,workdir=/w', 'ro,lowerdir=/a::/data', 'ro,lowerdir+=/a,datadir+=/d', 'ro,lowerdir=rel:/a', 'ro,lowerdir=/a,upperdir=u', 'ro,lowerdir=', 'ro,lowerdir=/a:']) {
    t.throws(() => parseOverlayOptions(bad), { instanceOf: OverlayOptionsError }, bad);
  }
});

test('overlay options: hostile text either parses into absolute paths or is refused', (t) => {
  const unit = fc.constantFrom('/', 'a', ',', ':', '\\', '=', '0', '4', ' ', 'lowerdir=', 'upperdir=', '\\040', '\\134');
  const parsesOrRefuses = fc.property(fc.string({ unit }), (s) => {
    try {
      const { upper, lower } = parseOverlayOptions(s);
      return lower.length > 0 && [upper ?? '/', ...lower].every((l) => l.startsWith('/'));
    } catch (err) {
      return err instanceof OverlayOptionsError;
    }
  });
  t.notThrows(() => fc.assert(parsesOrRefuses, { seed: 4242, numRuns: 2000 }));
});
