/**
 * TLS at both ends of Warden, with real clients: psql (libpq) and node-postgres towards the listener, and a
 * PostgreSQL target with ssl=on behind it. One target server is shared by three Wardens that differ only
 * in their listener's TLS settings; the first one carries several targets that differ only in upstream TLS.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { loadOrCreateSelfSignedCertificate } from '../../../proxy-task/src/embedded/tls-certificate.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { decodeErrorFields, gssEncRequest, RawClient } from '../../helpers/raw-client.ts';
import { startTestWarden, TARGET_PASSWORD, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

const run = promisify(execFile);

let certDir: string;
let target: PostgresServer;
let targetCert: string;
let impostorCert: string;
/** Listener TLS self-signed (default), cleartext allowed on loopback; targets with every upstream TLS mode. */
let w: TestWarden;
/** Listener TLS self-signed, allowCleartextOnLoopback: false. */
let strict: TestWarden;
/** Listener TLS off. */
let noTls: TestWarden;

const listener = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  postgres: { host: '127.0.0.1', port: 0, tls: { mode: 'self-signed' }, ...extra },
});

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), 'warden-tls-test-'));
  const [cert, impostor] = await Promise.all([
    loadOrCreateSelfSignedCertificate(join(certDir, 'target'), { commonName: 'target', altNames: ['127.0.0.1', 'localhost'] }),
    loadOrCreateSelfSignedCertificate(join(certDir, 'impostor'), { commonName: 'target', altNames: ['127.0.0.1', 'localhost'] }),
  ]);
  targetCert = cert.certFile;
  impostorCert = impostor.certFile;
  target = await startTestPostgres({ authMethod: 'scram-sha-256', ssl: { certFile: cert.certFile, keyFile: cert.keyFile } });
  await target.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
  await target.createDatabase('appdb', TARGET_USER);
  const t = (name: string, tls: Record<string, unknown>): Record<string, unknown> => ({
    name,
    kind: 'postgres',
    host: '127.0.0.1',
    port: target.port,
    database: 'appdb',
    credential: 'appdb-cred',
    environment: 'development',
    tls,
  });
  [w, strict, noTls] = await Promise.all([
    startTestWarden({
      pg: target,
      config: {
        listeners: listener(),
        targets: [
          t('appdb', { mode: 'verify-full', caFile: targetCert, serverName: 'localhost' }),
          t('wrongca', { mode: 'verify-full', caFile: impostorCert, serverName: 'localhost' }),
          t('wrongname', { mode: 'verify-full', caFile: targetCert, serverName: 'db.example.com' }),
          t('anycert', { mode: 'require' }),
          t('plain', { mode: 'disable' }),
        ],
      },
    }),
    startTestWarden({ pg: target, config: { listeners: listener({ allowCleartextOnLoopback: false }), targets: [t('appdb', { mode: 'disable' })] } }),
    startTestWarden({ pg: target, config: { listeners: listener({ tls: { mode: 'off' } }), targets: [t('appdb', { mode: 'disable' })] } }),
  ]);
});

after(async () => {
  await Promise.all([w?.stop(), strict?.stop(), noTls?.stop()]);
  await target?.stop();
  rmSync(certDir, { recursive: true, force: true });
});

interface PsqlResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** psql (libpq) with the token as password; never throws. */
async function psql(conninfo: string, token: string, sql: string): Promise<PsqlResult> {
  try {
    const r = await run('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', conninfo, '-c', sql], {
      env: { ...process.env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' },
      timeout: 20_000,
    });
    return { ok: true, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

function conninfo(x: TestWarden, user: string, extra: string, dbname = 'appdb'): string {
  return `host=127.0.0.1 port=${x.port} user=${user} dbname=${dbname} ${extra}`;
}

/** The session.start event of the (only) session of `user`, once that session is sealed, plus all its events. */
async function sessionOf(x: TestWarden, user: string): Promise<{ start: Record<string, unknown>; events: Record<string, unknown>[] }> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const mine = (await listSessions(x.loaded.auditDir)).filter((s) => s.startupUser === user);
    if (mine.length === 1 && mine[0]!.endTime) {
      const trail = await readSessionEvents(x.loaded.auditDir, mine[0]!.sessionId);
      const events = trail.events as unknown as Record<string, unknown>[];
      return { start: events[0]!, events };
    }
    assert.ok(mine.length <= 1, `several sessions for ${user}`);
    if (Date.now() > deadline) assert.fail(`no sealed session for ${user}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function pgConnectError(x: TestWarden, user: string, database: string, ssl: pg.ClientConfig['ssl'] = false): Promise<pg.DatabaseError | Error> {
  const c = new pg.Client({ host: '127.0.0.1', port: x.port, user, database, password: await x.token(user), ssl });
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (err) {
    return err as Error;
  }
  await c.end();
  assert.fail('the login was accepted');
}

describe('client side: the listener with the default self-signed certificate', () => {
  test('sslmode=prefer uses TLS (psql \\conninfo, audit session.start tls=true)', async () => {
    const r = await psql(conninfo(w, 'tls-prefer', 'sslmode=prefer'), await w.token('tls-prefer'), '\\conninfo');
    assert.ok(r.ok, r.stderr);
    assert.match(r.stdout, /SSL connection \(protocol: TLSv1\.[23]/);
    assert.equal((await sessionOf(w, 'tls-prefer')).start.tls, true);
  });

  test('sslmode=require works', async () => {
    const r = await psql(conninfo(w, 'tls-require', 'sslmode=require'), await w.token('tls-require'), 'select 40 + 2');
    assert.ok(r.ok, r.stderr);
    assert.equal(r.stdout.trim(), '42');
    assert.equal((await sessionOf(w, 'tls-require')).start.tls, true);
  });

  test('sslmode=verify-full with the generated certificate as root works (the certificate names 127.0.0.1)', async () => {
    const rootcert = join(w.loaded.stateDir, 'tls', 'tls-cert.pem');
    const r = await psql(conninfo(w, 'tls-verify', `sslmode=verify-full sslrootcert=${rootcert}`), await w.token('tls-verify'), 'select 1');
    assert.ok(r.ok, r.stderr);
    const other = await psql(conninfo(w, 'tls-verify-bad', `sslmode=verify-full sslrootcert=${impostorCert}`), await w.token('tls-verify-bad'), 'select 1');
    assert.equal(other.ok, false, 'a different root must not verify');
    assert.match(other.stderr, /certificate verify failed/);
  });

  test('sslmode=disable is allowed on the loopback listener (tls=false in the audit)', async () => {
    const r = await psql(conninfo(w, 'tls-disable', 'sslmode=disable'), await w.token('tls-disable'), '\\conninfo');
    assert.ok(r.ok, r.stderr);
    assert.doesNotMatch(r.stdout, /SSL connection/);
    assert.equal((await sessionOf(w, 'tls-disable')).start.tls, false);
  });

  test('GSSENCRequest is answered with the single byte N; the client can go on with SSLRequest and log in', async () => {
    const c = await RawClient.connect(w.port);
    c.write(gssEncRequest());
    const answer = await c.readBytes(1, 2000);
    assert.equal(answer.toString('latin1'), 'N');
    // Nothing else follows the answer.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.buffered, 0);
    assert.equal(c.closed, false);
    assert.equal(await c.sslRequest(), 'S');
    await c.upgradeTls();
    assert.ok(c.encrypted);
    c.startup({ user: 'tls-gss-raw', database: 'appdb' });
    const ask = await c.next();
    assert.equal(ask.type, 'R');
    c.password(await w.token('tls-gss-raw'));
    const msgs = await c.until((m) => m.type === 'Z' || m.type === 'E');
    assert.equal(msgs.at(-1)!.type, 'Z', JSON.stringify(msgs.filter((m) => m.type === 'E').map((m) => decodeErrorFields(m.body))));
    assert.deepEqual((await c.query('select 5')).rows, [['5']]);
    c.destroy();
    assert.equal((await sessionOf(w, 'tls-gss-raw')).start.tls, true);
  });

  // Without Kerberos credentials libpq skips GSSENCRequest even with gssencmode=prefer; the raw test above
  // is the one that sends it.
  test('psql with gssencmode=prefer works', async () => {
    const r = await psql(conninfo(w, 'tls-gss', 'gssencmode=prefer sslmode=prefer'), await w.token('tls-gss'), '\\conninfo');
    assert.ok(r.ok, r.stderr);
    assert.match(r.stdout, /SSL connection/);
  });

  test('a second SSLRequest inside TLS is answered N (no double encryption)', async () => {
    const c = await RawClient.connect(w.port);
    assert.equal(await c.sslRequest(), 'S');
    await c.upgradeTls();
    assert.equal(await c.sslRequest(), 'N');
    c.destroy();
  });
});

describe('client side: allowCleartextOnLoopback: false', () => {
  test('sslmode=disable is refused with 28000 telling to use sslmode=require, before the token is asked for', async () => {
    const r = await psql(conninfo(strict, 'strict-disable', 'sslmode=disable'), await strict.token('strict-disable'), 'select 1');
    assert.equal(r.ok, false);
    assert.match(r.stderr, /sslmode=require/);

    const err = (await pgConnectError(strict, 'strict-disable-pg', 'appdb')) as pg.DatabaseError;
    assert.equal(err.code, '28000');
    assert.match(err.message, /TLS is required .*sslmode=require/);

    // The raw view: the refusal comes instead of the password request, so the token never crosses in cleartext.
    const c = await RawClient.connect(strict.port);
    c.startup({ user: 'strict-raw', database: 'appdb' });
    const m = await c.next();
    assert.equal(m.type, 'E');
    assert.equal(decodeErrorFields(m.body).C, '28000');
    assert.equal(await c.waitClosed(2000), true);

    const s = await sessionOf(strict, 'strict-raw');
    const failure = s.events.find((e) => e.type === 'auth.failure');
    assert.equal(failure?.reason, 'tls_required');
    assert.equal(s.start.tls, false);
  });

  test('sslmode=require (and prefer) work', async () => {
    for (const mode of ['require', 'prefer']) {
      const r = await psql(conninfo(strict, `strict-${mode}`, `sslmode=${mode}`), await strict.token(`strict-${mode}`), 'select 1');
      assert.ok(r.ok, `${mode}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), '1');
    }
  });
});

describe("client side: tls: { mode: 'off' }", () => {
  test('SSLRequest is answered N', async () => {
    const c = await RawClient.connect(noTls.port);
    assert.equal(await c.sslRequest(), 'N');
    // The connection stays usable in cleartext.
    const r = await c.login({ user: 'off-raw', database: 'appdb', password: await noTls.token('off-raw') });
    assert.ok(r.ok, JSON.stringify(r.error));
    c.destroy();
  });

  test('sslmode=require fails on the client side; prefer falls back to cleartext', async () => {
    const r = await psql(conninfo(noTls, 'off-require', 'sslmode=require'), await noTls.token('off-require'), 'select 1');
    assert.equal(r.ok, false);
    assert.match(r.stderr, /server does not support SSL, but SSL was required/);
    const p = await psql(conninfo(noTls, 'off-prefer', 'sslmode=prefer'), await noTls.token('off-prefer'), '\\conninfo');
    assert.ok(p.ok, p.stderr);
    assert.doesNotMatch(p.stdout, /SSL connection/);
  });
});

describe('upstream TLS (target with ssl=on)', () => {
  const SSL_SQL = 'select ssl::text from pg_stat_ssl where pid = pg_backend_pid()';

  test("verify-full with the target's certificate as CA and serverName localhost: works, over TLS", async () => {
    const r = await psql(conninfo(w, 'up-verify', 'sslmode=require'), await w.token('up-verify'), SSL_SQL);
    assert.ok(r.ok, r.stderr);
    assert.equal(r.stdout.trim(), 'true');
    const s = await sessionOf(w, 'up-verify');
    const up = s.events.find((e) => e.type === 'upstream.connect');
    assert.equal(up?.ok, true);
    assert.equal(up?.tls, true);
  });

  test('verify-full with a different CA: 08006 "could not connect to target", no certificate details', async () => {
    const err = (await pgConnectError(w, 'up-wrongca', 'wrongca')) as pg.DatabaseError;
    assert.equal(err.code, '08006');
    assert.equal(err.message, 'could not connect to target "wrongca"');
    for (const k of ['detail', 'hint', 'where'] as const) assert.equal(err[k], undefined, k);
    const s = await sessionOf(w, 'up-wrongca');
    const up = s.events.find((e) => e.type === 'upstream.connect');
    assert.equal(up?.ok, false);
    // The operator's trail has the reason.
    assert.match(String(up?.error), /TLS to the target failed/);
  });

  test('verify-full with a server name the certificate does not carry: 08006, generic', async () => {
    const err = (await pgConnectError(w, 'up-wrongname', 'wrongname')) as pg.DatabaseError;
    assert.equal(err.code, '08006');
    assert.equal(err.message, 'could not connect to target "wrongname"');
  });

  test('require accepts any certificate, and the upstream connection is encrypted', async () => {
    const r = await psql(conninfo(w, 'up-require', 'sslmode=require', 'anycert'), await w.token('up-require'), SSL_SQL);
    assert.ok(r.ok, r.stderr);
    assert.equal(r.stdout.trim(), 'true');
  });

  test('disable: the upstream connection is not encrypted', async () => {
    const r = await psql(conninfo(w, 'up-plain', 'sslmode=require', 'plain'), await w.token('up-plain'), SSL_SQL);
    assert.ok(r.ok, r.stderr);
    assert.equal(r.stdout.trim(), 'false');
  });

  test('the audit trail never holds certificate or key material', async () => {
    // The trail is for operators and may name the TLS error (the client-facing text was checked above),
    // but never a certificate or a key.
    const files = readdirSync(join(w.loaded.auditDir, 'sessions')).map((f) => readFileSync(join(w.loaded.auditDir, 'sessions', f), 'utf8'));
    for (const text of files) assert.doesNotMatch(text, /BEGIN (CERTIFICATE|PRIVATE KEY)/);
  });
});
