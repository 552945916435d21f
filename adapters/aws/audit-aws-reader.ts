/**
 * Reading the AWS audit trail back, in the shapes of the local readers
 * (adapters/local/audit-trail-reader.ts), so `verifyChainLines` checks it the same way:
 * readAwsSessionEvents (one session's lines from the events table, large events fetched from S3),
 * listAwsSessions (the sessions table) and readAwsRecording (a session's S3 recording and seal.json).
 *
 * Reads are strongly consistent. A large event whose object is missing becomes an empty line (the
 * verifier breaks the chain there); one whose bytes do not match the pointer's SHA-256 is returned as
 * stored (the verifier reports the edit); both are listed in `payloadErrors`.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient, GetCommand, QueryCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { isSessionId } from '../../core/audit/events.ts';
import type { AuditEvent, Principal, SessionId } from '../../core/audit/events.ts';
import { AuditReadError } from '../local/audit-trail-reader.ts';
import type { SessionSummary, SessionTrail } from '../local/audit-trail-reader.ts';
import { recordingSealKey } from './audit-aws-layout.ts';
import type { AuditEventRef, AwsAuditLocation } from './audit-aws-layout.ts';
import { runLimited, sha256Hex } from './audit-aws-writer.ts';
import type { RecordingSealDocument } from './audit-recording.ts';

export interface AwsAuditStore extends AwsAuditLocation {
  readonly dynamodb: DynamoDBClient;
  readonly s3: S3Client;
}

export interface AwsSessionTrail extends SessionTrail {
  /** Large events whose object is missing or does not match its pointer. */
  payloadErrors: { seq: number; key: string; error: string }[];
}

export interface AwsRecording {
  sessionId: SessionId;
  bucket: string;
  prefix: string;
  /** The chunks in key (= write) order with their lines (without the newline). */
  chunks: { key: string; lines: string[] }[];
  /** Every chunk's lines, in order. */
  lines: string[];
  /** seal.json, or null while the session runs (or if it never ended). */
  seal: RecordingSealDocument | null;
}

/** Where a session's trail lives, for SessionTrail.file / SessionSummary.file. */
export const awsTrailAddress = (eventsTable: string, sessionId: SessionId): string => `dynamodb:${eventsTable}/${sessionId}`;

const docs = new WeakMap<DynamoDBClient, DynamoDBDocumentClient>();
function docOf(client: DynamoDBClient): DynamoDBDocumentClient {
  let d = docs.get(client);
  if (!d) docs.set(client, (d = DynamoDBDocumentClient.from(client)));
  return d;
}

const readError = (what: string, err: unknown): AuditReadError => new AuditReadError(`cannot read ${what}: ${(err as Error).message}`, { cause: err });

export async function readAwsSessionEvents(store: AwsAuditStore, sessionId: SessionId | string): Promise<AwsSessionTrail> {
  if (!isSessionId(sessionId)) throw new AuditReadError(`invalid session id ${JSON.stringify(sessionId)}`);
  const items: Record<string, unknown>[] = [];
  let startKey: Record<string, unknown> | undefined;
  try {
    do {
      const page = await docOf(store.dynamodb).send(
        new QueryCommand({
          TableName: store.eventsTable,
          KeyConditionExpression: 'sessionId = :id',
          ExpressionAttributeValues: { ':id': sessionId },
          ConsistentRead: true,
          ExclusiveStartKey: startKey,
        }),
      );
      items.push(...(page.Items ?? []));
      startKey = page.LastEvaluatedKey;
    } while (startKey);
  } catch (err) {
    throw readError(`the events of session ${sessionId}`, err);
  }
  if (items.length === 0) throw new AuditReadError(`no audit trail for session ${sessionId}`, { notFound: true });

  const lines: string[] = new Array<string>(items.length).fill('');
  const payloadErrors: AwsSessionTrail['payloadErrors'] = [];
  const fetches: (() => Promise<void>)[] = [];
  items.forEach((item, i) => {
    const seq = typeof item.seq === 'number' ? item.seq : i;
    if (typeof item.event === 'string') {
      lines[i] = item.event;
    } else if (isEventRef(item.eventRef)) {
      const ref = item.eventRef;
      fetches.push(async () => {
        const body = await getObjectOrNull(store.s3, ref.bucket, ref.key);
        if (body === null) {
          payloadErrors.push({ seq, key: ref.key, error: 'object missing' });
          return;
        }
        if (sha256Hex(body) !== ref.sha256) payloadErrors.push({ seq, key: ref.key, error: 'sha256 does not match the pointer' });
        lines[i] = body.toString('utf8');
      });
    } else {
      payloadErrors.push({ seq, key: '', error: 'item holds neither event nor eventRef' });
    }
  });
  try {
    await runLimited(fetches, 8);
  } catch (err) {
    throw readError(`large events of session ${sessionId}`, err);
  }
  payloadErrors.sort((a, b) => a.seq - b.seq);
  const events: AuditEvent[] = [];
  const badLines: { index: number; error: string }[] = [];
  lines.forEach((line, index) => {
    try {
      const v: unknown = JSON.parse(line);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
      events.push(v as AuditEvent);
    } catch (err) {
      badLines.push({ index, error: (err as Error).message });
    }
  });
  return { sessionId, file: awsTrailAddress(store.eventsTable, sessionId), lines, events, badLines, torn: null, fromJournal: 0, payloadErrors };
}

/** Every session of the sessions table (a Scan: for audits, not for a hot path), in start order. */
export async function listAwsSessions(store: AwsAuditStore): Promise<SessionSummary[]> {
  const out: SessionSummary[] = [];
  let startKey: Record<string, unknown> | undefined;
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
  try {
    do {
      const page = await docOf(store.dynamodb).send(new ScanCommand({ TableName: store.sessionsTable, ConsistentRead: true, ExclusiveStartKey: startKey }));
      for (const it of page.Items ?? []) {
        if (!isSessionId(it.sessionId)) continue;
        const sum: SessionSummary = { sessionId: it.sessionId, file: awsTrailAddress(store.eventsTable, it.sessionId) };
        const set = <K extends keyof SessionSummary>(k: K, v: SessionSummary[K] | undefined): void => {
          if (v !== undefined) sum[k] = v;
        };
        set('startTime', str(it.startedAt));
        set('endTime', str(it.endedAt));
        if (it.principal && typeof it.principal === 'object') sum.principal = it.principal as Principal;
        set('target', str(it.target));
        if (it.source && typeof it.source === 'object') sum.source = it.source as SessionSummary['source'];
        set('protocol', str(it.protocol));
        set('startupUser', str(it.startupUser));
        set('statements', num(it.statements));
        set('reason', str(it.reason));
        set('durationMs', num(it.durationMs));
        set('eventCount', num(it.eventCount));
        set('lastHash', str(it.lastHash));
        out.push(sum);
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey);
  } catch (err) {
    throw readError(`table ${store.sessionsTable}`, err);
  }
  return out.sort((a, b) => (a.startTime ?? a.endTime ?? '').localeCompare(b.startTime ?? b.endTime ?? ''));
}

/** A session's recording: its chunks in order and seal.json (null until the session is sealed). */
export async function readAwsRecording(store: AwsAuditStore, sessionId: SessionId | string): Promise<AwsRecording> {
  if (!isSessionId(sessionId)) throw new AuditReadError(`invalid session id ${JSON.stringify(sessionId)}`);
  let item: Record<string, unknown> | undefined;
  try {
    item = (await docOf(store.dynamodb).send(new GetCommand({ TableName: store.sessionsTable, Key: { sessionId }, ConsistentRead: true }))).Item;
  } catch (err) {
    throw readError(`session ${sessionId}`, err);
  }
  const rec = item?.recording as { bucket?: unknown; prefix?: unknown } | undefined;
  if (typeof rec?.bucket !== 'string' || typeof rec.prefix !== 'string') {
    throw new AuditReadError(`no recording for session ${sessionId}`, { notFound: true });
  }
  const { bucket, prefix } = rec as { bucket: string; prefix: string };
  const keys: string[] = [];
  let token: string | undefined;
  try {
    do {
      const page = await store.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const sealKey = recordingSealKey(prefix);
    const chunkKeys = keys.filter((k) => k !== sealKey && k.endsWith('.jsonl')).sort();
    const chunks: AwsRecording['chunks'] = [];
    for (const key of chunkKeys) {
      const body = (await getObjectOrNull(store.s3, bucket, key))?.toString('utf8') ?? '';
      chunks.push({ key, lines: body.split('\n').filter((l) => l.length > 0) });
    }
    const sealBody = keys.includes(sealKey) ? await getObjectOrNull(store.s3, bucket, sealKey) : null;
    const seal = sealBody === null ? null : (JSON.parse(sealBody.toString('utf8')) as RecordingSealDocument);
    return { sessionId, bucket, prefix, chunks, lines: chunks.flatMap((c) => c.lines), seal };
  } catch (err) {
    throw readError(`the recording of session ${sessionId}`, err);
  }
}

function isEventRef(v: unknown): v is AuditEventRef {
  const r = v as Partial<AuditEventRef> | null;
  return r !== null && typeof r === 'object' && typeof r.bucket === 'string' && typeof r.key === 'string' && typeof r.sha256 === 'string';
}

async function getObjectOrNull(s3: S3Client, bucket: string, key: string): Promise<Buffer | null> {
  try {
    const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from((await res.Body?.transformToByteArray()) ?? new Uint8Array());
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return null;
    throw err;
  }
}
