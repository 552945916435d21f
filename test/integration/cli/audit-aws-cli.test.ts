/**
 * `warden audit --aws` and `warden revoke|unrevoke|revocations list --aws-table` as an operator runs
 * them: the real CLI in a child process, its AWS SDK clients pointed at local stand-ins through the
 * standard AWS_ENDPOINT_URL_<SERVICE> variables (DynamoDB: dynalite, S3: s3rver, KMS: the HTTP fake).
 * The trail is written by DynamoDbAuditSink with a KMS seal key, as a proxy task writes it.
 *
 * Proves: `sessions` lists the sealed and the open session from the sessions table; `show` prints a
 * session's events from the events table; `verify` accepts the chain, the KMS-signed seal and the S3
 * recording, and `--all` counts the open session as unsealed; after one stored event string is edited in
 * the table, `verify` reports the first broken link with exit code 1, and an event rewritten with a
 * valid hash is caught by its S3 recording; the AWS options are refused without --aws, and a sealed
 * session verified without a signing key is UNVERIFIED (exit code 1); a revoke, a repeated revoke and an unrevoke change the revocation table as the proxy
 * tasks read it, and each is recorded in the local operators' trail.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import type { AuditEventBodyOf, SessionId } from '../../../core/audit/events.ts';
import { hashEvent } from '../../../core/audit/hash-chain.ts';
import { AwsEnvironment } from '../../../core/config/aws-environment.ts';
import { DynamoDbAuditSink, KmsAuditSealSigner } from '../../../adapters/aws/dynamodb-audit-sink.ts';
import { newSessionId, SESSION_END, sessionStart } from '../../helpers/audit-sink.ts';
import { startDynalite, TEST_REGION, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import type { AwsJsonServer } from '../../helpers/fake-aws-json.ts';
import { FakeKms } from '../../helpers/fake-kms.ts';
import { S3RVER_CREDENTIALS, startS3rver, type LocalS3 } from '../../helpers/s3rver.ts';
import { runWardenCli, temporaryFolders } from '../../helpers/warden-cli.ts';

const NAMES = {
  sessions: 'warden-audit-sessions',
  events: 'warden-audit-events',
  recordings: 'warden-recordings',
  revocations: 'warden-revocations',
  signingKey: `arn:aws:kms:${TEST_REGION}:111122223333:key/audit-seal-key`,
} as const;
const ALICE = { issuer: 'https://id.example', subject: 'alice@example.com', groups: ['dev'] };
const ISSUER = 'https://token.actions.githubusercontent.com';

const folders = temporaryFolders();

const statement = (statementId: number, text: string): AuditEventBodyOf<'statement'> => ({
  type: 'statement',
  statementId,
  protocol: 'simple',
  text,
  classification: { operation: text.split(' ')[0]!.toLowerCase() },
  decision: { effect: 'allow', policies: ['readers'] },
  startedAt: new Date().toISOString(),
});

describe('warden audit --aws and revocations --aws-table, against local stand-ins', { timeout: 60_000 }, () => {
  let db: LocalDynamoDb;
  let s3: LocalS3;
  let kmsHttp: AwsJsonServer;
  const kms = new FakeKms();
  let sealed: SessionId;
  let open: SessionId;
  let cliConfig: string;
  const savedEnv = new Map<string, string | undefined>();

  /** runWardenCli passes this process's environment on: the variables an operator would have set. */
  function setEnv(vars: Record<string, string | undefined>): void {
    for (const [k, v] of Object.entries(vars)) {
      if (!savedEnv.has(k)) savedEnv.set(k, process.env[k]);
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }

  before(async () => {
    [db, s3, kmsHttp] = await Promise.all([startDynalite(), startS3rver({ buckets: [NAMES.recordings] }), kms.listen()]);
    await Promise.all([
      db.createTable(NAMES.sessions, 'sessionId'),
      db.createTable(NAMES.events, 'sessionId', { name: 'seq', type: 'N' }),
      db.createTable(NAMES.revocations, 'identity'),
    ]);
    kms.addSigningKey(NAMES.signingKey);
    // The auditor's role may read the public key only.
    kms.grant(S3RVER_CREDENTIALS.accessKeyId, ['GetPublicKey']);

    const signer = await KmsAuditSealSigner.create(kms.client('proxy-task', ['Sign', 'GetPublicKey']), NAMES.signingKey);
    const sink = new DynamoDbAuditSink({
      sessionsTable: NAMES.sessions,
      eventsTable: NAMES.events,
      recordingsBucket: NAMES.recordings,
      dynamodb: db.client,
      s3: s3.client,
      signer,
      readOnlyWindowMs: 20,
    });
    sealed = newSessionId();
    const s = sink.openSession(sealed, sessionStart({ source: { address: '10.0.0.7', port: 51234 } }));
    await s.append({ type: 'auth.success', principal: ALICE, method: 'oidc-jwt' }, { durable: true });
    await s.append(statement(1, 'SELECT name FROM users'), { durable: false });
    await s.append({ type: 'statement.end', statementId: 1, endedAt: new Date().toISOString(), durationMs: 0.8, outcome: 'ok', command: 'SELECT 1', rows: 1 }, { durable: false });
    await s.append(statement(2, 'DELETE FROM audit_log'), { durable: true });
    await s.end(SESSION_END);
    // Still open when the sink closes: its recording holds what was written, without seal.json.
    open = newSessionId();
    const o = sink.openSession(open, sessionStart({ target: 'billing' }));
    await o.append({ type: 'auth.success', principal: ALICE, method: 'oidc-jwt' }, { durable: true });
    await sink.close();

    const stateDir = folders('warden-aws-cli-');
    cliConfig = join(stateDir, 'warden.config.yaml');
    writeFileSync(cliConfig, `stateDir: ${stateDir}\nidentity:\n  devIssuer:\n    enabled: true\n`);
    setEnv({
      // Nothing from the machine's AWS set-up may leak in.
      AWS_PROFILE: undefined,
      AWS_SESSION_TOKEN: undefined,
      AWS_ENDPOINT_URL: undefined,
      AWS_CONFIG_FILE: join(stateDir, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: join(stateDir, 'no-aws-credentials'),
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_REGION: TEST_REGION,
      // s3rver checks SigV4 signatures against its own account.
      AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_ENDPOINT_URL_KMS: kmsHttp.endpoint,
      WARDEN_S3_FORCE_PATH_STYLE: 'true',
      [AwsEnvironment.auditSessionsTable]: NAMES.sessions,
      [AwsEnvironment.auditEventsTable]: NAMES.events,
      [AwsEnvironment.recordingsBucket]: NAMES.recordings,
      [AwsEnvironment.auditSigningKeyArn]: NAMES.signingKey,
      [AwsEnvironment.revocationsTable]: undefined,
    });
  });

  after(async () => {
    for (const [k, v] of savedEnv) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await Promise.all([db?.close(), s3?.close(), kmsHttp?.close()]);
  });

  const warden = (...args: string[]) => runWardenCli(['-c', cliConfig, ...args]);

  /** Rewrites one stored event string with `edit`, runs `fn`, and puts the original back. */
  async function withEditedEvent(sessionId: SessionId, seq: number, edit: (event: string) => string, fn: () => Promise<void>): Promise<void> {
    const key = { sessionId: { S: sessionId }, seq: { N: String(seq) } };
    const item = await db.client.send(new GetItemCommand({ TableName: NAMES.events, Key: key, ConsistentRead: true }));
    const original = item.Item?.event?.S;
    assert.ok(original !== undefined, `event #${seq} of ${sessionId} is stored inline`);
    const edited = edit(original);
    assert.notEqual(edited, original);
    const put = (event: string) =>
      db.client.send(new UpdateItemCommand({ TableName: NAMES.events, Key: key, UpdateExpression: 'SET #e = :e', ExpressionAttributeNames: { '#e': 'event' }, ExpressionAttributeValues: { ':e': { S: event } } }));
    await put(edited);
    try {
      await fn();
    } finally {
      await put(original);
    }
  }

  test('sessions lists the sealed and the open session from the sessions table', async () => {
    const r = await warden('audit', '--aws', 'sessions');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^SESSION\s+START\s+END\s+PRINCIPAL\s+TARGET\s+SOURCE\s+STATEMENTS/);
    const rows = r.stdout.split('\n');
    assert.match(rows.find((l) => l.startsWith(sealed))!, /alice@example\.com\s+app\s+10\.0\.0\.7:51234\s+2$/);
    assert.match(rows.find((l) => l.startsWith(open))!, /\(open\)\s+-\s+billing/);
  });

  test('show prints a session’s events from the events table', async () => {
    const r = await warden('audit', '--aws', 'show', sealed.slice(0, 8));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^session ${sealed}  \\(dynamodb:${NAMES.events}/${sealed}, 7 events\\)`));
    assert.match(r.stdout, /auth\.success\s+alice@example\.com @ https:\/\/id\.example via oidc-jwt/);
    assert.match(r.stdout, /statement\s+\[2\] ALLOW delete \(simple; policies: readers\)/);
    assert.match(r.stdout, /DELETE FROM audit_log/);
    assert.match(r.stdout, new RegExp(`seal\\s+sealed events #0-#5 with key ${NAMES.signingKey}`));
  });

  test('verify accepts the chain, the KMS seal and the recording; --all counts the open session', async () => {
    const [one, all] = await Promise.all([warden('audit', '--aws', 'verify', sealed), warden('audit', '--aws', 'verify', '--all')]);
    assert.equal(one.stdout, 'OK: 7 events, chain intact, sealed\n', one.stderr);
    assert.equal(one.code, 0);
    assert.equal(all.code, 0, all.stdout + all.stderr);
    assert.match(all.stdout, new RegExp(`${open}: OK: 2 events, chain intact, unsealed`));
    assert.match(all.stdout, /2 sessions: 1 sealed and intact, 1 unsealed, 0 broken/);
  });

  test('verify reports an edited event as the first broken link, with exit code 1', async () => {
    await withEditedEvent(sealed, 4, (e) => e.replace('DELETE FROM audit_log', 'SELECT 1'), async () => {
      const r = await warden('audit', '--aws', 'verify', sealed);
      assert.equal(r.stdout, 'BROKEN at seq 4: hash mismatch: event content was modified\n');
      assert.equal(r.code, 1);
    });
    assert.equal((await warden('audit', '--aws', 'verify', sealed)).code, 0, 'intact again once restored');
  });

  test('verify catches an event rewritten with a valid hash, by its S3 recording', async () => {
    // The open session's last event, edited and hashed again: no later event and no seal binds it, so the
    // chain is intact; the recording still holds the original.
    const rehashed = (line: string): string => {
      const ev = JSON.parse(line) as Record<string, unknown>;
      ev.method = 'password';
      delete ev.hash;
      ev.hash = hashEvent(ev);
      return JSON.stringify(ev);
    };
    await withEditedEvent(open, 1, rehashed, async () => {
      const r = await warden('audit', '--aws', 'verify', open);
      assert.match(r.stdout, new RegExp(`^BROKEN at seq 1: the event differs from its recording \\(s3://${NAMES.recordings}/recordings/.*/${open}/chunk-000001\\.jsonl\\)\n$`));
      assert.equal(r.code, 1);
    });
  });

  test('the AWS options are refused without --aws; --aws needs its tables, and without a signing key verify is UNVERIFIED', async () => {
    const [stray, operator, noTable, noKey] = await Promise.all([
      warden('audit', 'sessions', '--sessions-table', 'x'),
      warden('audit', '--aws', '--operator', 'sessions'),
      warden('audit', '--aws', '--events-table', '', 'sessions'),
      warden('audit', '--aws', '--signing-key', '', 'verify', sealed),
    ]);
    assert.equal(stray.code, 1);
    assert.match(stray.stderr, /--sessions-table needs --aws/);
    assert.equal(operator.code, 1);
    assert.match(operator.stderr, /--operator and --aws cannot be combined/);
    assert.equal(noTable.code, 1);
    assert.match(noTable.stderr, /give --events-table or set WARDEN_AUDIT_EVENTS_TABLE \(stack output EventsTable\)/);
    assert.equal(noKey.code, 1);
    assert.match(noKey.stdout, /^UNVERIFIED: 7 events, chain intact, sealed, but the seal signature was not checked: no KMS signing key given/);
  });

  test('revoke, a repeated revoke and unrevoke change the revocation table, each recorded in the local operators’ trail', async () => {
    const table = ['--aws-table', NAMES.revocations];
    const revoke = await warden('revoke', ...table, '--issuer', ISSUER, '--sub', 'repo:acme/ci', '--reason', 'token leaked in a CI log', '--as', 'alice');
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, new RegExp(`^revoked repo:acme/ci @ ${ISSUER} in table ${NAMES.revocations}: .*recorded in audit session revocation-`));

    const item = await db.client.send(new GetItemCommand({ TableName: NAMES.revocations, Key: { identity: { S: `${ISSUER}|repo:acme/ci` } }, ConsistentRead: true }));
    assert.equal(item.Item?.reason?.S, 'token leaked in a CI log');
    assert.equal(item.Item?.revokedBy?.S, 'alice');

    const again = await warden('revoke', ...table, '--issuer', ISSUER, '--sub', 'repo:acme/ci', '--reason', 'again', '--as', 'bob');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /is revoked already in table .* by alice\); nothing changed/);

    const list = await warden('revocations', 'list', '--aws', '--aws-table', NAMES.revocations, '--json');
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { issuer: string; subject: string; reason?: string; revokedBy?: string }[]).map((e) => [e.issuer, e.subject, e.reason, e.revokedBy]),
      [[ISSUER, 'repo:acme/ci', 'token leaked in a CI log', 'alice']],
    );

    const unrevoke = await warden('unrevoke', ...table, '--issuer', ISSUER, '--sub', 'repo:acme/ci', '--reason', 'new token issued', '--as', 'alice');
    assert.equal(unrevoke.code, 0, unrevoke.stderr);
    assert.match(unrevoke.stdout, /^unrevoked repo:acme\/ci @ .* in table /);
    const empty = await warden('revocations', 'list', ...table);
    assert.equal(empty.stdout, `no revoked identities in table ${NAMES.revocations}\n`);

    // Without --aws or --aws-table the local file is used: it never held the entry.
    const local = await warden('revocations', 'list', '--json');
    assert.deepEqual(JSON.parse(local.stdout), []);

    const trail = await warden('audit', '--operator', 'verify', '--all');
    assert.equal(trail.code, 0, trail.stdout + trail.stderr);
    assert.match(trail.stdout, /3 sessions: 3 sealed and intact, 0 unsealed, 0 broken/);
    const shown = await warden('audit', '--operator', 'show', unrevoke.stdout.match(/audit session (revocation-\S+)/)![1]!, '--json');
    const change = (JSON.parse(shown.stdout) as { events: { type: string; action?: string; changed?: boolean }[] }).events.find((e) => e.type === 'identity.revocation');
    assert.deepEqual(change && [change.action, change.changed], ['unrevoke', true]);
  });
});
