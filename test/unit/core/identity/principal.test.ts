import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IdentityClaimsError } from '../../../../core/identity/errors.ts';
import {
  DEFAULT_CLAIM_MAPPING,
  mapClaimsToPrincipal,
  readClaim,
  resolveClaimMapping,
} from '../../../../core/identity/principal.ts';

const ISS = 'https://idp.example';
const map = (payload: Record<string, unknown>, mapping = DEFAULT_CLAIM_MAPPING) =>
  mapClaimsToPrincipal(ISS, payload, { ...mapping });

describe('mapClaimsToPrincipal', () => {
  it('maps defaults: sub -> subject and username, groups array', () => {
    const p = map({ sub: 'agent-1', groups: ['analysts', 'readers'], iss: ISS });
    assert.equal(p.issuer, ISS);
    assert.equal(p.subject, 'agent-1');
    assert.equal(p.username, 'agent-1');
    assert.deepEqual(p.groups, ['analysts', 'readers']);
    assert.equal(p.claims.iss, ISS);
  });

  it('follows dotted paths for groups (Keycloak realm_access.roles)', () => {
    const m = resolveClaimMapping({ groups: 'realm_access.roles' });
    const p = map({ sub: 'a', realm_access: { roles: ['admin', 'dba'] } }, m);
    assert.deepEqual(p.groups, ['admin', 'dba']);
  });

  it('prefers an exact claim name containing dots (namespaced claims) over a path', () => {
    const m = resolveClaimMapping({ groups: 'https://warden.example/groups' });
    const p = map({ sub: 'a', 'https://warden.example/groups': ['ns'] }, m);
    assert.deepEqual(p.groups, ['ns']);
    const m2 = resolveClaimMapping({ groups: 'a.b' });
    assert.deepEqual(map({ sub: 'a', 'a.b': ['flat'], a: { b: ['nested'] } }, m2).groups, ['flat']);
  });

  it('dotted paths do not walk into arrays or inherited properties', () => {
    assert.equal(readClaim({ a: [{ b: 1 }] }, 'a.0.b'), undefined);
    assert.equal(readClaim({ a: {} }, 'a.constructor'), undefined);
    assert.equal(readClaim({}, '__proto__'), undefined);
    assert.equal(readClaim({ a: { b: { c: 'x' } } }, 'a.b.c'), 'x');
  });

  it('accepts space- or comma-separated group strings', () => {
    assert.deepEqual(map({ sub: 'a', groups: 'x y,z , w' }).groups, ['x', 'y', 'z', 'w']);
    assert.deepEqual(map({ sub: 'a', groups: '  ' }).groups, []);
  });

  it('gives [] for groups of any other type, and drops empty/duplicate/control entries', () => {
    assert.deepEqual(map({ sub: 'a' }).groups, []);
    assert.deepEqual(map({ sub: 'a', groups: 42 }).groups, []);
    assert.deepEqual(map({ sub: 'a', groups: { admin: true } }).groups, []);
    assert.deepEqual(map({ sub: 'a', groups: ['ok', 7] }).groups, []);
    assert.deepEqual(map({ sub: 'a', groups: null }).groups, []);
    assert.deepEqual(map({ sub: 'a', groups: ['x', '', 'x', 'bad\nline', 'y'] }).groups, ['x', 'y']);
  });

  it('maps a different username claim', () => {
    const m = resolveClaimMapping({ username: 'preferred_username' });
    const p = map({ sub: 'uuid-1', preferred_username: 'alice' }, m);
    assert.equal(p.subject, 'uuid-1');
    assert.equal(p.username, 'alice');
    assert.throws(() => map({ sub: 'uuid-1' }, m), (e: unknown) => e instanceof IdentityClaimsError && e.problem === 'missing');
  });

  it('maps a nested subject claim', () => {
    const m = resolveClaimMapping({ subject: 'ext.id', username: 'ext.id' });
    assert.equal(map({ ext: { id: 'n-1' } }, m).subject, 'n-1');
  });

  for (const [name, payload, problem] of [
    ['missing', {}, 'missing'],
    ['null', { sub: null }, 'missing'],
    ['empty', { sub: '' }, 'invalid'],
    ['number', { sub: 123 }, 'invalid'],
    ['array', { sub: ['a'] }, 'invalid'],
    ['newline', { sub: 'a\nb' }, 'invalid'],
    ['NUL', { sub: 'a\u0000' }, 'invalid'],
    ['DEL', { sub: 'a\u007f' }, 'invalid'],
    ['bidi override', { sub: 'admin\u202e' }, 'invalid'],
    ['line separator', { sub: 'a\u2028b' }, 'invalid'],
    ['257 chars', { sub: 'x'.repeat(257) }, 'invalid'],
  ] as const) {
    it(`rejects a bad subject: ${name}`, () => {
      assert.throws(
        () => map(payload as Record<string, unknown>),
        (e: unknown) => e instanceof IdentityClaimsError && e.name === 'IdentityClaimsError' && e.problem === problem && e.claim === 'sub',
      );
    });
  }

  it('accepts a 256-char subject and non-ASCII letters', () => {
    assert.equal(map({ sub: 'x'.repeat(256) }).subject.length, 256);
    assert.equal(map({ sub: 'agënt-ü' }).subject, 'agënt-ü');
  });

  it('returns a deep-frozen copy of the claims', () => {
    const payload = { sub: 'a', nested: { k: 'v' } };
    const p = map(payload);
    payload.nested.k = 'changed';
    assert.equal((p.claims.nested as { k: string }).k, 'v');
    assert.ok(Object.isFrozen(p.claims));
    assert.ok(Object.isFrozen(p.claims.nested));
  });
});

describe('resolveClaimMapping', () => {
  it('fills defaults and rejects empty names', () => {
    assert.deepEqual(resolveClaimMapping(), { subject: 'sub', groups: 'groups', username: 'sub' });
    assert.deepEqual(resolveClaimMapping({ groups: 'roles' }), { subject: 'sub', groups: 'roles', username: 'sub' });
    assert.throws(() => resolveClaimMapping({ subject: '' }), TypeError);
    assert.throws(() => resolveClaimMapping({ subject: ' sub' }), TypeError);
  });
});
