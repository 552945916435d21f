/** Options and statistics of DynamoDbAuditSink (dynamodb-audit-sink.ts), with their defaults. */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import type { AwsAuditLocation } from './audit-aws-layout.ts';
import type { AwsWritePolicy } from './audit-aws-writer.ts';
import type { RecordingOptions } from './audit-recording.ts';
import type { AuditSealSigner } from './audit-seal-signer.ts';

export interface DynamoDbAuditSinkOptions extends AwsAuditLocation {
  /** Give it `maxAttempts: 1`: the sink retries itself (audit-aws-writer.ts). */
  readonly dynamodb: DynamoDBClient;
  readonly s3: S3Client;
  readonly signer: AuditSealSigner;
  /** Max delay before non-durable events are written. @default 100 */
  readonly readOnlyWindowMs?: number;
  /** How long items are kept: their TTL `expiresAt` is session start + this. @default 365 days */
  readonly retentionSeconds?: number;
  /** Lines longer than this (UTF-8 bytes) go to S3 with a pointer in their item. At most 300 KiB. @default 100 KiB */
  readonly largeEventBytes?: number;
  /** When a recording chunk is cut. @default 1000 events, 8 MiB, 60 s */
  readonly recording?: Partial<RecordingOptions>;
  /** Bytes buffered, in flight or not yet recorded beyond which append rejects. @default 64 MiB */
  readonly maxPendingBytes?: number;
  /** Requests of one round in flight at once. @default 32 */
  readonly maxConcurrentWrites?: number;
  readonly retry?: Partial<AwsWritePolicy>;
  /** Time limit of one seal signature. @default 10 000 */
  readonly signTimeoutMs?: number;
}

export interface AwsAuditSinkStats {
  /** Rounds that wrote something. */
  commits: number;
  /** Items put or updated. */
  itemWrites: number;
  /** Objects put (large events, recording chunks, seals). */
  objectWrites: number;
  retries: number;
  events: number;
  pendingBytes: number;
  recordingBytes: number;
  recordingChunks: number;
  openSessions: number;
  failed: boolean;
}

export const DEFAULT_AWS_READ_ONLY_WINDOW_MS = 100;
export const DEFAULT_RETENTION_SECONDS = 365 * 24 * 3600;
export const DEFAULT_LARGE_EVENT_BYTES = 100 * 1024;
/** DynamoDB items hold at most 400 KB, attribute names included; the rest of an event item is small. */
export const MAX_LARGE_EVENT_BYTES = 300 * 1024;
export const DEFAULT_RECORDING: Readonly<RecordingOptions> = { chunkEvents: 1000, chunkBytes: 8 * 1024 * 1024, chunkMs: 60_000 };
export const DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024;
export const DEFAULT_SIGN_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_CONCURRENT_WRITES = 32;
