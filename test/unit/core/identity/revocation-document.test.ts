/**
 * The revocation document and snapshot: strict validation that names where a document is wrong; an
 * identity is issuer and subject together, matched exactly and unambiguously whatever characters they
 * hold; revoking twice keeps the first entry, unrevoking removes every entry of the identity.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseRevocationDocument,
  RevocationDocumentError,
  revocationKey,
  RevocationSnapshot,
  withoutRevocation,
  withRevocation,
} from '../../../../core/identity/revocation-document.ts';

const ISS = 'https://idp.example.com';
const at = '2030-01-01T00:00:00.000Z';

describe('revocation document', () => {
  test('a valid document parses; optional fields stay absent', () => {
    const doc = parseRevocationDocument({ revoked: [{ issuer: ISS, subject: 'a', revokedAt: at }, { issuer: ISS, subject: 'b', revokedAt: at, reason: 'r', revokedBy: 'alice' }] });
    assert.deepEqual(doc.revoked[0], { issuer: ISS, subject: 'a', revokedAt: at });
    assert.equal(Object.hasOwn(doc.revoked[0]!, 'reason'), false);
    assert.equal(doc.revoked[1]!.revokedBy, 'alice');
  });

  test('an invalid document names where it is wrong', () => {
    const cases: [unknown, RegExp][] = [
      [{}, /revoked/],
      [[], /\(document\)/],
      [{ revoked: [{ issuer: ISS, revokedAt: at }] }, /revoked\.0\.subject/],
      [{ revoked: [{ issuer: ISS, subject: '', revokedAt: at }] }, /revoked\.0\.subject/],
      [{ revoked: [{ issuer: ISS, subject: 'a', revokedAt: 'yesterday' }] }, /revoked\.0\.revokedAt: must be an ISO-8601 time/],
      [{ revoked: [{ issuer: ISS, subject: 'a', revokedAt: at, reson: 'typo' }] }, /revoked\.0/],
      [{ revoked: [], extra: 1 }, /extra|unrecognized/i],
    ];
    for (const [doc, where] of cases) {
      assert.throws(() => parseRevocationDocument(doc), (err: unknown) => err instanceof RevocationDocumentError && where.test(err.message), JSON.stringify(doc));
    }
  });

  test('an identity is issuer and subject together, matched exactly and unambiguously', () => {
    const s = new RevocationSnapshot([
      { issuer: ISS, subject: 'ci-bot', revokedAt: at },
      { issuer: 'https://a|b', subject: 'c', revokedAt: at },
    ]);
    assert.equal(s.status(ISS, 'ci-bot'), 'revoked');
    assert.equal(s.status(ISS, 'CI-BOT'), 'ok');
    assert.equal(s.status(`${ISS}/`, 'ci-bot'), 'ok');
    assert.equal(s.status('https://other.example.com', 'ci-bot'), 'ok');
    assert.equal(s.status('https://a|b', 'c'), 'revoked');
    assert.equal(s.status('https://a', 'b|c'), 'ok', 'the same `issuer|subject` text, another identity');
    assert.equal(revocationKey('https://a|b', 'c'), revocationKey('https://a', 'b|c'), 'which is why the DynamoDB items carry issuer and subject too');
  });

  test('revoking twice keeps the first entry; unrevoking removes every entry of the identity', () => {
    const first = { issuer: ISS, subject: 'a', revokedAt: at, revokedBy: 'alice' };
    const r1 = withRevocation({ revoked: [] }, first);
    assert.equal(r1.changed, true);
    const r2 = withRevocation(r1.doc, { issuer: ISS, subject: 'a', revokedAt: '2031-01-01T00:00:00.000Z', revokedBy: 'bob' });
    assert.equal(r2.changed, false);
    assert.deepEqual(r2.existing, first);
    const dup = { revoked: [first, { issuer: ISS, subject: 'a', revokedAt: at }, { issuer: ISS, subject: 'b', revokedAt: at }] };
    const u = withoutRevocation(dup, ISS, 'a');
    assert.equal(u.changed, true);
    assert.equal(u.removed.length, 2);
    assert.deepEqual(u.doc.revoked.map((e) => e.subject), ['b']);
    assert.equal(withoutRevocation(u.doc, ISS, 'a').changed, false);
  });

  test('the fingerprint changes exactly when the set of identities does', () => {
    const a = new RevocationSnapshot([{ issuer: ISS, subject: 'a', revokedAt: at }, { issuer: ISS, subject: 'b', revokedAt: at }]);
    const b = new RevocationSnapshot([{ issuer: ISS, subject: 'b', revokedAt: '2031-01-01T00:00:00.000Z', reason: 'other' }, { issuer: ISS, subject: 'a', revokedAt: at }]);
    assert.equal(a.fingerprint, b.fingerprint);
    assert.notEqual(a.fingerprint, new RevocationSnapshot([{ issuer: ISS, subject: 'a', revokedAt: at }]).fingerprint);
  });
});
