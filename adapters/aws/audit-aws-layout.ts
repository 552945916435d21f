/**
 * Where the AWS audit trail lives: shared by the sink (dynamodb-audit-sink.ts), the recording writer
 * (audit-recording.ts) and the readers (audit-aws-reader.ts).
 *
 * Events table: partition key `sessionId` (S), sort key `seq` (N); one item per chained event.
 * | attribute | holds |
 * |---|---|
 * | `sessionId`, `seq` | the event's |
 * | `event` (S) | the event exactly as hashed: its line (canonical JSON with `hash` last, hash-chain.ts) |
 * | `eventRef` (M) | instead of `event` for a line over the large-event threshold: `{ bucket, key, sha256, bytes }` of the S3 object holding the line |
 * | `type`, `time`, `hash` (S) | copies from the event, for queries and filters; never used to verify |
 * | `expiresAt` (N) | DynamoDB TTL (epoch seconds): session start + retention |
 *
 * The event is one string attribute rather than a map of attributes because a map does not read back
 * byte for byte: DynamoDB numbers hold 38 digits within 1E-130..9.9E125 (a JavaScript number reaches
 * 1.8E308), maps nest at most 32 levels, and the marshaller turns values into sets, drops or rejects
 * undefined and empty ones. A string is the line that was hashed, read back unchanged, so the readers
 * hand core's verifier (verifyChainLines, which also checks the normal form) what the sink hashed.
 *
 * Sessions table: partition key `sessionId` (S); one item per session, put at start (conditional on
 * its absence) and updated once at end (conditional on `endedAt` being absent).
 * | attribute | holds |
 * |---|---|
 * | `status` (S) | `open`, then `ended` |
 * | `startedAt`, `protocol`, `listener`, `source` (M), `tls`, `target`, `startupUser` | session.start's |
 * | `firstHash` (S) | hash of session.start (tells a retried put from another writer's) |
 * | `recording` (M) | `{ bucket, prefix }` of the session's recording |
 * | `endedAt`, `reason`, `statements`, `durationMs`, `bytesFromClient`, `bytesToClient` | at end |
 * | `principal` (M) | the authenticated principal (auth.success), at end |
 * | `eventCount` (N), `lastHash` (S) | events including the seal, and the seal's hash, at end |
 * | `seal` (M) | the seal's `{ eventCount, lastHash, signature, keyId, hash }`, at end |
 * | `expiresAt` (N) | DynamoDB TTL (epoch seconds) |
 *
 * Bucket (recordings; Object Lock is configured on it by the stack):
 *   events/<sessionId>/<seq>.json                                 a large event's line
 *   recordings/<yyyy>/<mm>/<dd>/<sessionId>/chunk-000001.jsonl    the session's lines, in seq order
 *   recordings/<yyyy>/<mm>/<dd>/<sessionId>/seal.json             written last (audit-recording.ts)
 * The date is the session's start (UTC). Every key is written once: never overwritten, never deleted.
 */
import type { AuditEventType, Principal, SessionEndFields, SessionId, SessionStartFields } from '../../core/audit/events.ts';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';

/** The tables and bucket of the audit trail. */
export interface AwsAuditLocation {
  readonly sessionsTable: string;
  readonly eventsTable: string;
  readonly recordingsBucket: string;
}

/** Pointer to a large event's line in S3 (the item's `eventRef`). */
export interface AuditEventRef {
  bucket: string;
  key: string;
  /** Lowercase hex SHA-256 of the object's bytes (the UTF-8 line). */
  sha256: string;
  bytes: number;
}

export const SESSION_STATUS = { open: 'open', ended: 'ended' } as const;
export type SessionStatus = (typeof SESSION_STATUS)[keyof typeof SESSION_STATUS];

/** An events-table item: the line inline, or a pointer to it in S3. */
export function eventItem(
  sessionId: SessionId,
  ev: { seq: number; type: AuditEventType; time: string; hash: string },
  stored: { event: string } | { eventRef: AuditEventRef },
  expiresAt: number,
): Record<string, unknown> {
  return { sessionId, seq: ev.seq, type: ev.type, time: ev.time, hash: ev.hash, ...stored, expiresAt };
}

/** The sessions-table item put at session start. */
export function sessionStartItem(r: {
  sessionId: SessionId;
  startedAt: string;
  start: SessionStartFields;
  firstHash: string;
  recording: { bucket: string; prefix: string };
  expiresAt: number;
}): Record<string, unknown> {
  const { start } = r;
  return {
    sessionId: r.sessionId,
    status: SESSION_STATUS.open,
    startedAt: r.startedAt,
    protocol: start.protocol,
    listener: start.listener,
    source: start.source,
    tls: start.tls,
    target: start.target,
    startupUser: start.startupUser,
    firstHash: r.firstHash,
    recording: r.recording,
    expiresAt: r.expiresAt,
  };
}

/** What a session's end sets on its sessions-table item (once: `endedAt` must be absent). */
export interface SessionEndRecord {
  fields: SessionEndFields;
  principal?: Principal;
  /** The seal event's fields, its hash and time. */
  seal: { eventCount: number; lastHash: string; signature: string; keyId: string; hash: string; time: string };
}

export function sessionEndAttributes(r: SessionEndRecord): Record<string, unknown> {
  const { fields, seal } = r;
  return {
    status: SESSION_STATUS.ended,
    endedAt: seal.time,
    reason: fields.reason,
    statements: fields.statements,
    durationMs: fields.durationMs,
    bytesFromClient: fields.bytesFromClient,
    bytesToClient: fields.bytesToClient,
    principal: r.principal,
    eventCount: seal.eventCount + 1,
    lastHash: seal.hash,
    seal: { eventCount: seal.eventCount, lastHash: seal.lastHash, signature: seal.signature, keyId: seal.keyId, hash: seal.hash },
  };
}

export function largeEventKey(sessionId: SessionId, seq: number): string {
  return `events/${sessionId}/${seq}.json`;
}

/** `recordings/<yyyy>/<mm>/<dd>/<sessionId>/` for a session started at `startedAt`. */
export function recordingPrefix(sessionId: SessionId, startedAt: Date): string {
  const iso = startedAt.toISOString();
  return `recordings/${iso.slice(0, 4)}/${iso.slice(5, 7)}/${iso.slice(8, 10)}/${sessionId}/`;
}

/** Chunks count from 1; six digits keep them in order when listed (beyond a million they grow a digit). */
export function recordingChunkKey(prefix: string, chunk: number): string {
  return `${prefix}chunk-${String(chunk).padStart(6, '0')}.jsonl`;
}

export function recordingSealKey(prefix: string): string {
  return `${prefix}seal.json`;
}

export class AwsAuditEnvironmentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AwsAuditEnvironmentError';
  }
}

/** The audit location and seal key named by the stack's environment (core/config/aws-environment.ts). */
export function awsAuditLocationFromEnvironment(env: NodeJS.ProcessEnv = process.env): AwsAuditLocation & { signingKeyArn: string } {
  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw new AwsAuditEnvironmentError(`environment variable ${name} is not set`);
    return v;
  };
  return {
    sessionsTable: need(AwsEnvironment.auditSessionsTable),
    eventsTable: need(AwsEnvironment.auditEventsTable),
    recordingsBucket: need(AwsEnvironment.recordingsBucket),
    signingKeyArn: need(AwsEnvironment.auditSigningKeyArn),
  };
}
