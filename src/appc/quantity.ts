// Resource quantities in the Kubernetes resource.Quantity notation, which
// appc resource isolators use (spec/ace.md "Resource Isolators"):
//
//   "128974848"  "125952Ki"  "123Mi"  "1G"  "0.3"  "300m"  "1e3"
//
// Arithmetic is exact (BigInt numerator over a power of ten) because the
// obvious float version gets "0.3" cores wrong by one millicore. Integer
// results round up, as Kubernetes does: asking for 0.5 bytes gets you 1.
// The spec lists metric "K" where Kubernetes only knows "k"; both are taken.

import { RktError, quote } from '../errors.js';

/** A string that is not a quantity, or one too large to be meant. */
export class QuantityError extends RktError {}

const QUANTITY = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei)|[eE]([+-]?\d+)|(m|k|K|M|G|T|P|E))?$/;

const BINARY_POWER: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const DECIMAL_EXPONENT: Record<string, number> = { m: -3, k: 3, K: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };

// Far beyond any real resource, small enough that BigInt powers stay cheap.
const MAX_DIGITS = 40;
const MAX_EXPONENT = 30;

interface Exact {
  num: bigint;
  /** Always a positive power of ten. */
  den: bigint;
}

function exact(q: string | number): Exact {
  const text = typeof q === 'number' ? String(q) : q;
  if (typeof q === 'number' && !Number.isFinite(q)) throw new QuantityError(`${text} is not a quantity`);
  const m = QUANTITY.exec(text);
  if (m === null) {
    throw new QuantityError(`${quote(text)} is not a quantity; write a number with an optional suffix such as 500m, 2, 128Mi or 1G`);
  }
  const [, sign, numeral, binary, exponent, decimal] = m;
  const [intPart, fracPart = ''] = numeral!.split('.');
  const digits = `${intPart}${fracPart}`.replace(/^0+(?=\d)/, '');
  if (digits.length > MAX_DIGITS) throw new QuantityError(`${quote(text)} has too many digits to be a quantity`);
  let num = BigInt(digits === '' ? '0' : digits);
  let den = 10n ** BigInt(fracPart.length);
  if (sign === '-') num = -num;
  if (binary !== undefined) {
    num *= 1024n ** BINARY_POWER[binary]!;
  } else {
    const e = exponent !== undefined ? Number(exponent) : decimal !== undefined ? DECIMAL_EXPONENT[decimal]! : 0;
    if (Math.abs(e) > MAX_EXPONENT) throw new QuantityError(`${quote(text)} is out of range for a quantity`);
    if (e >= 0) num *= 10n ** BigInt(e);
    else den *= 10n ** BigInt(-e);
  }
  return { num, den };
}

function ceilDiv(a: bigint, b: bigint): bigint {
  // BigInt division truncates toward zero, which is already the ceiling for negative a.
  return a > 0n ? (a + b - 1n) / b : a / b;
}

function toUnits(q: string | number, perBaseUnit: bigint): number {
  const { num, den } = exact(q);
  return Number(ceilDiv(num * perBaseUnit, den));
}

/** The value of a quantity in its base unit (cores, bytes, ...), possibly fractional: "500m" is 0.5. */
export function parseQuantity(q: string | number): number {
  const { num, den } = exact(q);
  return Number(num) / Number(den);
}

/** A CPU quantity in millicores, rounded up: "250m" is 250, "1.5" is 1500. */
export function parseCpuMillis(q: string | number): number {
  return toUnits(q, 1000n);
}

/** A memory (or any byte-counted) quantity in whole bytes, rounded up: "1Gi" is 1073741824, "1G" is 10^9. */
export function parseMemoryBytes(q: string | number): number {
  return toUnits(q, 1n);
}

/** Any quantity as a whole number of base units, rounded up (I/O operations per second, ...). */
export function parseQuantityCeil(q: string | number): number {
  return toUnits(q, 1n);
}

/** True when the quantity is below zero; throws QuantityError if it is not a quantity. */
export function isNegativeQuantity(q: string | number): boolean {
  return exact(q).num < 0n;
}

/** Compare two quantities exactly: negative, zero or positive like a sort comparator. */
export function compareQuantities(a: string | number, b: string | number): number {
  const x = exact(a);
  const y = exact(b);
  const d = x.num * y.den - y.num * x.den;
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}
