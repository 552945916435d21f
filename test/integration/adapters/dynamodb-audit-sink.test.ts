/**
 * DynamoDbAuditSink against a DynamoDB API (dynalite) and an S3 API (s3rver) on 127.0.0.1, through
 * the real AWS SDK v3 clients.
 *
 * KMS has no local emulator: the seal key is faked at the SDK boundary (FakeKms implements `send` for
 * SignCommand and GetPublicKeyCommand, answering as KMS does for an ECC_NIST_P256 SIGN_VERIFY key,
 * backed by a node:crypto P-256 key pair). s3rver has no Object Lock and accepts `If-None-Match: *`
 * on PUT but overwrites anyway: one test checks that every put carries the header, another emulates
 * S3's 412 answer at the SDK boundary.
 *
 * Proves: a session's events land in order with a chain that core's verifier accepts and a seal that
 * verifies with the KMS public key (and with the local Ed25519 key); the sessions table lists it with
 * its TTL; a durable append resolves only after its item is stored; non-durable appends within the
 * window are written in one round; a large event goes to S3 behind a pointer and still verifies, and
 * an edited payload is caught; the recording is written in chunks while the session runs and sealed
 * at its end; throttled writes and lost answers are retried without duplicates or false conflicts; a
 * second writer of the same session, or an existing S3 key, is refused and fails the sink closed;
 * a stopped or silent DynamoDB makes appends reject within the request time limits; concurrent
 * sessions keep separate chains; close() writes everything out.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, createHash, sign as cryptoSign } from 'node:crypto';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, GetItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { GetPublicKeyCommand, SignCommand } from '@aws-sdk/client-kms';
import type { GetPublicKeyCommandOutput, SignCommandOutput } from '@aws-sdk/client-kms';
import type { AuditEventBodyOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { AuditWriteError } from '../../../core/audit/ports.ts';
import type { SessionAudit } from '../../../core/audit/ports.ts';
import {
  DynamoDbAuditSink,
  Ed25519AuditSealSigner,
  KmsAuditSealSigner,
  listAwsSessions,
  loadKmsSealPublicKey,
  readAwsRecording,
  readAwsSessionEvents,
  verifySeal,
} from '../../../adapters/aws/dynamodb-audit-sink.ts';
import type { AwsAuditStore, DynamoDbAuditSinkOptions, KmsSealClient } from '../../../adapters/aws/dynamodb-audit-sink.ts';
import { newSessionId, SESSION_END, sessionStart, useAuditSinkFixture } from '../../helpers/audit-sink.ts';
import { startDynalite, TEST_CREDENTIALS, TEST_REGION } from '../../helpers/dynalite.ts';
import type { LocalDynamoDb } from '../../helpers/dynalite.ts';
import { startS3rver } from '../../helpers/s3rver.ts';
import type { LocalS3 } from '../../helpers/s3rver.ts';

const LOCATION = { sessionsTable: 'audit-sessions', eventsTable: 'audit-events', recordingsBucket: 'warden-recordings' } as const;
const START = sessionStart();
const ALICE = { issuer: 'https://id.example', subject: 'alice', groups: ['dev'] };

// The local Ed25519 key (adapters/local/audit-signing-key.ts), created in a temp state dir.
const local = useAuditSinkFixture({ tempPrefix: 'warden-aws-audit-', readOnlyWindowMs: 50 });

const stmt = (statementId: number, text = `SELECT ${statementId}`): AuditEventBodyOf<'statement'> => ({
  type: 'statement',
  statementId,
  protocol: 'simple',
  text,
  classification: { operation: 'select', ratio: 0.1 + 0.2 },
  decision: { effect: 'allow', policies: ['p'] },
  startedAt: new Date().toISOString(),
});
const stmtEnd = (statementId: number): AuditEventBodyOf<'statement.end'> => ({
  type: 'statement.end',
  statementId,
  endedAt: new Date().toISOString(),
  durationMs: 1.25,
  outcome: 'ok',
  command: 'SELECT 1',
  rows: 1,
});

/** KMS at the SDK boundary: an ECC_NIST_P256 SIGN_VERIFY key, addressable by ARN or alias. */
class FakeKms implements KmsSealClient {
  readonly arn = 'arn:aws:kms:us-east-1:111122223333:key/0b6c2a4e-1f7d-4c1e-9d55-5e2a2f0c7b11';
  readonly alias = 'alias/warden-audit-seal';
  signCalls = 0;
  private readonly keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  send(command: SignCommand, options?: { abortSignal?: AbortSignal }): Promise<SignCommandOutput>;
  send(command: GetPublicKeyCommand, options?: { abortSignal?: AbortSignal }): Promise<GetPublicKeyCommandOutput>;
  async send(command: SignCommand | GetPublicKeyCommand): Promise<SignCommandOutput | GetPublicKeyCommandOutput> {
    const keyId = command.input.KeyId;
    if (keyId !== this.arn && keyId !== this.alias) throw Object.assign(new Error(`Key '${keyId}' does not exist`), { name: 'NotFoundException' });
    if (command instanceof SignCommand) {
      const { Message, MessageType, SigningAlgorithm } = command.input;
      if (!Message || Message.length > 4096 || MessageType !== 'RAW' || SigningAlgorithm !== 'ECDSA_SHA_256') {
        throw Object.assign(new Error('invalid Sign request for this key'), { name: 'ValidationException' });
      }
      this.signCalls++;
      // KMS hashes a RAW message with SHA-256 and returns a DER-encoded ECDSA signature.
      return { KeyId: this.arn, Signature: cryptoSign('sha256', Message, this.keys.privateKey), SigningAlgorithm, $metadata: {} };
    }
    return {
      KeyId: this.arn,
      PublicKey: this.keys.publicKey.export({ type: 'spki', format: 'der' }),
      KeySpec: 'ECC_NIST_P256',
      KeyUsage: 'SIGN_VERIFY',
      SigningAlgorithms: ['ECDSA_SHA_256'],
      $metadata: {},
    };
  }
}

async function createAuditTables(db: LocalDynamoDb): Promise<void> {
  await db.createTable(LOCATION.sessionsTable, 'sessionId');
  await db.client.send(
    new CreateTableCommand({
      TableName: LOCATION.eventsTable,
      AttributeDefinitions: [
        { AttributeName: 'sessionId', AttributeType: 'S' },
        { AttributeName: 'seq', AttributeType: 'N' },
      ],
      KeySchema: [
        { AttributeName: 'sessionId', KeyType: 'HASH' },
        { AttributeName: 'seq', KeyType: 'RANGE' },
      ],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  for (let i = 0; i < 100; i++) {
    const d = await db.client.send(new DescribeTableCommand({ TableName: LOCATION.eventsTable }));
    if (d.Table?.TableStatus === 'ACTIVE') return;
    await sleep(10);
  }
  throw new Error('events table did not become ACTIVE');
}

interface SentItem {
  command: string;
  seq?: number;
  at: number;
}

/**
 * Records the DynamoDB requests a client sends (at the SDK's build step, after marshalling); `before`
 * runs ahead of each request and may delay or throw, `after` once it answered.
 */
function instrumentDynamo(
  client: DynamoDBClient,
  hooks: { before?: (r: SentItem) => Promise<void> | void; after?: (r: SentItem) => void } = {},
): SentItem[] {
  const sent: SentItem[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Item?: { seq?: { N?: string } } };
      const n = input.Item?.seq?.N;
      const r: SentItem = { command: context.commandName ?? '?', at: Date.now(), ...(n !== undefined ? { seq: Number(n) } : {}) };
      sent.push(r);
      await hooks.before?.(r);
      const out = await next(args);
      hooks.after?.(r);
      return out;
    },
    { step: 'build', name: 'testRecorder' },
  );
  return sent;
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('DynamoDbAuditSink on dynalite + s3rver', { timeout: 30_000 }, () => {
  let db: LocalDynamoDb;
  let s3: LocalS3;
  let store: AwsAuditStore;
  const sinks: DynamoDbAuditSink[] = [];
  const extraClients: { destroy(): void }[] = [];

  before(async () => {
    [db, s3] = await Promise.all([startDynalite(), startS3rver({ buckets: [LOCATION.recordingsBucket] })]);
    await createAuditTables(db);
    store = { ...LOCATION, dynamodb: db.client, s3: s3.client };
  });
  after(async () => {
    for (const sink of sinks) await sink.close().catch(() => undefined);
    for (const c of extraClients) c.destroy();
    await Promise.all([db?.close(), s3?.close()]);
  });

  const ed25519 = () => new Ed25519AuditSealSigner(local.key);
  function newSink(extra: Partial<DynamoDbAuditSinkOptions> = {}): DynamoDbAuditSink {
    const sink = new DynamoDbAuditSink({ ...LOCATION, dynamodb: db.client, s3: s3.client, signer: ed25519(), readOnlyWindowMs: 50, ...extra });
    sinks.push(sink);
    return sink;
  }
  const rawEvent = async (sessionId: string, seq: number) =>
    (await db.client.send(new GetItemCommand({ TableName: LOCATION.eventsTable, Key: { sessionId: { S: sessionId }, seq: { N: String(seq) } }, ConsistentRead: true }))).Item;
  const rawSession = async (sessionId: string) =>
    (await db.client.send(new GetItemCommand({ TableName: LOCATION.sessionsTable, Key: { sessionId: { S: sessionId } }, ConsistentRead: true }))).Item;
  const objectText = async (key: string) =>
    (await (await s3.client.send(new GetObjectCommand({ Bucket: LOCATION.recordingsBucket, Key: key }))).Body!.transformToString());
  const keysUnder = async (prefix: string) =>
    ((await s3.client.send(new ListObjectsV2Command({ Bucket: LOCATION.recordingsBucket, Prefix: prefix }))).Contents ?? []).map((o) => o.Key!).sort();

  test('a session lands in order, chains, and its seal verifies with the KMS public key', async () => {
    const kms = new FakeKms();
    const signer = await KmsAuditSealSigner.create(kms, kms.alias);
    assert.equal(signer.keyId, kms.arn, 'the seal names the key by its ARN, even when configured by alias');
    const sink = newSink({ signer, retentionSeconds: 90 * 24 * 3600 });
    const id = newSessionId();
    const t0 = Math.floor(Date.now() / 1000);

    const s = sink.openSession(id, START);
    await s.ready;
    await s.append({ type: 'auth.success', principal: ALICE, method: 'oidc-jwt' }, { durable: true });
    await s.append(stmt(1), { durable: false });
    await s.append(stmtEnd(1), { durable: false });
    await s.append(stmt(2, "INSERT INTO t VALUES ('é\n\u001f')"), { durable: true });
    await s.end(SESSION_END);

    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(
      trail.events.map((e) => e.type),
      ['session.start', 'auth.success', 'statement', 'statement.end', 'statement', 'session.end', 'seal'],
    );
    assert.deepEqual(trail.events.map((e) => e.seq), [0, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual(trail.payloadErrors, []);
    const publicKey = await loadKmsSealPublicKey(kms, signer.keyId);
    assert.deepEqual(verifyChainLines(trail.lines, publicKey), { ok: true, count: 7, sealed: true, keyId: kms.arn });
    const seal = trail.events.at(-1)!;
    assert.equal(seal.type, 'seal');
    if (seal.type !== 'seal') return;
    assert.equal(verifySeal(seal, publicKey), true);
    assert.equal(verifySeal({ ...seal, eventCount: 5 }, publicKey), false, 'the signature binds the event count');
    assert.equal(verifySeal(seal, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey), false);
    assert.equal(kms.signCalls, 1);

    const listed = (await listAwsSessions(store)).find((x) => x.sessionId === id);
    assert.deepEqual(listed && { ...listed, startTime: typeof listed.startTime, endTime: typeof listed.endTime }, {
      sessionId: id,
      file: `dynamodb:${LOCATION.eventsTable}/${id}`,
      startTime: 'string',
      endTime: 'string',
      principal: ALICE,
      target: START.target,
      source: START.source,
      protocol: 'postgres',
      startupUser: START.startupUser,
      statements: SESSION_END.statements,
      reason: SESSION_END.reason,
      durationMs: SESSION_END.durationMs,
      eventCount: 7,
      lastHash: seal.hash,
    });
    const item = await rawSession(id);
    assert.equal(item?.status?.S, 'ended');
    assert.equal(item?.seal?.M?.keyId?.S, kms.arn);
    const expiresAt = Number(item?.expiresAt?.N);
    assert.ok(Math.abs(expiresAt - (t0 + 90 * 24 * 3600)) <= 2, `TTL ${expiresAt} is start + retention`);
    assert.equal(Number((await rawEvent(id, 3))?.expiresAt?.N), expiresAt, 'event items expire with their session');

    await assert.rejects(s.append(stmt(3), { durable: false }), AuditWriteError, 'append after end');
    await assert.rejects(s.end(SESSION_END), AuditWriteError, 'second end');
    await sink.close();
  });

  test('a seal made with the local Ed25519 key verifies with its public key', async () => {
    const sink = newSink();
    const id = newSessionId();
    const s = sink.openSession(id, START);
    await s.append(stmt(1), { durable: false });
    await s.end(SESSION_END);
    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(verifyChainLines(trail.lines, local.key.publicKey), { ok: true, count: 4, sealed: true, keyId: local.key.keyId });
    await sink.close();
  });

  test('a durable append resolves only after its item is stored', async () => {
    const client = db.newClient();
    const stored = new Set<number>();
    // Every PutItem waits 60 ms before it is sent, so an early resolve would be seen.
    instrumentDynamo(client, {
      before: (r) => (r.command === 'PutItemCommand' ? sleep(60).then(() => undefined) : undefined),
      after: (r) => r.seq !== undefined && stored.add(r.seq),
    });
    const sink = newSink({ dynamodb: client, readOnlyWindowMs: 10_000 });
    const id = newSessionId();
    const s = sink.openSession(id, START);
    await s.ready;
    assert.ok(stored.has(0));
    for (let seq = 1; seq <= 4; seq++) {
      let resolved = false;
      const p = s.append(stmt(seq), { durable: true }).then(() => (resolved = true));
      await sleep(30);
      assert.equal(resolved, false, `append ${seq} still waits for its PutItem`);
      await p;
      assert.ok(stored.has(seq), `item ${seq} answered before the append resolved`);
      assert.equal((await rawEvent(id, seq))?.hash?.S, JSON.parse((await rawEvent(id, seq))!.event!.S!).hash);
    }
    await s.end(SESSION_END);
    await sink.close();
  });

  test('non-durable appends within the window are written together in one round', async () => {
    const client = db.newClient();
    const sent = instrumentDynamo(client);
    const windowMs = 200;
    const sink = newSink({ dynamodb: client, readOnlyWindowMs: windowMs });
    const id = newSessionId();
    const s = sink.openSession(id, START);
    await s.ready;
    const before = sink.stats().commits;
    const t0 = Date.now();
    for (let i = 1; i <= 10; i++) await s.append(stmt(i), { durable: false });
    assert.ok(Date.now() - t0 < windowMs / 2, 'non-durable appends do not wait for a write');
    await sleep(windowMs / 4);
    const puts = () => sent.filter((r) => r.command === 'PutItemCommand' && r.seq !== undefined && r.seq >= 1);
    assert.equal(puts().length, 0, 'nothing is written before the window closes');
    await waitFor(() => puts().length === 10, 'the window to close');
    const times = puts().map((r) => r.at);
    console.log(`window ${windowMs} ms: 10 events written ${Math.min(...times) - t0} ms after the first append, spread over ${Math.max(...times) - Math.min(...times)} ms`);
    await sink.flush();
    assert.equal(sink.stats().commits - before, 1, 'one round');
    assert.ok(Math.min(...times) - t0 >= windowMs - 20);

    // A durable append carries the non-durable ones before it, in the same round.
    for (let i = 11; i <= 13; i++) await s.append(stmt(i), { durable: false });
    await s.append(stmt(14), { durable: true });
    assert.equal(sink.stats().commits - before, 2);
    for (let seq = 11; seq <= 14; seq++) assert.ok(await rawEvent(id, seq), `item ${seq}`);
    await s.end(SESSION_END);
    await sink.close();
  });

  test('a large event goes to S3 behind a pointer, still verifies, and an edited payload is caught', async () => {
    const sink = newSink();
    const id = newSessionId();
    const s = sink.openSession(id, START);
    const big = 'x'.repeat(150_000);
    await s.append(stmt(1, `SELECT '${big}'`), { durable: true });
    await s.append(stmt(2), { durable: true });
    await s.end(SESSION_END);

    const item = await rawEvent(id, 1);
    assert.equal(item?.event, undefined, 'no inline copy');
    const ref = item?.eventRef?.M;
    assert.equal(ref?.bucket?.S, LOCATION.recordingsBucket);
    assert.equal(ref?.key?.S, `events/${id}/1.json`);
    const body = await objectText(`events/${id}/1.json`);
    assert.equal(createHash('sha256').update(body).digest('hex'), ref?.sha256?.S);
    assert.equal(Number(ref?.bytes?.N), Buffer.byteLength(body));
    assert.ok((await rawEvent(id, 2))?.event?.S, 'small events stay inline');

    const trail = await readAwsSessionEvents(store, id);
    assert.equal(trail.lines[1], body);
    assert.deepEqual(verifyChainLines(trail.lines, local.key.publicKey), { ok: true, count: 5, sealed: true, keyId: local.key.keyId });
    const recording = await readAwsRecording(store, id);
    assert.deepEqual(recording.lines, trail.lines, 'the recording holds the large event in full');

    // Someone with write access around Object Lock edits the payload: the pointer and the chain both tell.
    await s3.client.send(new PutObjectCommand({ Bucket: LOCATION.recordingsBucket, Key: `events/${id}/1.json`, Body: body.replace("'x", "'y") }));
    const edited = await readAwsSessionEvents(store, id);
    assert.deepEqual(edited.payloadErrors, [{ seq: 1, key: `events/${id}/1.json`, error: 'sha256 does not match the pointer' }]);
    const v = verifyChainLines(edited.lines, local.key.publicKey);
    assert.equal(v.ok, false);
    assert.equal(!v.ok && v.brokenAt, 1);
    await sink.close();
  });

  test('the recording is written in chunks while the session runs and sealed at its end', async () => {
    const chunkMs = 250;
    const sink = newSink({ recording: { chunkEvents: 4, chunkMs } });
    const id = newSessionId();
    const s = sink.openSession(id, START);
    for (let i = 1; i <= 7; i++) await s.append(stmt(i), { durable: true });
    await sink.flush();
    const prefix = (await readAwsRecording(store, id)).prefix;
    const day = new Date().toISOString().slice(0, 10).replaceAll('-', '/');
    assert.equal(prefix, `recordings/${day}/${id}/`);
    assert.deepEqual(await keysUnder(prefix), [`${prefix}chunk-000001.jsonl`, `${prefix}chunk-000002.jsonl`], 'two full chunks, no seal yet');

    // A chunk is also cut chunkMs after its first line.
    await s.append(stmt(8), { durable: false });
    const t0 = Date.now();
    await waitFor(async () => (await keysUnder(prefix)).length === 3, 'the time-cut chunk');
    console.log(`time-cut chunk appeared ${Date.now() - t0} ms after its line was appended (window 50 ms + chunkMs ${chunkMs} ms)`);
    const third = await objectText(`${prefix}chunk-000003.jsonl`);
    assert.equal(third.split('\n').filter(Boolean).length, 1);

    await s.end(SESSION_END);
    const rec = await readAwsRecording(store, id);
    assert.deepEqual(rec.chunks.map((c) => [c.key.slice(prefix.length), c.lines.length]), [
      ['chunk-000001.jsonl', 4],
      ['chunk-000002.jsonl', 4],
      ['chunk-000003.jsonl', 1],
      ['chunk-000004.jsonl', 2],
    ]);
    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(rec.lines, trail.lines, 'the recording is the trail, line for line');
    assert.deepEqual(verifyChainLines(rec.lines, local.key.publicKey), { ok: true, count: 11, sealed: true, keyId: local.key.keyId });
    const seal = rec.seal!;
    const sealEvent = trail.events.at(-1)!;
    assert.equal(seal.eventCount, 10);
    assert.equal(seal.events, 11);
    assert.equal(seal.sealHash, sealEvent.hash);
    assert.equal(seal.keyId, local.key.keyId);
    assert.equal(verifySeal(seal, local.key.publicKey), true);
    for (const c of seal.chunks) {
      assert.equal(createHash('sha256').update(await objectText(c.key)).digest('hex'), c.sha256, `${c.key} matches seal.json`);
    }
    assert.deepEqual(seal.chunks.map((c) => [c.firstSeq, c.lastSeq]), [[0, 3], [4, 7], [8, 8], [9, 10]]);
    await sink.close();
  });

  test('throttled writes and lost answers are retried without duplicates or false conflicts', async () => {
    const client = db.newClient();
    let throttle = 2;
    let loseAnswerOf: number | null = 2;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const seq = (args.input as { Item?: { seq?: { N?: string } } }).Item?.seq?.N;
        if (context.commandName === 'PutItemCommand' && seq === '1' && throttle > 0) {
          throttle--;
          throw Object.assign(new Error('Rate of requests exceeds the allowed throughput'), {
            name: 'ProvisionedThroughputExceededException',
            $metadata: { httpStatusCode: 400 },
          });
        }
        const out = await next(args);
        if (context.commandName === 'PutItemCommand' && seq !== undefined && Number(seq) === loseAnswerOf) {
          loseAnswerOf = null;
          // The write is stored, but its answer never arrives.
          throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        }
        return out;
      },
      { step: 'build', name: 'testFaults' },
    );
    const sink = newSink({ dynamodb: client, retry: { baseDelayMs: 5, maxDelayMs: 20 } });
    const id = newSessionId();
    const s = sink.openSession(id, START);
    await s.append(stmt(1), { durable: true });
    await s.append(stmt(2), { durable: true });
    await s.end(SESSION_END);
    assert.equal(sink.stats().retries, 3);
    assert.equal(sink.stats().failed, false);
    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(verifyChainLines(trail.lines, local.key.publicKey), { ok: true, count: 5, sealed: true, keyId: local.key.keyId });
    await sink.close();
  });

  test('a second writer of the same session is refused by the condition and its sink fails closed', async () => {
    const first = newSink();
    const second = newSink();
    const id = newSessionId();
    const a = first.openSession(id, START);
    await a.append(stmt(1), { durable: true });
    const before = await readAwsSessionEvents(store, id);

    const b = second.openSession(id, START);
    await assert.rejects(b.ready, (err: Error) => err instanceof AuditWriteError && /refusing to overwrite/.test(err.message));
    assert.equal(second.stats().failed, true);
    await assert.rejects(b.append(stmt(1), { durable: false }), AuditWriteError);
    assert.throws(() => second.openSession(newSessionId(), START), AuditWriteError);
    await assert.rejects(second.flush(), AuditWriteError);

    assert.deepEqual((await readAwsSessionEvents(store, id)).lines, before.lines, 'the first writer\'s items are untouched');
    assert.equal((await rawSession(id))?.firstHash?.S, before.events[0]!.hash);
    await a.end(SESSION_END);
    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(verifyChainLines(trail.lines, local.key.publicKey), { ok: true, count: 4, sealed: true, keyId: local.key.keyId });
    await first.close();
  });

  test('every S3 put is create-only, and an existing key fails the sink closed', async () => {
    const headers: Record<string, string>[] = [];
    const seen = s3.newClient();
    const probe = s3.newClient();
    seen.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'PutObjectCommand') {
          const request = args.request as { headers: Record<string, string> };
          headers.push({ ...request.headers });
          // s3rver ignores If-None-Match on PUT: answer as S3 does when the key exists.
          const input = args.input as { Bucket: string; Key: string };
          const exists = await probe.send(new HeadObjectCommand({ Bucket: input.Bucket, Key: input.Key })).then(
            () => true,
            () => false,
          );
          if (request.headers['if-none-match'] === '*' && exists) {
            throw Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), {
              name: 'PreconditionFailed',
              $metadata: { httpStatusCode: 412 },
            });
          }
        }
        return next(args);
      },
      { step: 'finalizeRequest', name: 'testConditionalPut' },
    );
    const sink = newSink({ s3: seen, recording: { chunkEvents: 2 }, largeEventBytes: 1024 });
    const ok = sink.openSession(newSessionId(), START);
    await ok.append(stmt(1, 'y'.repeat(2000)), { durable: true });
    await ok.end(SESSION_END);
    assert.ok(headers.length >= 4, `${headers.length} puts`);
    for (const h of headers) {
      assert.equal(h['if-none-match'], '*');
      assert.ok(h['x-amz-checksum-sha256'], 'S3 checks the upload against its SHA-256');
    }

    // Someone already wrote the key of the next session's first chunk.
    const id = newSessionId();
    const day = new Date().toISOString().slice(0, 10).replaceAll('-', '/');
    const key = `recordings/${day}/${id}/chunk-000001.jsonl`;
    await s3.client.send(new PutObjectCommand({ Bucket: LOCATION.recordingsBucket, Key: key, Body: 'not ours\n' }));
    const s = sink.openSession(id, START);
    await s.append(stmt(1), { durable: true }); // stored in DynamoDB; the chunk put is refused after
    await waitFor(() => sink.stats().failed, 'the sink to fail');
    await assert.rejects(s.append(stmt(2), { durable: true }), (err: Error) => err instanceof AuditWriteError && /refusing to overwrite/.test(err.message));
    assert.equal(await objectText(key), 'not ours\n', 'the existing object is untouched');
  });

  test('a stopped DynamoDB makes appends reject within the time limits (fail closed)', async () => {
    const db2 = await startDynalite();
    await createAuditTables(db2);
    // A client of our own: the helper's close() destroys its clients.
    const client = new DynamoDBClient({ endpoint: db2.endpoint, region: TEST_REGION, credentials: TEST_CREDENTIALS, maxAttempts: 1 });
    extraClients.push(client);
    const sink = newSink({ dynamodb: client, retry: { maxAttempts: 3, requestTimeoutMs: 500, baseDelayMs: 10, maxDelayMs: 50 } });
    const s = sink.openSession(newSessionId(), START);
    await s.append(stmt(1), { durable: true });
    await s.append(stmt(2), { durable: false });

    await db2.close();
    const t0 = Date.now();
    await assert.rejects(s.append(stmt(3), { durable: true }), AuditWriteError);
    const elapsed = Date.now() - t0;
    console.log(`stopped DynamoDB: durable append rejected after ${elapsed} ms`);
    assert.ok(elapsed < 3000, `rejected in ${elapsed} ms`);
    await assert.rejects(s.append(stmt(4), { durable: false }), AuditWriteError);
    assert.throws(() => sink.openSession(newSessionId(), START), AuditWriteError);
    await assert.rejects(sink.flush(), AuditWriteError);
    await assert.rejects(sink.close(), AuditWriteError);
  });

  test('a DynamoDB that stops answering makes appends reject after the request time limit', async () => {
    const proxy = await startSilencingProxy(db.endpoint);
    const client = new DynamoDBClient({ endpoint: proxy.endpoint, region: TEST_REGION, credentials: TEST_CREDENTIALS, maxAttempts: 1 });
    extraClients.push(client);
    const requestTimeoutMs = 300;
    const sink = newSink({ dynamodb: client, retry: { maxAttempts: 2, requestTimeoutMs, baseDelayMs: 10, maxDelayMs: 20 } });
    const s = sink.openSession(newSessionId(), START);
    await s.append(stmt(1), { durable: true });

    proxy.silence();
    const t0 = Date.now();
    await assert.rejects(s.append(stmt(2), { durable: true }), (err: Error) => err instanceof AuditWriteError && /no answer within 300 ms/.test(err.message));
    const elapsed = Date.now() - t0;
    console.log(`silent DynamoDB: durable append rejected after ${elapsed} ms (2 attempts x ${requestTimeoutMs} ms)`);
    assert.ok(elapsed >= 2 * requestTimeoutMs - 20 && elapsed < 2000, `rejected in ${elapsed} ms`);
    await assert.rejects(s.append(stmt(3), { durable: false }), AuditWriteError);
    await assert.rejects(sink.close(), AuditWriteError);
    proxy.close();
  });

  test('concurrent sessions keep separate chains and share rounds', async () => {
    const sink = newSink({ readOnlyWindowMs: 20 });
    const sessions: SessionAudit[] = Array.from({ length: 8 }, () => sink.openSession(newSessionId(), START));
    const perSession = 15;
    await Promise.all(
      sessions.map(async (s, k) => {
        await s.ready;
        for (let i = 1; i <= perSession; i++) {
          await s.append(i % 2 === 0 ? stmtEnd(i - 1) : stmt(i, `SELECT ${k}, ${i}`), { durable: (i + k) % 3 === 0 });
        }
        await s.end(SESSION_END);
      }),
    );
    const total = sessions.length * (perSession + 3);
    const { commits } = sink.stats();
    console.log(`${sessions.length} concurrent sessions: ${total} events in ${commits} rounds`);
    assert.ok(commits < total / 2, `${commits} rounds for ${total} events`);
    for (const [k, s] of sessions.entries()) {
      const trail = await readAwsSessionEvents(store, s.sessionId);
      assert.ok(trail.events.every((e) => e.sessionId === s.sessionId));
      assert.ok(trail.events.filter((e) => e.type === 'statement').every((e) => e.type === 'statement' && e.text.startsWith(`SELECT ${k}, `)));
      assert.deepEqual(verifyChainLines(trail.lines, local.key.publicKey), { ok: true, count: perSession + 3, sealed: true, keyId: local.key.keyId });
    }
    await sink.close();
  });

  test('close() writes out everything buffered, and the open session\'s recording, unsealed', async () => {
    const sink = newSink({ readOnlyWindowMs: 10_000 });
    const id = newSessionId();
    const s = sink.openSession(id, START, { durable: false });
    await s.ready;
    for (let i = 1; i <= 5; i++) await s.append(stmt(i), { durable: false });
    const count = async () =>
      (await db.client.send(new QueryCommand({ TableName: LOCATION.eventsTable, KeyConditionExpression: 'sessionId = :id', ExpressionAttributeValues: { ':id': { S: id } }, Select: 'COUNT' }))).Count;
    assert.equal(await count(), 0, 'still buffered');
    await sink.close();
    assert.equal(await count(), 6);
    const trail = await readAwsSessionEvents(store, id);
    assert.deepEqual(verifyChainLines(trail.lines), { ok: true, count: 6, sealed: false });
    const rec = await readAwsRecording(store, id);
    assert.deepEqual(rec.lines, trail.lines);
    assert.equal(rec.seal, null);
    assert.equal((await rawSession(id))?.status?.S, 'open');
    await assert.rejects(s.append(stmt(6), { durable: false }), /closed/);
    assert.throws(() => sink.openSession(newSessionId(), START), AuditWriteError);
  });
});

/**
 * A TCP proxy to `target` that forwards until silence(): from then on it accepts connections and
 * reads requests, but never answers (a hung endpoint, not a refused one).
 */
async function startSilencingProxy(target: string): Promise<{ endpoint: string; silence(): void; close(): void }> {
  const url = new URL(target);
  const sockets = new Set<Socket>();
  let silent = false;
  const track = (sock: Socket): Socket => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    return sock;
  };
  const server = createServer((client) => {
    track(client);
    const upstream = track(connect(Number(url.port), url.hostname));
    client.on('data', (d) => silent || upstream.write(d));
    upstream.on('data', (d) => silent || client.write(d));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => silent || client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    silence: () => {
      silent = true;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
