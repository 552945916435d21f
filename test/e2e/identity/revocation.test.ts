/**
 * Revocation end to end: Warden in-process against a real PostgreSQL, node-postgres and psql as the agents,
 * and the `warden` command as the operator.
 *
 * Proves: `warden revoke` refuses the identity's next login with 28000 and a message that says it was
 * revoked (and nothing more), and its sealed trail records auth.failure `revoked`; the live sessions of an
 * identity revoked while connected (an idle node-postgres connection and a psql running a long statement)
 * end within a couple of seconds with a FATAL, their trails end with reason `revoked`, and the statement
 * on the target is cancelled rather than left running; another identity's session goes on untouched;
 * `warden unrevoke` restores access; every operator change is an `identity.revocation` event in the
 * operators' trail; a corrupt revocation file refuses new logins with 57P03 (fail closed, audited as
 * `revocation_unavailable`) while existing sessions continue, and fixing it lets logins in again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { auditKeyPaths, listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { readRevocationFile, revocationsFilePath, writeRevocationFile } from '../../../adapters/local/revocation-file.ts';
import { operatorAuditDir } from '../../../cli/commands/audit.ts';
import type { AuditEvent, AuditEventOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { CLIENT_MESSAGE_REVOCATION_UNAVAILABLE, CLIENT_MESSAGE_REVOKED, SESSION_MESSAGE_REVOKED } from '../../../core/identity/revocation-document.ts';
import { CLEAN_PG_ENV, describeRun, psqlPath, run, start } from '../../helpers/clients.ts';
import { runWardenCli, temporaryFolders } from '../../helpers/warden-cli.ts';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const folders = temporaryFolders();

describe('identity revocation through Warden', { skip: PSQL ? false : 'psql is not installed', timeout: 180_000 }, () => {
  let w: TestWarden;
  let iss: string;
  let cliConfig: string;
  let revocationFile: string;

  before(async () => {
    w = await startTestWarden();
    iss = w.gw.devIssuerUrl!;
    revocationFile = revocationsFilePath(w.loaded);
    // The operator's configuration: the gateway's state folder and issuer.
    cliConfig = join(folders('warden-revocation-cli-'), 'warden.config.yaml');
    writeFileSync(cliConfig, `stateDir: ${JSON.stringify(w.loaded.stateDir)}\nidentity:\n  devIssuer:\n    enabled: true\n    port: ${new URL(iss).port}\n`);
  });
  after(async () => {
    await w?.stop();
  });

  const warden = (...args: string[]) => runWardenCli(['-c', cliConfig, ...args]);

  async function revoke(sub: string, reason: string): Promise<void> {
    const r = await warden('revoke', '--issuer', iss, '--sub', sub, '--reason', reason, '--as', 'alice@example.com');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^revoked ${sub} @ `));
    assert.equal(r.stderr, '', 'the dev issuer is a configured issuer: no warning');
  }

  /** Until the gateway's list answers `status` for `sub` (the watch is prompt; this bounds the test). */
  async function gatewaySees(sub: string, status: 'ok' | 'revoked' | 'unavailable'): Promise<number> {
    const started = Date.now();
    while (w.gw.revocations.check(iss, sub) !== status) {
      if (Date.now() - started > 3000) assert.fail(`the gateway still answers ${w.gw.revocations.check(iss, sub)} for ${sub}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return Date.now() - started;
  }

  async function connect(sub: string): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database: 'appdb', password: await w.token(sub) });
    await c.connect();
    return c;
  }

  async function loginError(sub: string): Promise<pg.DatabaseError> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database: 'appdb', password: await w.token(sub) });
    c.on('error', () => undefined);
    try {
      await c.connect();
    } catch (err) {
      return err as pg.DatabaseError;
    }
    await c.end();
    assert.fail(`the login of ${sub} was accepted`);
  }

  async function psql(sub: string, sql: string) {
    return run(PSQL!, ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', `host=127.0.0.1 port=${w.port} user=${sub} dbname=appdb sslmode=require`, '-c', sql], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token(sub) },
      timeoutMs: 30_000,
    });
  }

  /** Every ended session of `sub` (by startup user), each with a sealed chain that verifies. */
  async function sealedSessions(sub: string, atLeast: number): Promise<AuditEvent[][]> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const mine = (await listSessions(w.loaded.auditDir)).filter((s) => s.startupUser === sub && s.endTime);
      if (mine.length >= atLeast) {
        const publicKey = createPublicKey(readFileSync(auditKeyPaths(w.loaded.stateDir).publicKeyPath));
        return Promise.all(
          mine.map(async (s) => {
            const trail = await readSessionEvents(w.loaded.auditDir, s.sessionId);
            const v = verifyChainLines(trail.lines, publicKey);
            assert.ok(v.ok && v.sealed, `trail of ${sub}: ${JSON.stringify(v)}`);
            return trail.events;
          }),
        );
      }
      if (Date.now() > deadline) assert.fail(`expected ${atLeast} sealed session(s) of ${sub}, found ${mine.length}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const endOf = (events: AuditEvent[]) => events.find((e): e is AuditEventOf<'session.end'> => e.type === 'session.end');
  const failureOf = (events: AuditEvent[]) => events.find((e): e is AuditEventOf<'auth.failure'> => e.type === 'auth.failure');

  test('a revoked identity is refused at login with 28000, says so, and its trail records why', async () => {
    await revoke('bot-revoked', 'token leaked in a CI log');
    await gatewaySees('bot-revoked', 'revoked');

    const err = await loginError('bot-revoked');
    assert.equal(err.code, '28000');
    assert.equal(err.message, CLIENT_MESSAGE_REVOKED);
    assert.doesNotMatch(err.message, /leaked|alice/, 'the reason and the operator stay with the operators');

    const r = await psql('bot-revoked', 'select 1');
    assert.equal(r.code, 2, describeRun(r));
    assert.match(r.stderr, /access for this identity has been revoked/);

    const sessions = await sealedSessions('bot-revoked', 2);
    for (const events of sessions) {
      const f = failureOf(events);
      assert.ok(f, events.map((e) => e.type).join(', '));
      assert.equal(f.reason, 'revoked');
      assert.equal(f.sqlstate, '28000');
      assert.equal(f.subject, 'bot-revoked');
      assert.equal(f.issuer, iss);
      assert.equal(endOf(events)?.reason, 'auth_failed');
      assert.ok(!events.some((e) => e.type === 'auth.success' || e.type === 'upstream.connect'), 'nothing reached the target');
    }

    const list = await warden('revocations', 'list', '--json');
    assert.equal(list.code, 0, list.stderr);
    const entries = JSON.parse(list.stdout) as { issuer: string; subject: string; reason?: string; revokedBy?: string }[];
    assert.deepEqual(
      entries.map((e) => [e.issuer, e.subject, e.reason, e.revokedBy]),
      [[iss, 'bot-revoked', 'token leaked in a CI log', 'alice@example.com']],
    );

    const again = await warden('revoke', '--issuer', iss, '--sub', 'bot-revoked', '--reason', 'again', '--as', 'bob@example.com');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /revoked already .*by alice@example\.com.*nothing changed/);
  });

  test('live sessions of an identity revoked while connected end within seconds; another identity is unaffected', async (t) => {
    const idle = await connect('bot-live');
    assert.equal((await idle.query('select 1 as one')).rows[0].one, 1);
    // node-postgres reports the FATAL, then the closed connection: the first error is the server's.
    const ended = new Promise<{ err: pg.DatabaseError; at: number }>((resolve) => idle.on('error', (err) => resolve({ err: err as pg.DatabaseError, at: Date.now() })));
    const bystander = await connect('bot-bystander');

    const busy = start(PSQL!, ['-X', '-At', '-d', `host=127.0.0.1 port=${w.port} user=bot-live dbname=appdb sslmode=require`, '-c', 'select pg_sleep(60)'], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token('bot-live') },
      timeoutMs: 60_000,
    });
    const sleeping = async (): Promise<number> => Number((await w.pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'", { database: 'appdb' })).trim());
    for (let i = 0; (await sleeping()) !== 1; i++) {
      if (i > 200) assert.fail('the psql statement never started on the target');
      await new Promise((r) => setTimeout(r, 25));
    }

    await revoke('bot-live', 'agent retired');
    const revokedAt = statSync(revocationFile).mtimeMs; // when the operator's change landed

    const { err, at } = await ended;
    assert.equal(err.code, '57P01');
    assert.equal(err.message, SESSION_MESSAGE_REVOKED);
    const psqlDone = await busy.done;
    assert.notEqual(psqlDone.code, 0);
    assert.match(psqlDone.stderr, /access for this identity has been revoked/);
    const idleEndedAfter = Math.round(at - revokedAt);
    const psqlEndedAfter = Math.round(Date.now() - revokedAt); // an upper bound: psql is awaited after the idle client
    assert.ok(idleEndedAfter < 2000, `the idle session ended ${idleEndedAfter} ms after the revoke`);
    assert.ok(psqlEndedAfter < 2000, `the psql session ended ${psqlEndedAfter} ms after the revoke`);
    for (let i = 0; (await sleeping()) !== 0; i++) {
      if (i > 80) assert.fail('the revoked session\'s statement still runs on the target');
      await new Promise((r) => setTimeout(r, 25));
    }

    assert.equal((await bystander.query('select 2 as two')).rows[0].two, 2, 'another identity goes on');
    await bystander.end();
    await idle.end().catch(() => undefined);

    const sessions = await sealedSessions('bot-live', 2);
    for (const events of sessions) {
      assert.ok(events.some((e) => e.type === 'auth.success'));
      assert.equal(endOf(events)?.reason, 'revoked', events.map((e) => e.type).join(', '));
    }
    const [other] = await sealedSessions('bot-bystander', 1);
    assert.equal(endOf(other!)?.reason, 'client_terminate');
    t.diagnostic(`revocation reached: idle node-postgres after ${idleEndedAfter} ms, busy psql after ${psqlEndedAfter} ms`);
  });

  test('unrevoke restores access, and every change is in the operators\' trail', async () => {
    const r = await warden('unrevoke', '--issuer', iss, '--sub', 'bot-revoked', '--reason', 'new token issued', '--as', 'alice@example.com');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^unrevoked bot-revoked @ /);
    await gatewaySees('bot-revoked', 'ok');

    const c = await connect('bot-revoked');
    assert.equal((await c.query('select 3 as three')).rows[0].three, 3);
    await c.end();
    const p = await psql('bot-revoked', 'select 4');
    assert.equal(p.code, 0, describeRun(p));
    assert.equal(p.stdout.trim(), '4');

    const dir = operatorAuditDir(w.loaded.auditDir);
    const changes: AuditEventOf<'identity.revocation'>[] = [];
    for (const s of await listSessions(dir)) {
      for (const e of (await readSessionEvents(dir, s.sessionId)).events) if (e.type === 'identity.revocation') changes.push(e);
    }
    changes.sort((a, b) => a.time.localeCompare(b.time));
    assert.deepEqual(
      changes.map((e) => [e.action, e.identity.subject, e.changed, e.operator.subject, e.reason]),
      [
        ['revoke', 'bot-revoked', true, 'alice@example.com', 'token leaked in a CI log'],
        ['revoke', 'bot-revoked', false, 'bob@example.com', 'again'],
        ['revoke', 'bot-live', true, 'alice@example.com', 'agent retired'],
        ['unrevoke', 'bot-revoked', true, 'alice@example.com', 'new token issued'],
      ],
    );
    assert.ok(changes.every((e) => e.identity.issuer === iss && typeof e.osUser === 'string'));
  });

  test('a corrupt revocation file refuses new logins (57P03, fail closed) while existing sessions continue', async () => {
    const steady = await connect('bot-steady');
    const before = await readRevocationFile(revocationFile);
    writeFileSync(revocationFile, '{"revoked": [ {"issuer": ');
    try {
      await gatewaySees('bot-new', 'unavailable');

      const err = await loginError('bot-new');
      assert.equal(err.code, '57P03');
      assert.equal(err.message, CLIENT_MESSAGE_REVOCATION_UNAVAILABLE);
      const r = await psql('bot-new', 'select 1');
      assert.equal(r.code, 2, describeRun(r));
      assert.match(r.stderr, /try again later/);
      for (const events of await sealedSessions('bot-new', 2)) {
        assert.equal(failureOf(events)?.reason, 'revocation_unavailable');
        assert.equal(failureOf(events)?.sqlstate, '57P03');
      }

      assert.equal((await steady.query('select 5 as five')).rows[0].five, 5, 'a live session continues');
      const list = await warden('revocations', 'list');
      assert.equal(list.code, 1);
      assert.match(list.stderr, /not valid JSON/);
    } finally {
      await writeRevocationFile(revocationFile, before);
    }
    await gatewaySees('bot-new', 'ok');
    const c = await connect('bot-new');
    await c.end();
    assert.equal((await steady.query('select 6 as six')).rows[0].six, 6);
    await steady.end();
    assert.equal(w.gw.revocations.check(iss, 'bot-live'), 'revoked', 'the restored file still revokes');
  });
});
