import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { canonicalJson } from '../../../../core/audit/hash-chain.ts';

/** The reference definition: keys sorted at every depth, JSON.stringify's escaping, no whitespace. */
function reference(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined ? 'null' : reference(x))).join(',') + ']';
  if (v !== null && typeof v === 'object') {
    const parts = Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => JSON.stringify(k) + ':' + reference((v as Record<string, unknown>)[k]));
    return '{' + parts.join(',') + '}';
  }
  return JSON.stringify(v);
}

test('canonical JSON equals the reference definition for arbitrary JSON values, index-like keys and odd strings included', () => {
  const key = fc.oneof(fc.string(), fc.constantFrom('0', '1', '10', '2', '__proto__x', 'hash', 'ä', '\ud800'));
  const leaf = fc.oneof(fc.string({ unit: 'binary' }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
  const value = fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(key, tie('node'), { maxKeys: 5 })),
  })).node;
  fc.assert(
    fc.property(value, (v) => {
      assert.equal(canonicalJson(v), reference(v));
    }),
    { numRuns: 2000 },
  );
});

test('canonical JSON refuses what has no JSON form', () => {
  assert.throws(() => canonicalJson({ a: Number.NaN }), /non-finite/);
  assert.throws(() => canonicalJson({ a: 1n }), /bigint/);
});
