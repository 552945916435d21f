/**
 * Token attacks and login edge cases at the listener, with node-postgres (which reports SQLSTATEs) and the
 * raw client: every forged, stale or misdirected token is refused with 28P01 and a message that does not
 * say why (except expired / malformed), every attempt leaves a sealed audit trail with the reason code and
 * never the token, a burst of bad logins leaves an open session alone, and the upstream login works with
 * md5 and cleartext password targets while a wrong target credential stays Warden's secret.
 */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import pg from 'pg';
import { auditKeyPaths, listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { LocalSecretsFile } from '../../../adapters/local/secrets-file.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { CLIENT_MESSAGE_EXPIRED, CLIENT_MESSAGE_GENERIC, CLIENT_MESSAGE_MALFORMED } from '../../../core/identity/errors.ts';
import { decodeErrorFields, RawClient, startupPacket } from '../../helpers/raw-client.ts';
import { startTestWarden, TARGET_PASSWORD, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

let w: TestWarden;
let md5: TestWarden;
let cleartext: TestWarden;
let devKey: CryptoKey;
let devKid: string;
let devPublicJwk: JWK;
/** Every token this file sends: none may appear in any audit file. */
const tokensUsed: string[] = [];

before(async () => {
  [w, md5, cleartext] = await Promise.all([startTestWarden(), startTestWarden({ authMethod: 'md5' }), startTestWarden({ authMethod: 'password' })]);
  const jwk = JSON.parse(readFileSync(join(w.loaded.stateDir, 'dev-issuer', 'signing-key.jwk.json'), 'utf8')) as JWK;
  devKey = (await importJWK(jwk, 'ES256')) as CryptoKey;
  devKid = w.gw.devIssuer!.kid;
  devPublicJwk = w.gw.devIssuer!.jwks().keys[0]!;
  await w.pg.psql('create role secret_reader nologin; grant secret_reader to app_owner');
});

after(async () => {
  await Promise.all([w?.stop(), md5?.stop(), cleartext?.stop()]);
});

const now = (): number => Math.floor(Date.now() / 1000);

interface Forge {
  sub: string;
  iss?: string;
  aud?: string;
  iat?: number;
  nbf?: number;
  exp?: number;
  groups?: string[];
  key?: CryptoKey;
  kid?: string;
}

/** A token signed like the development issuer's, with any claim overridden. */
async function forge(f: Forge): Promise<string> {
  const t = now();
  const token = await new SignJWT({ groups: f.groups ?? ['readers'] })
    .setProtectedHeader({ alg: 'ES256', kid: f.kid ?? devKid, typ: 'at+jwt' })
    .setIssuer(f.iss ?? w.gw.devIssuer!.issuerUrl)
    .setAudience(f.aud ?? 'warden')
    .setSubject(f.sub)
    .setIssuedAt(f.iat ?? t)
    .setNotBefore(f.nbf ?? t)
    .setExpirationTime(f.exp ?? t + 600)
    .setJti(randomBytes(8).toString('hex'))
    .sign(f.key ?? devKey);
  return token;
}

const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Tries a login with node-postgres; returns the error (undefined when it was accepted, after closing). */
async function attempt(x: TestWarden, user: string, token: string, database = 'appdb', extra: Partial<pg.ClientConfig> = {}): Promise<pg.DatabaseError | undefined> {
  tokensUsed.push(token);
  const c = new pg.Client({ host: '127.0.0.1', port: x.port, user, database, password: token, ...extra });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (err) {
    return err as pg.DatabaseError;
  }
  await c.end();
  return undefined;
}

async function refused(x: TestWarden, user: string, token: string, database = 'appdb', extra: Partial<pg.ClientConfig> = {}): Promise<pg.DatabaseError> {
  const err = await attempt(x, user, token, database, extra);
  assert.ok(err, `login of ${user} was accepted`);
  assert.ok('code' in err && err.code, `not a server error: ${String(err)}`);
  return err;
}

type Ev = Record<string, unknown> & { type: string };

/** The only session of `user`, once sealed; its chain (with the seal signature) verifies. */
async function sealedSession(x: TestWarden, user: string): Promise<Ev[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const mine = (await listSessions(x.loaded.auditDir)).filter((s) => s.startupUser === user);
    assert.ok(mine.length <= 1, `several sessions for ${user}`);
    if (mine.length === 1 && mine[0]!.endTime) {
      const trail = await readSessionEvents(x.loaded.auditDir, mine[0]!.sessionId);
      const publicKey = createPublicKey(readFileSync(auditKeyPaths(x.loaded.stateDir).publicKeyPath));
      const v = verifyChainLines(trail.lines, publicKey);
      assert.ok(v.ok && v.sealed, `trail of ${user}: ${JSON.stringify(v)}`);
      return trail.events as unknown as Ev[];
    }
    if (Date.now() > deadline) assert.fail(`no sealed session for ${user}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function authFailure(x: TestWarden, user: string): Promise<Ev> {
  const events = await sealedSession(x, user);
  const f = events.find((e) => e.type === 'auth.failure');
  assert.ok(f, `no auth.failure for ${user}: ${events.map((e) => e.type).join(', ')}`);
  assert.ok(!events.some((e) => e.type === 'auth.success' || e.type === 'upstream.connect'), 'a refused login never reaches the target');
  return f;
}

function allFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? allFiles(p) : [p];
  });
}

describe('token attacks: refused with 28P01, reason recorded, trail sealed', () => {
  const cases: { name: string; reason: string; message: string; token: (user: string) => Promise<string> }[] = [
    {
      name: 'expired token',
      reason: 'expired',
      message: CLIENT_MESSAGE_EXPIRED,
      token: (sub) => forge({ sub, iat: now() - 7200, nbf: now() - 7200, exp: now() - 3600 }),
    },
    {
      name: 'nbf in the future',
      reason: 'not_yet_valid',
      message: CLIENT_MESSAGE_GENERIC,
      token: (sub) => forge({ sub, nbf: now() + 3600, exp: now() + 7200 }),
    },
    {
      name: 'wrong issuer (same key)',
      reason: 'unknown_issuer',
      message: CLIENT_MESSAGE_GENERIC,
      token: (sub) => forge({ sub, iss: 'https://issuer.example.com' }),
    },
    {
      name: 'wrong audience',
      reason: 'bad_audience',
      message: CLIENT_MESSAGE_GENERIC,
      token: (sub) => forge({ sub, aud: 'some-other-service' }),
    },
    {
      name: 'alg none',
      reason: 'unsigned',
      message: CLIENT_MESSAGE_GENERIC,
      token: async (sub) =>
        `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ iss: w.gw.devIssuer!.issuerUrl, aud: 'warden', sub, exp: now() + 600, iat: now(), groups: ['admins'] })}.`,
    },
    {
      name: 'HS256 signed with the public key as the HMAC secret',
      reason: 'algorithm_not_allowed',
      message: CLIENT_MESSAGE_GENERIC,
      token: (sub) =>
        new SignJWT({ groups: ['admins'] })
          .setProtectedHeader({ alg: 'HS256', kid: devKid })
          .setIssuer(w.gw.devIssuer!.issuerUrl)
          .setAudience('warden')
          .setSubject(sub)
          .setIssuedAt()
          .setExpirationTime('10m')
          .sign(new TextEncoder().encode(JSON.stringify(devPublicJwk))),
    },
    {
      name: 'a key not in the JWKS (unknown kid)',
      reason: 'unknown_key',
      message: CLIENT_MESSAGE_GENERIC,
      token: async (sub) => forge({ sub, key: (await generateKeyPair('ES256')).privateKey, kid: 'rogue-key-1' }),
    },
    {
      name: "a key not in the JWKS (the real key's kid)",
      reason: 'bad_signature',
      message: CLIENT_MESSAGE_GENERIC,
      token: async (sub) => forge({ sub, key: (await generateKeyPair('ES256')).privateKey }),
    },
    {
      name: 'tampered payload (sub and groups rewritten, signature kept)',
      reason: 'bad_signature',
      message: CLIENT_MESSAGE_GENERIC,
      token: async (sub) => {
        const genuine = await forge({ sub: 'someone-else' });
        const [h, p, s] = genuine.split('.');
        const payload = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
        return `${h}.${b64url({ ...payload, sub, groups: ['admins'] })}.${s}`;
      },
    },
    {
      name: 'garbage',
      reason: 'malformed',
      message: CLIENT_MESSAGE_MALFORMED,
      token: async () => `garbage-${randomBytes(12).toString('hex')}`,
    },
    {
      name: 'an RS256 token from a foreign key pair',
      reason: 'algorithm_not_allowed',
      message: CLIENT_MESSAGE_GENERIC,
      token: async (sub) => {
        const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
        return new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: devKid }).setIssuer(w.gw.devIssuer!.issuerUrl).setAudience('warden').setSubject(sub).setExpirationTime('10m').sign(privateKey);
      },
    },
  ];

  for (const [k, c] of cases.entries()) {
    test(c.name, async () => {
      const user = `atk-${k}`;
      const token = await c.token(user);
      const err = await refused(w, user, token);
      assert.equal(err.code, '28P01', err.message);
      assert.equal(err.message, c.message);
      assert.equal(err.severity, 'FATAL');
      assert.equal(err.detail, undefined);
      assert.equal(err.hint, undefined);
      const f = await authFailure(w, user);
      assert.equal(f.reason, c.reason);
      assert.equal(f.sqlstate, '28P01');
      assert.equal(f.claimedUser, user);
      assert.equal(typeof f.detail, 'string');
    });
  }

  test('the raw client sees the same: ErrorResponse 28P01, then the connection is closed', async () => {
    const c = await RawClient.connect(w.port);
    const token = await forge({ sub: 'atk-raw', aud: 'elsewhere' });
    tokensUsed.push(token);
    const r = await c.login({ user: 'atk-raw', database: 'appdb', password: token });
    assert.equal(r.ok, false);
    assert.equal(r.error?.C, '28P01');
    assert.equal(r.error?.M, CLIENT_MESSAGE_GENERIC);
    assert.equal(await c.waitClosed(2000), true);
    await authFailure(w, 'atk-raw');
  });
});

describe('valid token, wrong request', () => {
  test("user name not matching the token's subject → 28000", async () => {
    const token = await w.token('atk-real-subject');
    const err = await refused(w, 'atk-mismatch', token);
    assert.equal(err.code, '28000');
    assert.match(err.message, /user name must match the token/);
    const f = await authFailure(w, 'atk-mismatch');
    assert.equal(f.reason, 'user_mismatch');
    assert.equal(f.subject, 'atk-real-subject');
  });

  test('unknown target database → 3D000, but only with a valid token', async () => {
    const err = await refused(w, 'atk-nodb', await w.token('atk-nodb'), 'no_such_target');
    assert.equal(err.code, '3D000');
    assert.match(err.message, /target "no_such_target" does not exist/);
    assert.equal((await authFailure(w, 'atk-nodb')).reason, 'unknown_target');

    // Without a valid token nothing tells whether a target exists.
    const bad = await refused(w, 'atk-nodb-forged', await forge({ sub: 'atk-nodb-forged', aud: 'x' }), 'no_such_target');
    assert.equal(bad.code, '28P01');
    assert.equal(bad.message, CLIENT_MESSAGE_GENERIC);
  });

  test('a token with empty groups logs in', async () => {
    const token = await w.token('atk-nogroups', { groups: [] });
    tokensUsed.push(token);
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'atk-nogroups', database: 'appdb', password: token });
    await c.connect();
    assert.deepEqual((await c.query('select 1 as one')).rows, [{ one: 1 }]);
    await c.end();
    const events = await sealedSession(w, 'atk-nogroups');
    const ok = events.find((e) => e.type === 'auth.success') as unknown as { principal: { subject: string; groups: string[] } };
    assert.deepEqual(ok.principal.groups, []);
    assert.equal(ok.principal.subject, 'atk-nogroups');
  });

  test('startup options=-c role=… (and spelling variants) are refused with 42501', async () => {
    const variants = [
      '-c role=postgres',
      '-c role=secret_reader',
      '-crole=secret_reader',
      '--role=secret_reader',
      '-c ROLE=secret_reader',
      '-c session_authorization=postgres',
      // PostgreSQL's option splitter drops backslashes, getopt groups flags, and names take - for _.
      '-c rol\\e=secret_reader',
      '-ec role=secret_reader',
      '-\\-role=secret_reader',
      '-c role\\=secret_reader',
      '-c session-authorization=postgres',
      '-c statement_timeout=0 -c role=secret_reader',
    ];
    for (const [k, options] of variants.entries()) {
      const user = `atk-opt-${k}`;
      const err = await refused(w, user, await w.token(user), 'appdb', { options });
      assert.equal(err.code, '42501', `options ${JSON.stringify(options)}: ${err.message}`);
      const events = await sealedSession(w, user);
      assert.ok(!events.some((e) => e.type === 'upstream.connect'), `options ${JSON.stringify(options)} reached the target`);
    }
  });

  test('a role set as a startup parameter of its own is refused with 42501 too', async () => {
    for (const [k, key] of ['role', 'ROLE', 'session_authorization'].entries()) {
      const user = `atk-param-${k}`;
      const c = await RawClient.connect(w.port);
      const token = await w.token(user);
      tokensUsed.push(token);
      const r = await c.login({ user, database: 'appdb', password: token, params: { [key]: 'secret_reader' } });
      let who: string | undefined;
      if (r.ok) who = (await c.query('select current_user')).rows[0]?.[0] ?? undefined;
      c.destroy();
      assert.equal(r.ok, false, `startup parameter ${key}=secret_reader accepted (current_user ${who})`);
      assert.equal(r.error?.C, '42501');
    }
  });

  test('harmless startup options still pass through', async () => {
    const token = await w.token('atk-opt-ok');
    tokensUsed.push(token);
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'atk-opt-ok', database: 'appdb', password: token, options: '-c statement_timeout=1234 -c search_path=public' });
    await c.connect();
    const r = await c.query<{ t: string; u: string }>("select current_setting('statement_timeout') as t, current_user as u");
    assert.deepEqual(r.rows, [{ t: '1234ms', u: TARGET_USER }]);
    await c.end();
  });

  test('a startup packet without a user name is refused with 28000 before any token is asked for', async () => {
    const c = await RawClient.connect(w.port);
    c.write(startupPacket(3 << 16, Buffer.from('database\0appdb\0\0')));
    const m = await c.next();
    assert.equal(m.type, 'E');
    const f = decodeErrorFields(m.body);
    assert.equal(f.C, '28000');
    assert.match(f.M ?? '', /no PostgreSQL user name/);
    assert.equal(await c.waitClosed(2000), true);
  });

  test('replication=database is refused', async () => {
    const c = await RawClient.connect(w.port);
    const token = await w.token('atk-repl');
    tokensUsed.push(token);
    const r = await c.login({ user: 'atk-repl', database: 'appdb', password: token, params: { replication: 'database' } });
    c.destroy();
    assert.equal(r.ok, false);
    assert.equal(r.error?.C, '0A000');
    assert.match(r.error?.M ?? '', /replication/);
    // Refused before the token was even asked for.
    assert.ok(!r.messages.some((m) => m.type === 'R'));
    await sealedSession(w, 'atk-repl');
  });
});

describe('a burst of bad logins', () => {
  test('50 bad logins in parallel do not disturb an open session', async () => {
    const token = await w.token('burst-bystander');
    tokensUsed.push(token);
    const bystander = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'burst-bystander', database: 'appdb', password: token });
    await bystander.connect();
    await bystander.query('create temporary table t as select g from generate_series(1, 1000) g');
    const before = (await listSessions(w.loaded.auditDir)).length;
    let stop = false;
    const queries = (async () => {
      let n = 0;
      while (!stop) {
        const r = await bystander.query<{ s: string }>('select sum(g)::text as s from t where g <= $1', [100 + (n % 10)]);
        const m = 100 + (n % 10);
        assert.equal(r.rows[0]!.s, String((m * (m + 1)) / 2));
        n++;
      }
      return n;
    })();
    const forged = await Promise.all(
      Array.from({ length: 50 }, (_, k) =>
        k % 3 === 0 ? forge({ sub: `burst-${k}`, exp: now() - 3600, iat: now() - 7200, nbf: now() - 7200 }) : k % 3 === 1 ? forge({ sub: `burst-${k}`, aud: 'nope' }) : Promise.resolve(`junk-${k}`),
      ),
    );
    const errors = await Promise.all(forged.map((t, k) => attempt(w, `burst-${k}`, t)));
    stop = true;
    const ran = await queries;
    assert.ok(ran > 0);
    for (const e of errors) {
      assert.ok(e);
      assert.equal(e.code, '28P01');
    }
    assert.deepEqual((await bystander.query('select count(*)::int as n from t')).rows, [{ n: 1000 }]);
    await bystander.end();
    const deadline = Date.now() + 8000;
    let sealed = 0;
    while (Date.now() < deadline) {
      const sessions = (await listSessions(w.loaded.auditDir)).filter((s) => s.startupUser?.startsWith('burst-') && s.startupUser !== 'burst-bystander');
      sealed = sessions.filter((s) => s.endTime).length;
      if (sealed === 50) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(sealed, 50);
    assert.ok((await listSessions(w.loaded.auditDir)).length >= before + 50);
  });
});

describe('upstream authentication', () => {
  for (const [name, x] of [
    ['md5', () => md5],
    ['password (cleartext)', () => cleartext],
  ] as const) {
    test(`target with ${name} auth: login through Warden works`, async () => {
      const t = x();
      const token = await t.token('up-agent');
      tokensUsed.push(token);
      const c = new pg.Client({ host: '127.0.0.1', port: t.port, user: 'up-agent', database: 'appdb', password: token });
      await c.connect();
      const r = await c.query<{ u: string }>('select current_user as u');
      assert.deepEqual(r.rows, [{ u: TARGET_USER }]);
      await c.end();
    });
  }

  test('a wrong target credential: 08006 without the server text; the audit has upstream.connect ok=false', async () => {
    const secrets = new LocalSecretsFile(w.loaded.secretsFile);
    secrets.put('appdb-cred', { username: TARGET_USER, password: 'not-the-password' });
    try {
      const err = await refused(w, 'up-badcred', await w.token('up-badcred'));
      assert.equal(err.code, '08006');
      assert.equal(err.message, 'could not connect to target "appdb"');
      assert.doesNotMatch(JSON.stringify(err), /password authentication failed|app_owner|SCRAM/i);
      const events = await sealedSession(w, 'up-badcred');
      const up = events.find((e) => e.type === 'upstream.connect');
      assert.equal(up?.ok, false);
      assert.match(String(up?.error), /28P01/);
      assert.ok(events.some((e) => e.type === 'auth.success'), 'the agent itself was authenticated');
    } finally {
      secrets.put('appdb-cred', { username: TARGET_USER, password: TARGET_PASSWORD });
    }
    assert.equal(await attempt(w, 'up-goodcred', await w.token('up-goodcred')), undefined, 'works again with the right credential');
  });
});

describe('the audit trail', () => {
  test('no token (nor its signature) appears anywhere in the audit files', async () => {
    await w.gw.audit.flush();
    const files = allFiles(w.loaded.auditDir).filter((f) => !f.endsWith('.pem'));
    assert.ok(files.length > 20);
    const text = files.map((f) => readFileSync(f, 'utf8')).join('\n');
    assert.ok(tokensUsed.length > 60);
    for (const t of tokensUsed) {
      assert.ok(!text.includes(t), 'a token was written to the audit trail');
      const sig = t.split('.')[2];
      if (sig && sig.length > 16) assert.ok(!text.includes(sig), 'a token signature was written to the audit trail');
    }
  });
});
