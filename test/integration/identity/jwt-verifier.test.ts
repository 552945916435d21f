import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignJWT, base64url, exportJWK, exportSPKI, generateKeyPair, importJWK } from 'jose';
import type { CryptoKey, JWK, JWTPayload, JWTHeaderParameters } from 'jose';
import { JwtVerifier } from '../../../adapters/identity/jwt-verifier.ts';
import type { JwtVerifierOptions } from '../../../adapters/identity/jwt-verifier.ts';
import { DevIssuer } from '../../../adapters/local/dev-issuer.ts';
import { startOidcProvider, type TestOidcProvider } from '../../helpers/oidc-provider.ts';
import type { DevIssuerServer } from '../../../adapters/local/dev-issuer.ts';
import {
  CLIENT_MESSAGE_EXPIRED,
  CLIENT_MESSAGE_GENERIC,
  CLIENT_MESSAGE_MALFORMED,
  IdentityConfigError,
  IdentityVerificationError,
  clientMessageFor,
} from '../../../core/identity/errors.ts';
import type { VerificationReason } from '../../../core/identity/errors.ts';

const AUD = 'urn:warden';
// Dev issuer URL comes from config; the server listens elsewhere (port 0).
const DEV_ISS = 'http://127.0.0.1:8089';
const nowSec = () => Math.floor(Date.now() / 1000);

async function rejectsWith(p: Promise<unknown>, reason: VerificationReason): Promise<IdentityVerificationError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof IdentityVerificationError, `expected IdentityVerificationError(${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  assert.equal(caught.name, 'IdentityVerificationError');
  return caught;
}

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function closeServer(server: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

interface TestKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function newKey(alg = 'ES256', kid = `k-${Math.random().toString(36).slice(2)}`): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

function mint(
  key: { privateKey: CryptoKey; alg: string; kid?: string },
  claims: JWTPayload,
  header: Partial<JWTHeaderParameters> = {},
  signOptions?: { crit?: Record<string, boolean> },
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, ...(key.kid ? { kid: key.kid } : {}), ...header })
    .sign(key.privateKey, signOptions);
}

/** A minimal issuer with a mutable key set and a JWKS request counter. */
class KeyServer {
  keys: TestKey[] = [];
  jwksHits = 0;
  url = '';
  server!: Server;

  static async start(): Promise<KeyServer> {
    const ks = new KeyServer();
    const { server, url } = await listen((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/openid-configuration') {
        res.end(JSON.stringify({ issuer: ks.url, jwks_uri: `${ks.url}/jwks` }));
      } else if (req.url === '/jwks') {
        ks.jwksHits++;
        res.end(JSON.stringify({ keys: ks.keys.map((k) => k.publicJwk) }));
      } else {
        res.statusCode = 404;
        res.end('{}');
      }
    });
    ks.server = server;
    ks.url = url;
    return ks;
  }

  async addKey(alg = 'ES256'): Promise<TestKey> {
    const k = await newKey(alg);
    this.keys.push(k);
    return k;
  }

  claims(extra: JWTPayload = {}): JWTPayload {
    const t = nowSec();
    return { iss: this.url, aud: AUD, sub: 'ks-agent', iat: t, exp: t + 300, ...extra };
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'warden-jwt-'));
let dev: DevIssuer;
let devSrv: DevIssuerServer;
let devKey: TestKey; // the dev issuer's own private key, read from its state dir
let op: TestOidcProvider;
let verifier: JwtVerifier;

const OP_CLIENT = 'agent-1';
const opToken = (): Promise<string> => op.token(OP_CLIENT);

function devClaims(extra: JWTPayload = {}): JWTPayload {
  const t = nowSec();
  return { iss: DEV_ISS, aud: AUD, sub: 'agent-x', iat: t, nbf: t, exp: t + 300, ...extra };
}

before(async () => {
  dev = await DevIssuer.loadOrCreate(tmp, { issuerUrl: DEV_ISS, audience: AUD });
  devSrv = await dev.listen('127.0.0.1', 0);
  const jwk = JSON.parse(readFileSync(dev.keyFile, 'utf8')) as JWK;
  devKey = { kid: dev.kid, alg: 'ES256', privateKey: (await importJWK(jwk, 'ES256')) as CryptoKey, publicJwk: dev.jwks().keys[0]! };

  // A real third-party issuer: oidc-provider with client_credentials + JWT access tokens.
  op = await startOidcProvider({ audience: AUD, clients: [OP_CLIENT] });

  verifier = new JwtVerifier({
    issuers: [
      { issuer: DEV_ISS, jwksUri: `${devSrv.url}/.well-known/jwks.json`, audiences: [AUD], algorithms: ['ES256'] },
      // No jwksUri: discovered from the provider's openid-configuration.
      { issuer: op.issuer, audiences: [AUD], algorithms: ['RS256'] },
    ],
  });
});

after(async () => {
  await devSrv?.close();
  await op?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('JwtVerifier: accepted tokens', () => {
  it('accepts a DevIssuer token and maps the principal', async () => {
    const token = await dev.issueToken({ sub: 'agent-7', groups: ['analysts', 'readers'] });
    const p = await verifier.verify(token);
    assert.equal(p.issuer, DEV_ISS);
    assert.equal(p.subject, 'agent-7');
    assert.equal(p.username, 'agent-7');
    assert.deepEqual(p.groups, ['analysts', 'readers']);
  });

  it('accepts an oidc-provider client_credentials token (discovery, RS256; sub = client_id)', async () => {
    const p = await verifier.verify(await opToken());
    assert.equal(p.issuer, op.issuer);
    assert.equal(p.subject, OP_CLIENT);
    assert.equal(p.claims.client_id, OP_CLIENT);
    assert.deepEqual(p.groups, []);
  });

  it('accepts tokens from both configured issuers interleaved', async () => {
    const [a, b] = await Promise.all([
      verifier.verify(await dev.issueToken({ sub: 'dev-agent' })),
      verifier.verify(await opToken()),
    ]);
    assert.equal(a.issuer, DEV_ISS);
    assert.equal(b.issuer, op.issuer);
  });

  it('strips one trailing newline or CRLF (tokens pasted from files)', async () => {
    const token = await dev.issueToken({ sub: 'nl' });
    assert.equal((await verifier.verify(`${token}\n`)).subject, 'nl');
    assert.equal((await verifier.verify(`${token}\r\n`)).subject, 'nl');
    await rejectsWith(verifier.verify(`${token}\n\n`), 'malformed');
  });

  it('honours the now() clock option', async () => {
    const token = await dev.issueToken({ sub: 'clock', ttlSeconds: 60 });
    const future = new JwtVerifier({
      issuers: [{ issuer: DEV_ISS, jwksUri: `${devSrv.url}/.well-known/jwks.json`, audiences: [AUD], algorithms: ['ES256'] }],
      now: () => Date.now() + 3600_000,
    });
    await rejectsWith(future.verify(token), 'expired');
  });
});

describe('JwtVerifier: token attacks', () => {
  it('expired', async () => {
    const t = nowSec();
    const err = await rejectsWith(verifier.verify(await mint(devKey, devClaims({ iat: t - 600, nbf: t - 600, exp: t - 120 }))), 'expired');
    assert.equal(clientMessageFor(err), CLIENT_MESSAGE_EXPIRED);
  });

  it('expired within the clock tolerance is still accepted', async () => {
    const t = nowSec();
    await verifier.verify(await mint(devKey, devClaims({ iat: t - 600, nbf: t - 600, exp: t - 10 })));
  });

  it('not yet valid (nbf in the future)', async () => {
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ nbf: nowSec() + 300 }))), 'not_yet_valid');
  });

  it('iat in the future beyond the tolerance', async () => {
    const t = nowSec();
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ iat: t + 300, nbf: undefined, exp: t + 900 }))), 'not_yet_valid');
  });

  it('wrong issuer (unknown key)', async () => {
    const k = await newKey();
    const err = await rejectsWith(verifier.verify(await mint(k, devClaims({ iss: 'https://evil.example' }))), 'unknown_issuer');
    assert.equal(clientMessageFor(err), CLIENT_MESSAGE_GENERIC);
    assert.ok(!clientMessageFor(err).includes('evil'));
  });

  it('issuer not in the allowlist but signed by a trusted key', async () => {
    for (const iss of [`${DEV_ISS}/`, 'http://127.0.0.1:8090', DEV_ISS.toUpperCase()]) {
      await rejectsWith(verifier.verify(await mint(devKey, devClaims({ iss }))), 'unknown_issuer');
    }
  });

  it('missing iss', async () => {
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ iss: undefined }))), 'missing_claim');
  });

  it('wrong audience', async () => {
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ aud: 'urn:other-service' }))), 'bad_audience');
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ aud: undefined }))), 'missing_claim');
  });

  it('missing exp', async () => {
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ exp: undefined }))), 'missing_claim');
  });

  it('missing or bad subject', async () => {
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ sub: undefined }))), 'missing_claim');
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ sub: 'a\u0000b' }))), 'claims_invalid');
    await rejectsWith(verifier.verify(await mint(devKey, devClaims({ exp: '9999999999' as unknown as number }))), 'claims_invalid');
  });

  it('unsigned alg:none (hand-built)', async () => {
    const payload = base64url.encode(JSON.stringify(devClaims()));
    for (const alg of ['none', 'None', 'NONE']) {
      const header = base64url.encode(JSON.stringify({ alg, typ: 'JWT' }));
      await rejectsWith(verifier.verify(`${header}.${payload}.`), 'unsigned');
    }
    // A real alg with the signature stripped is unsigned too.
    const valid = await dev.issueToken({ sub: 'x' });
    await rejectsWith(verifier.verify(valid.slice(0, valid.lastIndexOf('.') + 1)), 'unsigned');
  });

  it('HS256 signed with the issuer public key as secret (key confusion)', async () => {
    const rsaPub = await importJWK(op.publicJwk, 'RS256');
    const secret = new TextEncoder().encode(await exportSPKI(rsaPub as CryptoKey));
    const forged = await new SignJWT({ iss: op.issuer, aud: AUD, sub: 'admin', exp: nowSec() + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: 'op-rsa-1' })
      .sign(secret);
    await rejectsWith(verifier.verify(forged), 'algorithm_not_allowed');
    // Same against the dev issuer, with the JWK JSON as secret.
    const forged2 = await new SignJWT(devClaims())
      .setProtectedHeader({ alg: 'HS256', kid: dev.kid })
      .sign(new TextEncoder().encode(JSON.stringify(dev.jwks().keys[0])));
    await rejectsWith(verifier.verify(forged2), 'algorithm_not_allowed');
  });

  it('signed by an unknown key reusing the trusted kid', async () => {
    const k = await newKey('ES256', dev.kid);
    const err = await rejectsWith(verifier.verify(await mint(k, devClaims())), 'bad_signature');
    assert.equal(clientMessageFor(err), CLIENT_MESSAGE_GENERIC);
  });

  it('tampered payload (changed sub, original signature)', async () => {
    const token = await dev.issueToken({ sub: 'agent-low' });
    const [h, p, s] = token.split('.') as [string, string, string];
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload;
    claims.sub = 'agent-admin';
    await rejectsWith(verifier.verify(`${h}.${base64url.encode(JSON.stringify(claims))}.${s}`), 'bad_signature');
  });

  it('garbage, empty, whitespace and oversized input', async () => {
    const valid = await dev.issueToken({ sub: 'x' });
    const cases = [
      '',
      'hello',
      'password123',
      'a.b.c',
      '...',
      'eyJ.eyJ.sig',
      `${base64url.encode('not json')}.${base64url.encode('{}')}.AAAA`,
      `${base64url.encode('{"alg":"ES256"}')}.${base64url.encode('[1,2]')}.AAAA`,
      `${base64url.encode('{"typ":"JWT"}')}.${base64url.encode('{}')}.AAAA`,
      'a.b.c.d.e',
      ` ${valid}`,
      `${valid} `,
      `\t${valid}`,
      `${valid.slice(0, 20)} ${valid.slice(20)}`,
      `${valid}\r`,
      `${valid}.${valid}`,
      'x'.repeat(20 * 1024),
      `${valid}${'A'.repeat(20 * 1024)}`,
    ];
    for (const c of cases) {
      const err = await rejectsWith(verifier.verify(c), 'malformed');
      assert.equal(clientMessageFor(err), CLIENT_MESSAGE_MALFORMED);
      assert.ok(!err.message.includes(valid), 'the token itself must not be logged');
    }
    await rejectsWith(verifier.verify(undefined as unknown as string), 'malformed');
  });

  it('a crit header', async () => {
    const token = await mint(devKey, devClaims(), { crit: ['x-ext'], 'x-ext': 1 } as Partial<JWTHeaderParameters>, { crit: { 'x-ext': true } });
    await rejectsWith(verifier.verify(token), 'malformed');
  });

  it('algorithm not in the allowlist (RS384 for an ES256-only issuer)', async () => {
    const k = await newKey('RS384');
    await rejectsWith(verifier.verify(await mint(k, devClaims())), 'algorithm_not_allowed');
    // ES384 for the RS256-only oidc-provider issuer.
    const k2 = await newKey('ES384');
    await rejectsWith(verifier.verify(await mint(k2, { iss: op.issuer, aud: AUD, sub: 'x', exp: nowSec() + 60 })), 'algorithm_not_allowed');
  });
});

describe('JwtVerifier: JWKS refresh, rotation and availability', () => {
  let ks: KeyServer;
  before(async () => {
    ks = await KeyServer.start();
  });
  after(async () => {
    await closeServer(ks.server);
  });

  it('unknown kid: one refetch, and a burst of 50 causes at most 1-2 JWKS fetches', async () => {
    const trusted = await ks.addKey();
    const v = new JwtVerifier({
      issuers: [{ issuer: ks.url, audiences: [AUD], algorithms: ['ES256'] }],
      jwksCooldownSeconds: 0.2,
    });
    await v.verify(await mint(trusted, ks.claims()));
    const initial = ks.jwksHits;
    assert.equal(initial, 1);
    await sleep(250); // past the cooldown, so an unknown kid may refetch once

    const rogue = await newKey('ES256', 'brand-new-kid');
    const token = await mint(rogue, ks.claims({ sub: 'attacker' }));
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => v.verify(token)));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal((r.reason as IdentityVerificationError).reason, 'unknown_key');
    }
    const refetches = ks.jwksHits - initial;
    assert.ok(refetches >= 1 && refetches <= 2, `expected 1-2 JWKS fetches for the burst, got ${refetches}`);

    // Within the cooldown, further unknown-kid tokens do not refetch at all.
    const before = ks.jwksHits;
    await rejectsWith(v.verify(token), 'unknown_key');
    assert.equal(ks.jwksHits, before);
  });

  it('key rotation: a new key is accepted after refetch; the old one keeps working', async () => {
    const v = new JwtVerifier({ issuers: [{ issuer: ks.url, audiences: [AUD], algorithms: ['ES256'] }], jwksCooldownSeconds: 0.1 });
    const oldKey = ks.keys[0]!;
    await v.verify(await mint(oldKey, ks.claims()));
    const hits = ks.jwksHits;
    const newer = await ks.addKey();
    await sleep(150);
    const p = await v.verify(await mint(newer, ks.claims({ sub: 'after-rotation' })));
    assert.equal(p.subject, 'after-rotation');
    assert.equal(ks.jwksHits, hits + 1);
    await v.verify(await mint(oldKey, ks.claims()));
  });

  it('token without kid and several candidate keys: each key is tried', async () => {
    const v = new JwtVerifier({ issuers: [{ issuer: ks.url, audiences: [AUD], algorithms: ['ES256'] }] });
    const last = ks.keys[ks.keys.length - 1]!;
    const p = await v.verify(await mint({ privateKey: last.privateKey, alg: 'ES256' }, ks.claims({ sub: 'no-kid' })));
    assert.equal(p.subject, 'no-kid');
    const rogue = await newKey();
    await rejectsWith(v.verify(await mint({ privateKey: rogue.privateKey, alg: 'ES256' }, ks.claims())), 'bad_signature');
  });

  it('maxTokenAgeSeconds requires iat and bounds the age', async () => {
    const v = new JwtVerifier({ issuers: [{ issuer: ks.url, audiences: [AUD], algorithms: ['ES256'] }], maxTokenAgeSeconds: 60 });
    const k = ks.keys[0]!;
    await rejectsWith(v.verify(await mint(k, ks.claims({ iat: undefined }))), 'missing_claim');
    await rejectsWith(v.verify(await mint(k, ks.claims({ iat: nowSec() - 600 }))), 'expired');
    await v.verify(await mint(k, ks.claims()));
  });

  it('custom claim mapping per issuer (groups at a dotted path, username claim)', async () => {
    const v = new JwtVerifier({
      issuers: [{
        issuer: ks.url, audiences: ['other', AUD], algorithms: ['ES256'],
        claims: { groups: 'realm_access.roles', username: 'preferred_username' },
      }],
    });
    const token = await mint(ks.keys[0]!, ks.claims({ realm_access: { roles: ['dba'] }, preferred_username: 'alice' }));
    const p = await v.verify(token);
    assert.deepEqual(p.groups, ['dba']);
    assert.equal(p.username, 'alice');
    await rejectsWith(v.verify(await mint(ks.keys[0]!, ks.claims())), 'missing_claim');
  });

  it('JWKS endpoint unreachable -> jwks_unavailable (generic to the client)', async () => {
    const { server, url } = await listen(() => {});
    await closeServer(server); // a port that refuses connections now
    const v = new JwtVerifier({
      issuers: [{ issuer: 'https://idp.example', jwksUri: `${url}/jwks`, audiences: [AUD], algorithms: ['ES256'] }],
      fetchTimeoutMs: 1000,
    });
    const k = await newKey();
    const err = await rejectsWith(v.verify(await mint(k, { iss: 'https://idp.example', aud: AUD, sub: 'x', exp: nowSec() + 60 })), 'jwks_unavailable');
    assert.equal(clientMessageFor(err), CLIENT_MESSAGE_GENERIC);
  });

  it('discovery naming a different issuer -> jwks_unavailable', async () => {
    const { server, url } = await listen((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ issuer: 'https://someone-else.example', jwks_uri: `${ks.url}/jwks` }));
    });
    try {
      const v = new JwtVerifier({ issuers: [{ issuer: url, audiences: [AUD], algorithms: ['ES256'] }] });
      const err = await rejectsWith(v.verify(await mint(ks.keys[0]!, ks.claims({ iss: url }))), 'jwks_unavailable');
      assert.match(err.message, /someone-else/);
    } finally {
      await closeServer(server);
    }
  });
});

describe('JwtVerifier configuration', () => {
  const base = (over: Partial<JwtVerifierOptions['issuers'][number]>): JwtVerifierOptions => ({
    issuers: [{ issuer: 'https://idp.example', audiences: [AUD], algorithms: ['RS256'], ...over }],
  });

  it('refuses none, HS* and unknown algorithms', () => {
    assert.throws(() => new JwtVerifier(base({ algorithms: ['none'] })), (e: unknown) => e instanceof IdentityConfigError && /'none'/.test(e.message));
    assert.throws(() => new JwtVerifier(base({ algorithms: ['RS256', 'HS256'] })), /symmetric algorithm "HS256"/);
    assert.throws(() => new JwtVerifier(base({ algorithms: ['hs512'] })), IdentityConfigError);
    assert.throws(() => new JwtVerifier(base({ algorithms: ['RS1'] })), /unsupported algorithm/);
    assert.throws(() => new JwtVerifier(base({ algorithms: [] })), IdentityConfigError);
  });

  it('requires audiences and at least one issuer, no duplicates', () => {
    assert.throws(() => new JwtVerifier(base({ audiences: [] })), /audiences/);
    assert.throws(() => new JwtVerifier({ issuers: [] }), IdentityConfigError);
    const one = base({}).issuers[0]!;
    assert.throws(() => new JwtVerifier({ issuers: [one, one] }), /configured twice/);
  });

  it('refuses plain-http JWKS/discovery on non-loopback hosts unless allowed', () => {
    assert.throws(() => new JwtVerifier(base({ jwksUri: 'http://idp.example/jwks' })), /must use https/);
    assert.throws(() => new JwtVerifier(base({ issuer: 'http://idp.example' })), /must use https/);
    new JwtVerifier(base({ jwksUri: 'http://idp.example/jwks', allowInsecureHttp: true }));
    new JwtVerifier(base({ jwksUri: 'http://localhost:9000/jwks' }));
    new JwtVerifier(base({ jwksUri: 'https://idp.example/jwks' }));
  });
});

describe('clientMessageFor', () => {
  it('is generic for everything except expired and malformed', () => {
    const reasons: VerificationReason[] = [
      'unsigned', 'algorithm_not_allowed', 'unknown_issuer', 'bad_signature', 'unknown_key', 'not_yet_valid',
      'bad_audience', 'missing_claim', 'jwks_unavailable', 'claims_invalid',
    ];
    for (const r of reasons) {
      assert.equal(clientMessageFor(new IdentityVerificationError(r, `secret detail about ${r}`)), CLIENT_MESSAGE_GENERIC);
    }
    assert.equal(clientMessageFor(new IdentityVerificationError('expired', 'x')), CLIENT_MESSAGE_EXPIRED);
    assert.equal(clientMessageFor(new IdentityVerificationError('malformed', 'x')), CLIENT_MESSAGE_MALFORMED);
    assert.equal(clientMessageFor(new Error('boom')), CLIENT_MESSAGE_GENERIC);
  });
});
