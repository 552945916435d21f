import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { findSensitive } from '../../../../core/masking/detectors.ts';
import { maskText } from '../../../../core/masking/mask-text.ts';
import { ALL_DETECTORS, type MaskStrategy } from '../../../../core/masking/vocabulary.ts';
import { cell, planted } from './arbitraries.ts';

const KEY = new Uint8Array(32).fill(9);
const STRATEGIES: readonly MaskStrategy[] = ['redact', 'partial', 'hash'];

describe('maskText', () => {
  test('replaces each match by its placeholder, leaving the rest as it was', () => {
    const r = maskText('mail a@example.com, card 4111 1111 1111 1111.', ALL_DETECTORS, 'redact', KEY);
    assert.equal(r.text, 'mail [EMAIL], card [CARD].');
    assert.deepEqual(
      r.matches.map((m) => m.detector),
      ['email', 'card'],
    );
  });
  test('partial and hash mask each match on its own', () => {
    assert.equal(maskText('card 4111 1111 1111 1111, ssn 123-45-6789', ALL_DETECTORS, 'partial', KEY).text, 'card **** **** **** 1111, ssn ***-**-6789');
    const h = maskText('a@example.com and a@example.com', ALL_DETECTORS, 'hash', KEY).text!;
    assert.match(h, /^tok_[a-z2-7]{16} and tok_[a-z2-7]{16}$/);
    const [x, , y] = h.split(' ');
    assert.equal(x, y, 'equal values, equal pseudonyms');
  });
  test('null makes the whole cell NULL when anything matched, and only then', () => {
    assert.equal(maskText('call +44 20 7946 0958', ALL_DETECTORS, 'null', KEY).text, null);
    const clean = 'nothing here';
    assert.equal(maskText(clean, ALL_DETECTORS, 'null', KEY).text, clean);
  });
  test('with no detectors enabled nothing changes', () => {
    const s = 'a@example.com';
    const r = maskText(s, [], 'redact', KEY);
    assert.equal(r.text, s);
    assert.equal(r.matches.length, 0);
  });
});

describe('maskText properties', () => {
  test('a string with no match comes back as the same string, with no matches', () => {
    const anyText = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.string({ unit: fc.constantFrom(...'0123456789 -.()+@_AKIaeyJskx/=:'), maxLength: 200 }),
    );
    fc.assert(
      fc.property(anyText, fc.constantFrom(...STRATEGIES, 'null' as const), (s, strategy) => {
        const r = maskText(s, ALL_DETECTORS, strategy, KEY);
        assert.deepEqual(r.matches, findSensitive(s, ALL_DETECTORS));
        if (r.matches.length === 0) assert.equal(r.text, s);
        else assert.notEqual(r.text, s);
      }),
      { numRuns: 1500 },
    );
  });

  test('every planted value is found, whatever surrounds it', () => {
    fc.assert(
      fc.property(cell, ({ text, planted }) => {
        const matches = findSensitive(text, ALL_DETECTORS);
        let from = 0;
        for (const p of planted) {
          const at = text.indexOf(p.secret, from);
          from = at + p.secret.length;
          assert.ok(
            matches.some((m) => m.start <= at && m.end >= at + p.secret.length),
            `${p.detector} ${JSON.stringify(p.secret)} not covered in ${JSON.stringify(text)}: ${JSON.stringify(matches)}`,
          );
        }
      }),
      { numRuns: 1500 },
    );
  });

  test('the output never contains a matched value, and masking it again finds nothing', () => {
    fc.assert(
      fc.property(cell, fc.constantFrom(...STRATEGIES), ({ text }, strategy) => {
        const r = maskText(text, ALL_DETECTORS, strategy, KEY);
        const out = r.text!;
        for (const m of r.matches) {
          const original = text.slice(m.start, m.end);
          assert.ok(!out.includes(original), `${m.detector} ${JSON.stringify(original)} still in ${JSON.stringify(out)}`);
        }
        assert.deepEqual(findSensitive(out, ALL_DETECTORS), [], `${strategy}: ${JSON.stringify(out)}`);
        assert.equal(maskText(out, ALL_DETECTORS, strategy, KEY).text, out);
      }),
      { numRuns: 1500 },
    );
  });

  test('masking with one detector leaves no value of that detector behind', () => {
    fc.assert(
      fc.property(planted, fc.constantFrom(...STRATEGIES), (p, strategy) => {
        const text = `before ${p.text} after`;
        const out = maskText(text, [p.detector], strategy, KEY).text!;
        assert.ok(!out.includes(p.secret), `${JSON.stringify(out)}`);
        assert.deepEqual(findSensitive(out, [p.detector]), []);
      }),
      { numRuns: 1000 },
    );
  });

  test('masking leaves the input untouched and 1 MB of hostile text is masked', () => {
    const hostile = '4111 1111 1111 1111 a@b.co '.repeat(40_000);
    const r = maskText(hostile, ALL_DETECTORS, 'redact', KEY);
    assert.equal(r.matches.length, 80_000);
    assert.equal(r.text, '[CARD] [EMAIL] '.repeat(40_000));
  });
});
