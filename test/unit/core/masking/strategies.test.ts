import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { findSensitive } from '../../../../core/masking/detectors.ts';
import { maskValue, partialMask, placeholderFor, pseudonym } from '../../../../core/masking/strategies.ts';
import { ALL_DETECTORS } from '../../../../core/masking/vocabulary.ts';

const KEY_A = new Uint8Array(32).fill(1);
const KEY_B = new Uint8Array(32).fill(2);
const opts = { label: 'email', hashKey: KEY_A };

/** Characters `partial` may leave in place without revealing the value (its format). */
const isFormat = (s: string, i: number): boolean => ' -.()'.includes(s[i]!) || (i === 0 && s[0] === '+');

/** How many characters of `value` the masked form shows, format characters aside. */
function revealed(value: string, masked: string): number {
  let n = 0;
  for (let i = 0; i < value.length; i++) if (masked[i] === value[i] && masked[i] !== '*' && !isFormat(value, i)) n++;
  return n;
}

/** Strings rich in what partial treats specially: digits, separators, letters, surrogate pairs. */
const valueLike = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(...'0123456789 -.()+*abcXYZ@'), maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('😀', 'é', '1', '2', ' ', 'x'), maxLength: 20 }),
);

describe('redact', () => {
  test('is the label in brackets, upper-cased', () => {
    assert.equal(maskValue('a@example.com', 'redact', opts), '[EMAIL]');
    assert.equal(maskValue('anything', 'redact', { label: 'REDACTED', hashKey: KEY_A }), '[REDACTED]');
  });
  test('every detector has a placeholder no detector finds again, alone or in text', () => {
    for (const d of ALL_DETECTORS) {
      const p = placeholderFor(d);
      assert.match(p, /^\[[A-Z_]+\]$/);
      assert.deepEqual(findSensitive(p, ALL_DETECTORS), []);
      assert.deepEqual(findSensitive(`secret key ${p}${p} Bearer ${p}, ${p}@example.com`, ALL_DETECTORS), []);
    }
    assert.deepEqual(
      ALL_DETECTORS.map(placeholderFor),
      ['[CARD]', '[SSN]', '[EMAIL]', '[PHONE]', '[IBAN]', '[AWS_ACCESS_KEY]', '[AWS_SECRET_KEY]', '[PRIVATE_KEY]', '[JWT]', '[API_TOKEN]'],
    );
  });
});

describe('partial', () => {
  test('numbers keep their last four digits and their format', () => {
    assert.equal(partialMask('4111 1111 1111 1111'), '**** **** **** 1111');
    assert.equal(partialMask('4111-1111-1111-1111'), '****-****-****-1111');
    assert.equal(partialMask('+1 (415) 555-2671'), '+* (***) ***-2671');
    assert.equal(partialMask('123-45-6789'), '***-**-6789');
    assert.equal(partialMask('DE89 3704 0044 0532 0130 00'), '**** **** **** **** **30 00');
  });
  test('other values keep their last four characters, short ones two, tiny ones none', () => {
    assert.equal(partialMask('john@example.com'), '************.com');
    assert.equal(partialMask('AKIAIOSFODNN7EXAMPLE'), '****************MPLE');
    assert.equal(partialMask('abcdefg'), '*****fg');
    assert.equal(partialMask('abcde'), '***de');
    assert.equal(partialMask('abcd'), '****');
    assert.equal(partialMask(''), '');
  });
  test('the kept tail never starts inside a surrogate pair', () => {
    assert.equal(partialMask('abcdefg😀xy'), '*******😀xy');
    assert.equal(partialMask('abcdefgh😀xyz'), '**********xyz'); // one fewer kept than split the pair
  });
  test('never reveals more than 4 characters, keeps the length, and only ever writes * or the original character', () => {
    fc.assert(
      fc.property(valueLike, (v) => {
        const m = maskValue(v, 'partial', opts)!;
        assert.equal(m.length, v.length);
        for (let i = 0; i < v.length; i++) assert.ok(m[i] === '*' || m[i] === v[i]);
        assert.ok(revealed(v, m) <= 4, `${JSON.stringify(v)} -> ${JSON.stringify(m)}`);
        if (v.length <= 4) assert.equal(m, '*'.repeat(v.length));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('hash', () => {
  test('is tok_ and 16 base32 characters', () => {
    assert.match(pseudonym('a@example.com', KEY_A), /^tok_[a-z2-7]{16}$/);
    assert.equal(maskValue('a@example.com', 'hash', opts), pseudonym('a@example.com', KEY_A));
  });
  test('is deterministic per key, differs across keys and across values', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
        assert.equal(pseudonym(a, KEY_A), pseudonym(a, KEY_A));
        assert.notEqual(pseudonym(a, KEY_A), pseudonym(a, KEY_B));
        if (a !== b && Buffer.from(a).compare(Buffer.from(b)) !== 0) assert.notEqual(pseudonym(a, KEY_A), pseudonym(b, KEY_A));
      }),
      { numRuns: 500 },
    );
  });
  test('is the RFC 4648 base32 of the first 10 bytes of HMAC-SHA-256(key, UTF-8 value), as node:crypto computes it', () => {
    const reference = (v: string, key: Uint8Array): string => 'tok_' + base32(createHmac('sha256', key).update(Buffer.from(v, 'utf8')).digest().subarray(0, 10));
    for (const v of ['', 'a@example.com', 'Zoë', '4111 1111 1111 1111', 'x'.repeat(55), 'x'.repeat(56), 'x'.repeat(119), 'x'.repeat(120), '😀\ud800\udc00x\udfff']) {
      assert.equal(pseudonym(v, KEY_A), reference(v, KEY_A), JSON.stringify(v));
    }
    const value = fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 80 }), fc.string({ maxLength: 200 }));
    const key = fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ minLength: 64, maxLength: 65 }), fc.uint8Array({ minLength: 32, maxLength: 32 }));
    fc.assert(
      fc.property(value, key, (v, k) => {
        assert.equal(pseudonym(v, k), reference(v, k));
      }),
      { numRuns: 2000 },
    );
  });
  test('a key array changed in place gives the pseudonyms of the new key', () => {
    const key = new Uint8Array(32).fill(5);
    const before = pseudonym('a@example.com', key);
    key[0] = 6;
    assert.notEqual(pseudonym('a@example.com', key), before);
    assert.equal(pseudonym('a@example.com', key), pseudonym('a@example.com', Uint8Array.from(key)));
  });
  test('a pseudonym is not itself detected', () => {
    fc.assert(
      fc.property(fc.string(), (v) => {
        assert.deepEqual(findSensitive(`x ${pseudonym(v, KEY_A)} y`, ALL_DETECTORS), []);
      }),
      { numRuns: 500 },
    );
  });
});

describe('null', () => {
  test('is SQL NULL', () => {
    assert.equal(maskValue('a@example.com', 'null', opts), null);
  });
});

/** Reference base32 (RFC 4648 alphabet, lower case), written independently of the implementation. */
function base32(bytes: Buffer): string {
  const bits = [...bytes].map((b) => b.toString(2).padStart(8, '0')).join('');
  return bits.match(/.{5}/g)!.map((b) => 'abcdefghijklmnopqrstuvwxyz234567'[parseInt(b, 2)]).join('');
}
