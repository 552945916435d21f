/**
 * Warden with every port on its AWS implementation (WARDEN_ADAPTERS=aws), started as a deployed task
 * starts it: `node --import tsx proxy-task/src/main.ts` with the configuration in WARDEN_CONFIG_JSON and
 * every variable the stack sets (core/config/aws-environment.ts). The AWS SDK clients reach local
 * stand-ins through the standard AWS_ENDPOINT_URL_<SERVICE> variables: DynamoDB is dynalite, S3 is
 * s3rver, and KMS, Secrets Manager and Step Functions, which have no emulator, are fakes speaking their
 * JSON protocols over HTTP (test/helpers/fake-*.ts). Agents are psql and node-postgres against a real
 * PostgreSQL.
 *
 * Proves: a SELECT runs and its ruled columns come back masked; the session's events are in the events
 * table and verify as a hash chain sealed by the KMS signing key, and its S3 recording holds the same
 * lines; the masked originals are in an S3 vault record that holds none of them in clear and that an
 * operator with kms:Decrypt reads back; a production write by a writer is refused naming its approval
 * request, whose Step Functions execution was started with the request; an identity revoked in the
 * revocations table is refused at login with 28000; the target's credential was read from Secrets
 * Manager once; and SIGTERM seals the session still open and exits 0, every session item ended.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pseudonym } from '../../../core/masking/strategies.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { listAwsSessions, readAwsRecording, readAwsSessionEvents, type AwsAuditStore } from '../../../adapters/aws/audit-aws-reader.ts';
import { loadKmsSealPublicKey, verifySeal } from '../../../adapters/aws/audit-seal-signer.ts';
import { putRevocation } from '../../../adapters/aws/dynamodb-revocation-list.ts';
import { S3ForensicVaultReader, s3VaultObjectKey } from '../../../adapters/aws/s3-forensic-vault.ts';
import type { SessionSummary } from '../../../adapters/local/audit-trail-reader.ts';
import { DevIssuer } from '../../../adapters/local/dev-issuer.ts';
import type { AuditEvent, AuditEventOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { AwsEnvironment, type AwsEnvironmentName } from '../../../core/config/aws-environment.ts';
import { CLIENT_MESSAGE_REVOKED } from '../../../core/identity/revocation-document.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { CLEAN_PG_ENV, describeRun, psqlPath, run } from '../../helpers/clients.ts';
import { startDynalite, TEST_REGION, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import type { AwsJsonServer } from '../../helpers/fake-aws-json.ts';
import { FakeKms } from '../../helpers/fake-kms.ts';
import { FakeSecretsManager } from '../../helpers/fake-secrets-manager.ts';
import { startFakeStepFunctions, type FakeStepFunctions } from '../../helpers/fake-step-functions.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { S3RVER_CREDENTIALS, startS3rver, type LocalS3 } from '../../helpers/s3rver.ts';
import { DEFAULT_POLICY_DIR, freePort, TARGET_PASSWORD, TARGET_USER } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

const ACCOUNT = '111122223333';
const NAMES = {
  sessions: 'warden-audit-sessions',
  events: 'warden-audit-events',
  approvals: 'warden-approvals',
  revocations: 'warden-revocations',
  recordings: 'warden-recordings',
  vault: 'warden-vault',
  credential: 'warden/targets/appdb',
  auditKey: `arn:aws:kms:${TEST_REGION}:${ACCOUNT}:key/audit-tables-key`,
  signingKey: `arn:aws:kms:${TEST_REGION}:${ACCOUNT}:key/audit-seal-key`,
  vaultKey: `arn:aws:kms:${TEST_REGION}:${ACCOUNT}:key/vault-key`,
  maskingKey: `arn:aws:kms:${TEST_REGION}:${ACCOUNT}:key/masking-hmac-key`,
  stateMachine: `arn:aws:states:${TEST_REGION}:${ACCOUNT}:stateMachine:warden-approval`,
} as const;
/** s3rver checks SigV4 signatures against its own account, so the task signs every request with it. */
const TASK_ROLE = S3RVER_CREDENTIALS.accessKeyId;

const EMAIL = 'alice@example.com';
const SSN = '123-45-6789';

describe('Warden on its AWS adapters, against local stand-ins', { skip, timeout: 60_000 }, () => {
  let server: PostgresServer;
  let db: LocalDynamoDb;
  let s3: LocalS3;
  const kms = new FakeKms(NAMES.vaultKey);
  const secrets = new FakeSecretsManager();
  let kmsHttp: AwsJsonServer;
  let secretsHttp: AwsJsonServer;
  let sfn: FakeStepFunctions;
  let stateDir: string;
  let store: AwsAuditStore;
  let sealKey: KeyObject;
  let issuer: DevIssuer;
  let issuerUrl: string;
  let port: number;
  let warden: ChildProcess;
  let output = '';
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  before(async () => {
    const t0 = Date.now();
    [server, db, s3, kmsHttp, secretsHttp, sfn] = await Promise.all([
      startTestPostgres({ authMethod: 'scram-sha-256' }),
      startDynalite(),
      startS3rver({ buckets: [NAMES.recordings, NAMES.vault] }),
      kms.listen(),
      secrets.listen(),
      startFakeStepFunctions(),
    ]);
    await server.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await server.createDatabase('appdb', TARGET_USER);
    await server.psql(
      `CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text);
       INSERT INTO people VALUES (1, 'Alice', '${EMAIL}', '${SSN}');
       CREATE TABLE accounts (id int PRIMARY KEY, status text NOT NULL);
       INSERT INTO accounts VALUES (1, 'open');`,
      { database: 'appdb', user: TARGET_USER },
    );

    // What the stack creates (audit-aws-layout.ts, dynamodb-approval-store.ts, dynamodb-revocation-list.ts).
    await db.createTable(NAMES.sessions, 'sessionId');
    await db.createTable(NAMES.events, 'sessionId', { name: 'seq', type: 'N' });
    await db.createTable(NAMES.approvals, 'id');
    await db.createTable(NAMES.revocations, 'identity');
    kms.addKey(NAMES.auditKey);
    kms.addSigningKey(NAMES.signingKey);
    kms.addMacKey(NAMES.maskingKey);
    // The task's role: data keys for the vault, the seal's key; never Decrypt.
    kms.grant(TASK_ROLE, ['GenerateDataKey', 'Sign', 'GetPublicKey', 'GenerateMac']);
    secrets.put(NAMES.credential, JSON.stringify({ username: TARGET_USER, password: TARGET_PASSWORD }));

    stateDir = mkdtempSync(join(tmpdir(), 'warden-aws-e2e-'));
    let issuerPort: number;
    [port, issuerPort] = [await freePort(), await freePort()];
    issuerUrl = `http://127.0.0.1:${issuerPort}`;
    // Revoked before the task starts: its first read of the table, awaited before it listens, holds it.
    await putRevocation(db.client, NAMES.revocations, { issuer: issuerUrl, subject: 'revoked-agent', revokedAt: new Date().toISOString(), reason: 'agent retired' });

    const config = {
      stateDir,
      listeners: { postgres: { host: '127.0.0.1', port, tls: { mode: 'off' } } },
      identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
      targets: [
        {
          name: 'appdb',
          kind: 'postgres',
          host: '127.0.0.1',
          port: server.port,
          environment: 'production',
          credential: NAMES.credential,
          masking: {
            columns: [
              { column: 'public.people.email', strategy: 'redact' },
              { column: 'public.people.ssn', strategy: 'partial' },
              { column: 'public.people.name', strategy: 'hash' },
            ],
          },
        },
      ],
      audit: { readOnlyWindowMs: 50 },
      policy: { dir: DEFAULT_POLICY_DIR },
      approvals: { mode: 'async', approvers: [{ id: 'dba@example.com', groups: ['db-approvers'] }] },
    };
    // Typed over every name of the contract: a variable added to the stack's environment must be set here.
    const stackEnvironment = {
      [AwsEnvironment.adapters]: 'aws',
      [AwsEnvironment.configJson]: JSON.stringify(config),
      [AwsEnvironment.auditSessionsTable]: NAMES.sessions,
      [AwsEnvironment.auditEventsTable]: NAMES.events,
      [AwsEnvironment.approvalsTable]: NAMES.approvals,
      [AwsEnvironment.revocationsTable]: NAMES.revocations,
      [AwsEnvironment.recordingsBucket]: NAMES.recordings,
      [AwsEnvironment.auditKeyArn]: NAMES.auditKey,
      [AwsEnvironment.auditSigningKeyArn]: NAMES.signingKey,
      [AwsEnvironment.vaultBucket]: NAMES.vault,
      [AwsEnvironment.vaultKeyArn]: NAMES.vaultKey,
      [AwsEnvironment.approvalStateMachineArn]: NAMES.stateMachine,
      [AwsEnvironment.drainSeconds]: '1',
      [AwsEnvironment.auditRetentionDays]: '400',
      [AwsEnvironment.maskingKeyArn]: NAMES.maskingKey,
    } satisfies Record<AwsEnvironmentName, string>;
    const env: Record<string, string | undefined> = {
      ...process.env,
      // Nothing from the machine's AWS set-up may leak in: no profile, no shared files, no metadata service.
      AWS_PROFILE: undefined,
      AWS_SESSION_TOKEN: undefined,
      AWS_ENDPOINT_URL: undefined,
      AWS_CONFIG_FILE: join(stateDir, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: join(stateDir, 'no-aws-credentials'),
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_REGION: TEST_REGION,
      AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_ENDPOINT_URL_KMS: kmsHttp.endpoint,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: secretsHttp.endpoint,
      AWS_ENDPOINT_URL_SFN: sfn.endpoint,
      WARDEN_S3_FORCE_PATH_STYLE: 'true',
      WARDEN_CONFIG: undefined,
      WARDEN_POLICY_DIR: undefined,
      NODE_OPTIONS: undefined,
      ...stackEnvironment,
    };
    const spawned = Date.now();
    warden = spawn(process.execPath, ['--import', 'tsx', 'proxy-task/src/main.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    warden.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    warden.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    exited = new Promise((resolve) => warden.once('exit', (code, signal) => resolve({ code, signal })));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Warden did not start:\n${output}`)), 30_000);
      const check = (): void => {
        if (!output.includes(`Warden is listening for PostgreSQL on 127.0.0.1:${port}`)) return;
        clearTimeout(timer);
        resolve();
      };
      warden.stdout!.on('data', check);
      void exited.then(({ code }) => {
        clearTimeout(timer);
        reject(new Error(`Warden exited (${code}) before listening:\n${output}`));
      });
    });
    console.log(`stand-ins and target ready in ${spawned - t0} ms; Warden listening ${Date.now() - spawned} ms after spawn`);

    issuer = await DevIssuer.loadOrCreate(stateDir, { issuerUrl, audience: 'warden' });
    store = { sessionsTable: NAMES.sessions, eventsTable: NAMES.events, recordingsBucket: NAMES.recordings, dynamodb: db.client, s3: s3.client };
    sealKey = await loadKmsSealPublicKey(kms.client('auditor', ['GetPublicKey']), NAMES.signingKey);
  });

  after(async () => {
    if (warden && warden.exitCode === null && warden.signalCode === null) {
      warden.kill('SIGKILL');
      await exited;
    }
    await Promise.all([server?.stop(), db?.close(), s3?.close(), kmsHttp?.close(), secretsHttp?.close(), sfn?.close()]);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  const token = (sub: string, groups: string[]): Promise<string> => issuer.issueToken({ sub, groups });

  function pgClient(sub: string, password: string): pg.Client {
    const c = new pg.Client({ host: '127.0.0.1', port, user: sub, database: 'appdb', password });
    c.on('error', () => undefined);
    return c;
  }

  /** The sessions-table summary of the one session `sub` opened, once `done` holds for it. */
  async function sessionOf(sub: string, done: (s: SessionSummary) => boolean = (s) => s.endTime !== undefined, timeoutMs = 10_000): Promise<SessionSummary> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const mine = (await listAwsSessions(store)).filter((s) => s.startupUser === sub);
      assert.ok(mine.length <= 1, `one session of ${sub}: ${JSON.stringify(mine)}`);
      if (mine[0] && done(mine[0])) return mine[0];
      if (Date.now() > until) assert.fail(`no finished session of ${sub} in ${NAMES.sessions}: ${JSON.stringify(mine)}\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The session's events from the events table, checked to be a complete chain with a valid KMS seal. */
  async function verifiedTrail(s: SessionSummary): Promise<AuditEvent[]> {
    const trail = await readAwsSessionEvents(store, s.sessionId);
    assert.deepEqual(trail.payloadErrors, []);
    assert.deepEqual(verifyChainLines(trail.lines, sealKey, { keyId: NAMES.signingKey }), { ok: true, count: trail.lines.length, sealed: true, keyId: NAMES.signingKey }, s.sessionId);
    const seal = trail.events.at(-1) as AuditEventOf<'seal'>;
    assert.equal(seal.type, 'seal');
    assert.equal(seal.keyId, NAMES.signingKey, 'the seal names the KMS key that signed it');
    assert.ok(verifySeal({ sessionId: s.sessionId, eventCount: seal.eventCount, lastHash: seal.lastHash, signature: seal.signature }, sealKey), 'the ECDSA P-256 signature verifies');
    assert.ok(!verifySeal({ sessionId: s.sessionId, eventCount: seal.eventCount + 1, lastHash: seal.lastHash, signature: seal.signature }, sealKey), 'and binds the event count');
    assert.equal(s.eventCount, trail.lines.length);
    return trail.events;
  }

  test('psql: a SELECT runs and its ruled columns come back masked; the trail is in DynamoDB, chained and sealed with the KMS key, and recorded in S3', async () => {
    const r = await run(PSQL!, [`host=127.0.0.1 port=${port} user=reader-agent dbname=appdb sslmode=disable`, '-X', '-At', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', 'SELECT id, name, email, ssn FROM people ORDER BY id'], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await token('reader-agent', ['readers']) },
      timeoutMs: 15_000,
    });
    assert.equal(r.code, 0, `${describeRun(r)}\n${output}`);
    const [id, name, email, ssn] = r.stdout.trim().split('|');
    // The keyed hash's key is the KMS HMAC key's MAC of the target: the same on every task and restart.
    const hashKey = kms.mac(NAMES.maskingKey, Buffer.from('warden-masking:appdb', 'utf8'));
    assert.deepEqual([id, name, email], ['1', pseudonym('Alice', hashKey), '[REDACTED]']);
    assert.ok(ssn!.endsWith('6789') && !ssn!.includes('123-45'), ssn);

    const s = await sessionOf('reader-agent');
    assert.equal(s.reason, 'client_terminate');
    assert.equal(s.principal?.subject, 'reader-agent');
    const events = await verifiedTrail(s);
    const types = events.map((e) => e.type);
    for (const t of ['session.start', 'auth.success', 'upstream.connect', 'statement', 'statement.end', 'session.end', 'seal']) assert.ok(types.includes(t as never), `${t} in ${types.join(', ')}`);

    // The recording is sealed once the seal is in the table: wait for its seal.json.
    const trail = await readAwsSessionEvents(store, s.sessionId);
    let recording = await readAwsRecording(store, s.sessionId);
    for (let i = 0; i < 100 && recording.seal === null; i++) {
      await new Promise((res) => setTimeout(res, 50));
      recording = await readAwsRecording(store, s.sessionId);
    }
    assert.equal(recording.bucket, NAMES.recordings);
    assert.deepEqual(recording.lines, trail.lines, 'the S3 recording holds the same lines as the events table');
    assert.ok(recording.seal && verifySeal({ sessionId: s.sessionId, eventCount: recording.seal.eventCount, lastHash: recording.seal.lastHash, signature: recording.seal.signature }, sealKey));
  });

  test('the masked originals are in an S3 vault record that holds none of them in clear; an operator with kms:Decrypt reads them back', async () => {
    const s = await sessionOf('reader-agent');
    const events = (await readAwsSessionEvents(store, s.sessionId)).events;
    const end = events.find((e): e is AuditEventOf<'statement.end'> => e.type === 'statement.end' && e.vault !== undefined);
    assert.ok(end?.vault, `a statement.end names its vault record: ${JSON.stringify(events)}`);
    assert.equal(end.vault.cells, 3, 'name, email and ssn of one row');

    const key = s3VaultObjectKey('', s.sessionId, end.statementId);
    const object = await s3.client.send(new GetObjectCommand({ Bucket: NAMES.vault, Key: key }));
    const bytes = Buffer.from(await object.Body!.transformToByteArray());
    assert.ok(bytes.length > 0);
    for (const original of [EMAIL, SSN, 'alice@', '123-45']) assert.equal(bytes.indexOf(original), -1, `the object does not hold ${original} in clear`);

    const operator = new S3ForensicVaultReader({ s3: s3.client, kms: kms.client('vault-operator', ['Decrypt']), bucket: NAMES.vault, keyId: NAMES.vaultKey });
    const record = await operator.read(s.sessionId, end.statementId);
    assert.equal(record.ref.sha256, end.vault.sha256, 'the trail names exactly this object');
    assert.deepEqual(record.cells.map((c) => [c.columnName, c.original]).sort(), [['email', EMAIL], ['name', 'Alice'], ['ssn', SSN]]);

    const taskCalls = new Set(kms.calls.filter((c) => c.caller === TASK_ROLE).map((c) => `${c.operation} ${c.keyId}`));
    assert.deepEqual(
      [...taskCalls].sort(),
      [`GenerateDataKey ${NAMES.vaultKey}`, `GenerateMac ${NAMES.maskingKey}`, `GetPublicKey ${NAMES.signingKey}`, `Sign ${NAMES.signingKey}`],
      'the task only wraps data keys, derives the masking key and signs seals',
    );
  });

  test('node-postgres: a production write by a writer is refused naming its request, whose Step Functions execution was started with it', async () => {
    const sql = "UPDATE accounts SET status = 'closed' WHERE id = 1";
    const c = pgClient('writer-agent', await token('writer-agent', ['writers']));
    await c.connect();
    let err: (Error & { code?: string; hint?: string }) | undefined;
    try {
      err = await c.query(sql).then(() => undefined, (e: Error & { code?: string }) => e);
    } finally {
      await c.end();
    }
    assert.equal(err?.code, '42501', String(err));
    const id = /request (apr-[A-Za-z0-9_-]+) waits for 1 approval from db-approvers/.exec(err.message)?.[1];
    assert.ok(id, err.message);
    assert.match(err.hint ?? '', /run exactly the same statement again/);

    const starts = sfn.calls.filter((x) => x.operation === 'StartExecution');
    assert.equal(starts.length, 1, JSON.stringify(sfn.calls));
    assert.equal(starts[0]!.body.stateMachineArn, NAMES.stateMachine);
    assert.equal(starts[0]!.body.name, id);
    const input = JSON.parse(String(starts[0]!.body.input)) as { request: { id: string; mode: string; statement: { text: string }; requester: { subject: string }; target: { name: string } }; timeoutSeconds: number };
    assert.equal(input.request.id, id);
    assert.equal(input.request.mode, 'async');
    assert.equal(input.request.statement.text, sql);
    assert.equal(input.request.requester.subject, 'writer-agent');
    assert.equal(input.request.target.name, 'appdb');
    assert.equal(input.timeoutSeconds, 900);
    assert.equal(sfn.execution(id)?.status, 'RUNNING');
    assert.equal((await server.psql('SELECT status FROM accounts WHERE id = 1', { database: 'appdb', user: TARGET_USER })).trim(), 'open', 'nothing ran');

    const s = await sessionOf('writer-agent');
    const requested = (await verifiedTrail(s)).find((e): e is AuditEventOf<'approval.requested'> => e.type === 'approval.requested');
    assert.equal(requested?.approvalId, id);
  });

  test('an identity in the revocations table is refused at login with 28000', async () => {
    const c = pgClient('revoked-agent', await token('revoked-agent', ['readers']));
    const err = await c.connect().then(() => undefined, (e: Error & { code?: string }) => e);
    await c.end().catch(() => undefined);
    assert.equal(err?.code, '28000', String(err));
    assert.equal(err.message, CLIENT_MESSAGE_REVOKED);

    const s = await sessionOf('revoked-agent');
    assert.equal(s.reason, 'auth_failed');
    const failure = (await verifiedTrail(s)).find((e): e is AuditEventOf<'auth.failure'> => e.type === 'auth.failure');
    assert.deepEqual([failure?.reason, failure?.sqlstate, failure?.subject], ['revoked', '28000', 'revoked-agent']);
  });

  test('the target credential came from Secrets Manager, read once for every session', () => {
    assert.equal(secrets.reads(NAMES.credential), 1, JSON.stringify(secrets.calls));
    assert.deepEqual(secrets.calls.map((c) => c.secretId), [NAMES.credential]);
  });

  test('SIGTERM: the session still open is ended and sealed, the process exits 0, and every session item shows it ended', async () => {
    const live = pgClient('live-agent', await token('live-agent', ['readers']));
    await live.connect();
    assert.deepEqual((await live.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    const open = await sessionOf('live-agent', (s) => s.startTime !== undefined);
    assert.equal(open.endTime, undefined, 'open while connected');

    const stopAt = Date.now();
    warden.kill('SIGTERM');
    const exit = await exited;
    console.log(`SIGTERM to exit: ${Date.now() - stopAt} ms (drain 1 s)`);
    assert.deepEqual(exit, { code: 0, signal: null }, output);
    await live.end().catch(() => undefined);

    const sessions = await listAwsSessions(store);
    assert.deepEqual(sessions.map((s) => s.startupUser).sort(), ['live-agent', 'reader-agent', 'revoked-agent', 'writer-agent']);
    for (const s of sessions) {
      assert.ok(s.endTime, `session of ${s.startupUser} ended`);
      await verifiedTrail(s);
    }
    assert.equal(sessions.find((s) => s.startupUser === 'live-agent')?.reason, 'shutdown');
  });
});
