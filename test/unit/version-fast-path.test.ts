import test from 'ava';
import { isPlainVersion } from '../../src/cli/version.js';

test('rkt version with only the global flags it ignores answers at once', (t) => {
  for (const argv of [['version'], ['--dir=/d', '--local-config=/l', '--system-config', '/s', '--user-config=/u', 'version'], ['--debug', 'version'], ['--debug=false', '--trust-keys-from-https=true', 'version'], ['--dir', 'version', 'version']]) {
    t.true(isPlainVersion(argv), argv.join(' '));
  }
});

test('anything else takes the common path: other commands, flags it checks, extra words, missing values', (t) => {
  for (const argv of [[], ['list'], ['version', '--help'], ['version', 'x'], ['--insecure-options=all', 'version'], ['--debug=maybe', 'version'], ['--dir=', 'version'], ['--dir'], ['--dir', 'version'], ['--bogus', 'version'], ['help', 'version']]) {
    t.false(isPlainVersion(argv), argv.join(' '));
  }
});
