import test from 'ava';
import {
  classifyImageString,
  formatImageString,
  ImageRefError,
  isImageId,
  looksLikePath,
  looksLikeURL,
  nameWithVersion,
  parseImageString,
} from '../../src/appc/image-ref.js';
import { UsageError } from '../../src/errors.js';

test('a bare name has no labels', (t) => {
  t.deepEqual(parseImageString('example.com/app'), { name: 'example.com/app', labels: [] });
  t.deepEqual(parseImageString('busybox'), { name: 'busybox', labels: [] });
});

test('name:version sets the version label', (t) => {
  t.deepEqual(parseImageString('example.com/app:1.0'), { name: 'example.com/app', labels: [{ name: 'version', value: '1.0' }] });
  t.deepEqual(parseImageString('coreos.com/etcd:v2.0.0'), { name: 'coreos.com/etcd', labels: [{ name: 'version', value: 'v2.0.0' }] });
});

test('comma-separated labels, alone or after a version', (t) => {
  t.deepEqual(parseImageString('example.com/app,version=1.0,os=linux'), {
    name: 'example.com/app',
    labels: [
      { name: 'version', value: '1.0' },
      { name: 'os', value: 'linux' },
    ],
  });
  t.deepEqual(parseImageString('example.com/app,os=linux,version=1.0'), parseImageString('example.com/app:1.0,os=linux'));
  t.deepEqual(parseImageString('example.com/app:1.0,arch=amd64,os=linux').labels, [
    { name: 'version', value: '1.0' },
    { name: 'arch', value: 'amd64' },
    { name: 'os', value: 'linux' },
  ]);
  // values are taken literally
  t.deepEqual(parseImageString('x,channel=a=b').labels, [{ name: 'channel', value: 'a=b' }]);
});

test('bad image strings are usage errors', (t) => {
  for (const bad of [
    '',
    'Example.com/App',
    'app:',
    'app:1:2',
    'app,os=linux:1',
    'app,os',
    'app,os=',
    'app,=linux',
    'app,OS=linux',
    'app,name=other',
    'app:1,version=2',
    'app,os=linux,os=darwin',
    'app,',
    '/app',
  ]) {
    const err = t.throws(() => parseImageString(bad), { instanceOf: ImageRefError }, bad);
    t.true(err instanceof UsageError);
  }
});

test('format is the inverse of parse', (t) => {
  for (const s of ['example.com/app', 'example.com/app:1.0', 'example.com/app:1.0,os=linux,arch=amd64', 'x,os=linux']) {
    t.is(formatImageString(parseImageString(s)), s);
  }
  t.is(formatImageString(parseImageString('a,os=linux,version=2')), 'a:2,os=linux');
});

test('image IDs, full or shortened', (t) => {
  t.true(isImageId(`sha512-${'0'.repeat(128)}`));
  t.true(isImageId(`sha512-${'a'.repeat(64)}`));
  t.true(isImageId('sha512-fa1cb92dc276b0f9'));
  t.false(isImageId('sha512-'));
  t.false(isImageId(`sha512-${'0'.repeat(129)}`));
  t.false(isImageId('sha512-ABCDEF'));
  t.false(isImageId('sha256-abcdef'));
});

test('classifying image strings as rkt does', (t) => {
  t.is(classifyImageString('sha512-fa1cb92dc276'), 'id');
  t.is(classifyImageString('docker://busybox'), 'url');
  t.is(classifyImageString('https://example.com/app.aci'), 'url');
  t.is(classifyImageString('file:///tmp/app.aci'), 'url');
  t.is(classifyImageString('/tmp/app.aci'), 'path');
  t.is(classifyImageString('./app'), 'path');
  t.is(classifyImageString('../build/app'), 'path');
  t.is(classifyImageString('app.aci'), 'path');
  t.is(classifyImageString('build/app.aci'), 'path');
  t.is(classifyImageString('example.com/app:1.0'), 'name');
  t.is(classifyImageString('busybox:1.0'), 'name');
  t.is(classifyImageString('coreos.com/etcd'), 'name');
  t.is(classifyImageString('localfile', (p) => p === 'localfile'), 'path');
  t.is(classifyImageString('etcd', () => false), 'name');
  t.true(looksLikePath('./x.aci'));
  t.false(looksLikePath('example.com/x'));
  t.true(looksLikeURL('docker://quay.io/coreos/etcd:v2.0.0'));
  t.false(looksLikeURL('quay.io/coreos/etcd:v2.0.0'));
});

test('name with version, as image lists show it', (t) => {
  t.is(nameWithVersion({ name: 'coreos.com/etcd', labels: [{ name: 'os', value: 'linux' }, { name: 'version', value: 'v2.0.0' }] }), 'coreos.com/etcd:v2.0.0');
  t.is(nameWithVersion({ name: 'coreos.com/etcd', labels: [{ name: 'os', value: 'linux' }] }), 'coreos.com/etcd');
  t.is(nameWithVersion({ name: 'coreos.com/etcd' }), 'coreos.com/etcd');
});
