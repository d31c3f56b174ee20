import test from 'ava';
import {
  compareQuantities,
  isNegativeQuantity,
  parseCpuMillis,
  parseMemoryBytes,
  parseQuantity,
  parseQuantityCeil,
  QuantityError,
} from '../../src/appc/quantity.js';

test('plain numbers and decimals', (t) => {
  t.is(parseQuantity('1'), 1);
  t.is(parseQuantity('0.3'), 0.3);
  t.is(parseQuantity('.5'), 0.5);
  t.is(parseQuantity('5.'), 5);
  t.is(parseQuantity(128974848), 128974848);
  t.is(parseQuantity('+2'), 2);
});

test('the spec example: three spellings of the same memory size', (t) => {
  t.is(parseMemoryBytes('128974848'), 128974848);
  t.is(parseMemoryBytes('125952Ki'), 128974848);
  t.is(parseMemoryBytes('123Mi'), 128974848);
});

test('binary suffixes are powers of 1024', (t) => {
  t.is(parseMemoryBytes('1Ki'), 1024);
  t.is(parseMemoryBytes('1Gi'), 1073741824);
  t.is(parseMemoryBytes('1.5Gi'), 1610612736);
  t.is(parseMemoryBytes('2Ti'), 2 * 1024 ** 4);
  t.is(parseMemoryBytes('1Pi'), 1024 ** 5);
});

test('decimal suffixes are powers of 1000, and K is taken as k', (t) => {
  t.is(parseMemoryBytes('100k'), 100000);
  t.is(parseMemoryBytes('100K'), 100000);
  t.is(parseMemoryBytes('128M'), 128000000);
  t.is(parseMemoryBytes('1G'), 1e9);
  t.is(parseMemoryBytes('2T'), 2e12);
  t.is(parseMemoryBytes('1P'), 1e15);
  t.is(parseMemoryBytes('1E'), 1e18);
});

test('exponent notation', (t) => {
  t.is(parseQuantity('1e3'), 1000);
  t.is(parseQuantity('12E6'), 12e6);
  t.is(parseQuantity('5e-1'), 0.5);
});

test('CPU in millicores is exact and rounds up', (t) => {
  t.is(parseCpuMillis('500m'), 500);
  t.is(parseCpuMillis('250m'), 250);
  t.is(parseCpuMillis('1'), 1000);
  t.is(parseCpuMillis('0.3'), 300);
  t.is(parseCpuMillis('1.5'), 1500);
  t.is(parseCpuMillis('0.0001'), 1);
  t.is(parseCpuMillis('20m'), 20);
  t.is(parseCpuMillis(2), 2000);
});

test('fractional bytes round up to a whole byte', (t) => {
  t.is(parseMemoryBytes('0.5'), 1);
  t.is(parseMemoryBytes('1500m'), 2);
  t.is(parseQuantityCeil('1000'), 1000);
});

test('malformed quantities are rejected with QuantityError', (t) => {
  for (const bad of ['', ' 1', '1 ', 'abc', '1Kb', '1kb', '1mi', '1Gb', '1.2.3', '--1', '1e', 'e3', 'Gi', '0x10', '1,5', '1e999']) {
    t.throws(() => parseQuantity(bad), { instanceOf: QuantityError }, JSON.stringify(bad));
  }
  t.throws(() => parseQuantity(Number.NaN), { instanceOf: QuantityError });
  t.throws(() => parseQuantity('1'.repeat(60)), { instanceOf: QuantityError });
});

test('sign and comparison', (t) => {
  t.true(isNegativeQuantity('-1'));
  t.false(isNegativeQuantity('0'));
  t.is(compareQuantities('1Gi', '1G'), 1);
  t.is(compareQuantities('500m', '0.5'), 0);
  t.is(compareQuantities('250m', '1'), -1);
});
