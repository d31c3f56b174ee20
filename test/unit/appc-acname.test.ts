import test from 'ava';
import { appNameFromImageName, isACIdentifier, isACName, sanitizeACName } from '../../src/appc/acname.js';
import { RktError } from '../../src/errors.js';

test('AC names: lowercase letters, digits and dashes with alphanumeric edges', (t) => {
  for (const good of ['database', 'product-database', 'product-database-release', 'a', '0', 'etcd2', 'a--b']) {
    t.true(isACName(good), good);
  }
  for (const bad of ['', '-app', 'app-', 'App', 'my_app', 'my.app', 'a/b', 'a b', 'é']) {
    t.false(isACName(bad), bad);
  }
});

test('AC identifiers also allow . _ ~ / inside, with the spec examples', (t) => {
  for (const good of [
    'database',
    'example.com/database',
    'example.com/ourapp',
    'example.com/~user/app_v1',
    'sub-domain.example.com/org/product/release',
    'coreos.com/rkt/stage1/run',
    'my~database',
  ]) {
    t.true(isACIdentifier(good), good);
  }
  for (const bad of ['', 'BAR', 'foo#', 'EXAMPLE.com', 'foo.com/BAR', '/app', 'app/', '-app', 'app-', '.app', 'app.', '_app', 'app_', '~app', 'app~']) {
    t.false(isACIdentifier(bad), bad);
  }
});

test('sanitizeACName lowercases, dashes out invalid characters and trims the edges', (t) => {
  t.is(sanitizeACName('My_App'), 'my-app');
  t.is(sanitizeACName('--etcd.v2--'), 'etcd-v2');
  t.is(sanitizeACName('foo__bar'), 'foo--bar');
  t.true(isACName(sanitizeACName('Hello, World!')));
  t.throws(() => sanitizeACName('___'), { instanceOf: RktError });
  t.throws(() => sanitizeACName(''), { instanceOf: RktError });
});

test('app names come from the last component of the image name', (t) => {
  t.is(appNameFromImageName('coreos.com/etcd'), 'etcd');
  t.is(appNameFromImageName('example.com/~user/app_v1'), 'app-v1');
  t.is(appNameFromImageName('registry-1.docker.io/library/busybox'), 'busybox');
  t.is(appNameFromImageName('single'), 'single');
});
