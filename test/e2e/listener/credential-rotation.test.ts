/**
 * A target credential rotated in Secrets Manager while Warden runs: the gateway with SecretsManagerStore
 * (the real SDK client, Secrets Manager faked at its HTTP boundary: there is no local emulator) in front of
 * a real PostgreSQL, driven by node-postgres.
 *
 * Proves: between rotation's setSecret (the database already wants the AWSPENDING password) and
 * finishSecret, the next login still succeeds: the target refuses the cached credential, Warden reads it
 * again once, takes AWSPENDING, and the session's trail records the refused attempt and the good one; a
 * credential that is wrong everywhere is retried once only and the agent gets 08006 without the
 * target's authentication error.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { SecretsManagerStore } from '../../../adapters/aws/secrets-manager-store.ts';
import type { LoadedConfig } from '../../../adapters/local/config-file.ts';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import type { AuditEvent, AuditEventOf } from '../../../core/audit/events.ts';
import { parseConfig } from '../../../core/config/schema.ts';
import { allowAllDecider } from '../../../core/policy/decision.ts';
import { startGateway, type Gateway } from '../../../proxy-task/src/gateway.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { createLogger } from '../../../proxy-task/src/log.ts';
import { FakeSecretsManager } from '../../helpers/fake-secrets-manager.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { DEFAULT_POLICY_DIR, freePort } from '../../helpers/warden.ts';

const ROLE = 'app_owner';
const SECRET = 'warden/targets/appdb';
const secretValue = (password: string) => JSON.stringify({ engine: 'postgres', username: ROLE, password });

describe('a target credential rotated in Secrets Manager', { timeout: 60_000 }, () => {
  let target: PostgresServer;
  let gw: Gateway;
  let sm: FakeSecretsManager;
  let stateDir: string;
  let auditDir: string;

  before(async () => {
    target = await startTestPostgres({ authMethod: 'scram-sha-256' });
    await target.createRole(ROLE, 'password-v1', { login: true });
    await target.createDatabase('appdb', ROLE);
    sm = new FakeSecretsManager();
    sm.put(SECRET, secretValue('password-v1'));
    stateDir = mkdtempSync(join(tmpdir(), 'warden-rotation-'));
    auditDir = join(stateDir, 'audit');
    const config = parseConfig(
      {
        stateDir,
        listeners: { postgres: { host: '127.0.0.1', port: 0 } },
        identity: { devIssuer: { enabled: true, port: await freePort(), audience: 'warden' } },
        targets: [{ name: 'appdb', kind: 'postgres', host: '127.0.0.1', port: target.port, database: 'appdb', credential: SECRET, environment: 'development' }],
        audit: { readOnlyWindowMs: 20 },
      },
      'test',
    );
    const loaded: LoadedConfig = { config, file: 'test', stateDir, secretsFile: join(stateDir, 'secrets.json'), auditDir, policyDir: DEFAULT_POLICY_DIR };
    gw = await startGateway(loaded, { postgresPort: 0, log: createLogger('error'), decider: allowAllDecider, adapters: { secrets: new SecretsManagerStore({ client: sm.client() }) } });
  });
  after(async () => {
    await gw?.close();
    await target?.stop();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  async function login(sub: string): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.postgres.port, user: sub, database: 'appdb', password: await gw.devIssuer!.issueToken({ sub, groups: ['readers'] }) });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  }

  async function trailOf(sub: string): Promise<AuditEvent[]> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const s = (await listSessions(auditDir)).find((x) => x.startupUser === sub && x.endTime);
      if (s) return (await readSessionEvents(auditDir, s.sessionId)).events;
      if (Date.now() > deadline) assert.fail(`no ended session of ${sub}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const upstreamConnects = (events: AuditEvent[]) => events.filter((e): e is AuditEventOf<'upstream.connect'> => e.type === 'upstream.connect');

  test('a login between setSecret and finishSecret uses AWSPENDING after the target refuses the cached password', async () => {
    const first = await login('bot-before');
    assert.equal((await first.query('select current_user as u')).rows[0].u, ROLE);
    await first.end();
    assert.equal(sm.reads(SECRET), 1);

    sm.startRotation(SECRET, secretValue('password-v2')); // createSecret
    await target.createRole(ROLE, 'password-v2', { login: true }); // setSecret: the database changes now

    const during = await login('bot-during');
    assert.equal((await during.query('select 1 as one')).rows[0].one, 1);
    await during.end();
    assert.equal(sm.reads(SECRET, 'AWSPENDING'), 1);
    const connects = upstreamConnects(await trailOf('bot-during'));
    assert.deepEqual(connects.map((e) => e.ok), [false, true]);
    assert.match(connects[0]!.error ?? '', /credential read again/);
    assert.doesNotMatch(JSON.stringify(connects), /password-v/);

    sm.finishRotation(SECRET);
    const after = await login('bot-after');
    await after.end();
    assert.deepEqual(upstreamConnects(await trailOf('bot-after')).map((e) => e.ok), [true], 'the pending credential is cached: no refusal');
  });

  test('a credential wrong everywhere is read again once, then the agent gets 08006 without the target\'s error', async () => {
    await target.createRole(ROLE, 'password-nobody-knows', { login: true });
    const before = sm.reads(SECRET);
    const err = await login('bot-wrong').then(
      () => assert.fail('accepted'),
      (e: unknown) => e as pg.DatabaseError,
    );
    assert.equal(err.code, '08006');
    assert.equal(err.message, 'could not connect to target "appdb"');
    assert.deepEqual(upstreamConnects(await trailOf('bot-wrong')).map((e) => e.ok), [false, false]);
    assert.ok(sm.reads(SECRET) - before <= 2, 'AWSCURRENT (and AWSPENDING) once, not a loop');
  });
});
