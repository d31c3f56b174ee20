import test from 'ava';
import { humanSize, renderTable } from '../../src/cli/output.js';

test('tables align on tab stops like Go tabwriter', (t) => {
  const out = renderTable([
    ['ID', 'NAME'],
    ['sha512-0123456789ab', 'example.com/a:1'],
  ]);
  t.is(out, 'ID\t\t\tNAME\nsha512-0123456789ab\texample.com/a:1\n');
});

test('sizes use 1024-based units', (t) => {
  t.is(humanSize(512), '512B');
  t.is(humanSize(5 * 1024 * 1024), '5MiB');
});
