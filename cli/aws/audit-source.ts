/**
 * `warden audit --aws`: the trail of an AWS deployment (layout in adapters/aws/audit-aws-layout.ts),
 * read with adapters/aws/audit-aws-reader.ts and printed and verified by the same code as the local
 * trail (cli/commands/audit.ts).
 *
 * The sessions table is the index. `verify --all` also scans the events table for session ids (a
 * session whose sessions-table item was deleted still has its events), as the local verify lists the
 * session files beside the index. That Scan reads every event item's key: it is for audits.
 *
 * Beyond the chain, verify compares a session with its S3 recording: whoever may write the tables
 * could rewrite a chain and, with kms:Sign, its seal, but the recording is under Object Lock. A running
 * session's recording holds a prefix of its lines (it is written behind the tables); a sealed one holds
 * every line and seal.json, which must name the same seal and whose signature is checked with the KMS
 * public key (verifySeal).
 */
import { DynamoDBDocumentClient, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { isSessionId } from '../../core/audit/events.ts';
import type { AuditEventOf, SessionId } from '../../core/audit/events.ts';
import { listAwsSessions, readAwsRecording, readAwsSessionEvents } from '../../adapters/aws/audit-aws-reader.ts';
import type { AwsAuditStore, AwsRecording } from '../../adapters/aws/audit-aws-reader.ts';
import type { AwsAuditLocation } from '../../adapters/aws/audit-aws-layout.ts';
import { loadKmsSealPublicKey, verifySeal } from '../../adapters/aws/audit-seal-signer.ts';
import { AuditReadError } from '../../adapters/local/audit-trail-reader.ts';
import type { SessionSummary } from '../../adapters/local/audit-trail-reader.ts';
import type { AuditTrailSource, SealKey, SourceTrail, TrailBreak } from '../commands/audit-source.ts';
import { AwsCliClients } from './clients.ts';

export interface AwsTrailOptions extends AwsAuditLocation {
  /** The KMS key that signs seals (ARN, id or alias); without it seals are not checked. */
  readonly signingKeyId?: string;
  readonly clients?: AwsCliClients;
}

export function awsTrailSource(opts: AwsTrailOptions): AuditTrailSource {
  const clients = opts.clients ?? new AwsCliClients();
  const store: AwsAuditStore = {
    sessionsTable: opts.sessionsTable,
    eventsTable: opts.eventsTable,
    recordingsBucket: opts.recordingsBucket,
    dynamodb: clients.dynamodb,
    s3: clients.s3,
  };
  let summaries: Promise<SessionSummary[]> | undefined;
  const index = async (): Promise<SessionSummary[]> => [...(await (summaries ??= listAwsSessions(store)))];
  const indexedIds = async (): Promise<SessionId[]> => (await index()).map((s) => s.sessionId).sort();

  return {
    where: `DynamoDB table ${opts.sessionsTable}`,
    location: (trail) => trail.file,
    listSessions: index,
    knownSessionIds: indexedIds,
    async allSessionIds() {
      const ids = new Set<SessionId>(await indexedIds());
      for (const id of await eventSessionIds(store)) ids.add(id);
      return [...ids].sort();
    },
    readSession: (sessionId) => readAwsSessionEvents(store, sessionId),
    missingTrail: (sessionId) => `no events of session ${sessionId} in table ${opts.eventsTable}`,
    async sealKey() {
      if (!opts.signingKeyId) return { key: null, missing: 'no KMS signing key given (--signing-key or WARDEN_AUDIT_SIGNING_KEY_ARN)' };
      return { key: { publicKey: await loadKmsSealPublicKey(clients.kms, opts.signingKeyId), keyId: opts.signingKeyId } };
    },
    async crossCheck(trail, chain, key) {
      let recording: AwsRecording;
      try {
        recording = await readAwsRecording(store, trail.sessionId);
      } catch (err) {
        if (err instanceof AuditReadError && err.notFound) return { seq: 0, reason: `${err.message} in table ${opts.sessionsTable}` };
        throw err;
      }
      return compareRecording(trail, chain, recording, key);
    },
    close: () => clients.destroy(),
  };
}

/** The first place where the recording and the events table disagree, or null. */
function compareRecording(trail: SourceTrail, chain: { count: number; sealed: boolean }, recording: AwsRecording, key: SealKey | null): TrailBreak | null {
  const where = (seq: number): string => {
    let first = 0;
    for (const c of recording.chunks) {
      if (seq < first + c.lines.length) return `s3://${recording.bucket}/${c.key}`;
      first += c.lines.length;
    }
    return `s3://${recording.bucket}/${recording.prefix}`;
  };
  const lines = trail.lines;
  const shared = Math.min(lines.length, recording.lines.length);
  for (let seq = 0; seq < shared; seq++) {
    if (recording.lines[seq] !== lines[seq]) return { seq, reason: `the event differs from its recording (${where(seq)})` };
  }
  if (recording.lines.length > lines.length) {
    return { seq: lines.length, reason: `the recording holds ${recording.lines.length} events, the events table ${lines.length} (${where(lines.length)})` };
  }
  if (!chain.sealed) return null;
  const sealAt = chain.count - 1;
  if (recording.lines.length < lines.length || !recording.seal) {
    return { seq: recording.lines.length, reason: `the recording ends after ${recording.lines.length} of ${lines.length} events${recording.seal ? '' : ' without seal.json'} (s3://${recording.bucket}/${recording.prefix})` };
  }
  const seal = trail.events[sealAt] as AuditEventOf<'seal'>;
  const doc = recording.seal;
  const differing = (
    [
      ['sessionId', doc.sessionId === trail.sessionId],
      ['eventCount', doc.eventCount === seal.eventCount],
      ['lastHash', doc.lastHash === seal.lastHash],
      ['signature', doc.signature === seal.signature],
      ['keyId', doc.keyId === seal.keyId],
      ['sealHash', doc.sealHash === seal.hash],
      ['events', doc.events === lines.length],
    ] as const
  )
    .filter(([, same]) => !same)
    .map(([name]) => name);
  if (differing.length > 0) return { seq: sealAt, reason: `the recording's seal.json differs from the seal event (${differing.join(', ')})` };
  if (key && !verifySeal(doc, key.publicKey)) return { seq: sealAt, reason: "invalid signature in the recording's seal.json" };
  return null;
}

/** Session ids of the events table (a Scan projecting the partition key). */
async function eventSessionIds(store: AwsAuditStore): Promise<SessionId[]> {
  const doc = DynamoDBDocumentClient.from(store.dynamodb);
  const ids = new Set<SessionId>();
  let startKey: Record<string, unknown> | undefined;
  try {
    do {
      const page = await doc.send(
        new ScanCommand({ TableName: store.eventsTable, ProjectionExpression: 'sessionId', ConsistentRead: true, ExclusiveStartKey: startKey }),
      );
      for (const item of page.Items ?? []) if (isSessionId(item.sessionId)) ids.add(item.sessionId);
      startKey = page.LastEvaluatedKey;
    } while (startKey);
  } catch (err) {
    throw new AuditReadError(`cannot read table ${store.eventsTable}: ${(err as Error).message}`, { cause: err });
  }
  return [...ids];
}
