import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { DevIssuer, DevIssuerInputError, DevIssuerKeyError, DurationFormatError, parseDuration } from '../../../../adapters/local/dev-issuer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'warden-dev-issuer-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const opts = { issuerUrl: 'http://127.0.0.1:8089', audience: 'urn:warden' };

describe('DevIssuer key persistence', () => {
  it('creates the key once and reuses it (same kid)', async () => {
    const dir = join(tmp, 'reuse');
    const a = await DevIssuer.loadOrCreate(dir, opts);
    const b = await DevIssuer.loadOrCreate(dir, opts);
    assert.equal(a.kid, b.kid);
    assert.deepEqual(a.jwks(), b.jwks());
    // A token from one instance verifies with the other's JWKS.
    const token = await a.issueToken({ sub: 'agent-1' });
    await jwtVerify(token, createLocalJWKSet(b.jwks()), { issuer: opts.issuerUrl, audience: opts.audience });
  });

  it('concurrent first loads still generate a single key', async () => {
    const dir = join(tmp, 'race');
    const all = await Promise.all(Array.from({ length: 5 }, () => DevIssuer.loadOrCreate(dir, opts)));
    assert.equal(new Set(all.map((i) => i.kid)).size, 1);
  });

  it('stores the key with mode 0600 in a 0700 directory', async () => {
    const dir = join(tmp, 'modes');
    const i = await DevIssuer.loadOrCreate(dir, opts);
    assert.equal(i.keyFile, join(dir, 'dev-issuer', 'signing-key.jwk.json'));
    assert.equal(statSync(i.keyFile).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'dev-issuer')).mode & 0o777, 0o700);
    // Loosened permissions are tightened again on load.
    chmodSync(i.keyFile, 0o644);
    await DevIssuer.loadOrCreate(dir, opts);
    assert.equal(statSync(i.keyFile).mode & 0o777, 0o600);
  });

  it('refuses a corrupt key file instead of silently replacing it', async () => {
    const dir = join(tmp, 'corrupt');
    const i = await DevIssuer.loadOrCreate(dir, opts);
    writeFileSync(i.keyFile, '{"kty":"oct","k":"AAAA"}');
    await assert.rejects(DevIssuer.loadOrCreate(dir, opts), DevIssuerKeyError);
  });

  it('rejects a bad issuer URL or audience', async () => {
    await assert.rejects(DevIssuer.loadOrCreate(join(tmp, 'bad'), { issuerUrl: 'not a url', audience: 'x' }), DevIssuerInputError);
    await assert.rejects(DevIssuer.loadOrCreate(join(tmp, 'bad'), { issuerUrl: 'http://x/?a=1', audience: 'x' }), DevIssuerInputError);
    await assert.rejects(DevIssuer.loadOrCreate(join(tmp, 'bad'), { issuerUrl: 'http://x', audience: '' }), DevIssuerInputError);
  });
});

describe('DevIssuer tokens and JWKS', () => {
  it('jwks() exposes only the public key', async () => {
    const i = await DevIssuer.loadOrCreate(join(tmp, 'pub'), opts);
    const { keys } = i.jwks();
    assert.equal(keys.length, 1);
    const k = keys[0]!;
    assert.equal(k.d, undefined);
    assert.deepEqual(Object.keys(k).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.equal(k.kid, i.kid);
    // Mutating the returned set does not affect the issuer.
    k.kid = 'changed';
    assert.equal(i.jwks().keys[0]!.kid, i.kid);
  });

  it('issues tokens with the standard claims', async () => {
    const i = await DevIssuer.loadOrCreate(join(tmp, 'tok'), opts);
    const token = await i.issueToken({ sub: 'agent-7', groups: ['analysts'], ttlSeconds: 60, extraClaims: { team: 'x' } });
    const h = decodeProtectedHeader(token);
    const p = decodeJwt(token);
    assert.equal(h.alg, 'ES256');
    assert.equal(h.kid, i.kid);
    assert.equal(p.iss, opts.issuerUrl);
    assert.equal(p.aud, opts.audience);
    assert.equal(p.sub, 'agent-7');
    assert.deepEqual(p.groups, ['analysts']);
    assert.equal(p.team, 'x');
    assert.equal(p.exp! - p.iat!, 60);
    assert.equal(p.nbf, p.iat);
    assert.match(String(p.jti), /^[0-9a-f-]{36}$/);
    const again = decodeJwt(await i.issueToken({ sub: 'agent-7' }));
    assert.notEqual(again.jti, p.jti);
    assert.equal(again.exp! - again.iat!, 900);
  });

  it('rejects bad token requests', async () => {
    const i = await DevIssuer.loadOrCreate(join(tmp, 'tok'), opts);
    await assert.rejects(i.issueToken({ sub: '' }), DevIssuerInputError);
    await assert.rejects(i.issueToken({ sub: 'a', ttlSeconds: 0 }), DevIssuerInputError);
    await assert.rejects(i.issueToken({ sub: 'a', ttlSeconds: 1.5 }), DevIssuerInputError);
    await assert.rejects(i.issueToken({ sub: 'a', extraClaims: { iss: 'evil' } }), /reserved claim "iss"/);
    await assert.rejects(i.issueToken({ sub: 'a', extraClaims: { exp: 9e9 } }), DevIssuerInputError);
  });

  it('serves discovery and JWKS, 404 otherwise; issuer comes from config', async () => {
    const i = await DevIssuer.loadOrCreate(join(tmp, 'http'), opts);
    const srv = await i.listen('127.0.0.1', 0);
    try {
      assert.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const disc = (await (await fetch(`${srv.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
      assert.equal(disc.issuer, opts.issuerUrl);
      assert.equal(disc.jwks_uri, `${opts.issuerUrl}/.well-known/jwks.json`);
      const jwks = await (await fetch(`${srv.url}/.well-known/jwks.json`)).json();
      assert.deepEqual(jwks, i.jwks());
      assert.equal((await fetch(`${srv.url}/`)).status, 404);
      assert.equal((await fetch(`${srv.url}/.well-known/jwks.json`, { method: 'POST' })).status, 404);
    } finally {
      await srv.close();
    }
  });
});

describe('parseDuration', () => {
  for (const [input, want] of [
    ['900', 900],
    ['900s', 900],
    ['15m', 900],
    ['1h', 3600],
    ['2d', 172800],
    [' 15M ', 900],
  ] as const) {
    it(`parses ${JSON.stringify(input)}`, () => assert.equal(parseDuration(input), want));
  }
  for (const input of ['', '0', '0m', '-5m', '1.5h', '15 minutes', 'm', '1h30m', 'abc', '99999999999999999999d']) {
    it(`rejects ${JSON.stringify(input)}`, () => {
      assert.throws(() => parseDuration(input), (e: unknown) => e instanceof DurationFormatError && /invalid duration/.test(e.message));
    });
  }
});
