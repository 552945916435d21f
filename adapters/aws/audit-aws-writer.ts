/**
 * Single writes of the AWS audit trail, each create-only, bounded in time and retried.
 *
 * - Create-only: an item is put with `attribute_not_exists(<key>)`, an object with `If-None-Match: *`.
 *   A refused write is checked once against what is there: if it holds what we wrote (an earlier
 *   attempt landed but its answer was lost, or the SDK retried underneath us) it counts as written;
 *   anything else is an AuditConflictError, which is never retried: someone else wrote that key.
 * - Retried: throttling (ProvisionedThroughputExceeded, SlowDown, 429), 5xx, S3's 409
 *   ConditionalRequestConflict and network errors, with exponential backoff and full jitter, up to
 *   `maxAttempts`. Anything else (validation, access denied, missing table) fails at once.
 * - Bounded: every attempt is aborted after `requestTimeoutMs`, so an unreachable or silent endpoint
 *   costs at most about maxAttempts x (requestTimeoutMs + maxDelayMs), never a hang.
 *
 * Give the sink clients with `maxAttempts: 1`: these retries would otherwise multiply the SDK's own.
 *
 * @see https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html#Programming.Errors.RetryAndBackoff
 * @see https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
 */
import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';

export interface AwsWritePolicy {
  /** Attempts per write, the first included. Default 6. */
  maxAttempts: number;
  /** First backoff ceiling; doubles per attempt. Default 25. */
  baseDelayMs: number;
  /** Backoff ceiling. Default 1000. */
  maxDelayMs: number;
  /** One attempt's time limit (aborted after it). Default 5000. */
  requestTimeoutMs: number;
}

export const DEFAULT_WRITE_POLICY: Readonly<AwsWritePolicy> = { maxAttempts: 6, baseDelayMs: 25, maxDelayMs: 1000, requestTimeoutMs: 5000 };

/** The key holds something else: another writer's item or object. */
export class AuditConflictError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditConflictError';
  }
}

export class AuditRequestTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditRequestTimeoutError';
  }
}

const RETRYABLE_NAMES = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'Throttling',
  'RequestLimitExceeded',
  'TooManyRequestsException',
  'SlowDown',
  'InternalServerError',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'ConditionalRequestConflict',
  'TimeoutError',
  'AbortError',
  'AuditRequestTimeoutError',
]);
const RETRYABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET']);

interface SdkErrorShape {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

export function isConditionFailure(err: unknown): boolean {
  return (err as SdkErrorShape | null)?.name === 'ConditionalCheckFailedException';
}

/** S3's answer to `If-None-Match: *` on an existing key. */
export function isPreconditionFailure(err: unknown): boolean {
  const e = err as SdkErrorShape | null;
  return e?.name === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412;
}

export function isRetryable(err: unknown): boolean {
  if (!(err instanceof Error) || isConditionFailure(err) || isPreconditionFailure(err) || err instanceof AuditConflictError) return false;
  const e = err as SdkErrorShape;
  if (RETRYABLE_NAMES.has(err.name) || (e.code !== undefined && RETRYABLE_CODES.has(e.code)) || e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  return status === 429 || (status !== undefined && status >= 500);
}

/** Runs `op` until it succeeds, fails for good, or runs out of attempts; every attempt time-limited. */
export async function withRetry<T>(
  policy: AwsWritePolicy,
  what: string,
  op: (signal: AbortSignal) => Promise<T>,
  onRetry?: (err: unknown) => void,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await attemptOnce(op, policy.requestTimeoutMs, what);
    } catch (err) {
      if (attempt >= policy.maxAttempts || !isRetryable(err)) throw err;
      onRetry?.(err);
      const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      await new Promise((r) => setTimeout(r, Math.random() * ceiling));
    }
  }
}

async function attemptOnce<T>(op: (signal: AbortSignal) => Promise<T>, timeoutMs: number, what: string): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  // The race also covers stages that do not watch the signal (e.g. credential resolution).
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new AuditRequestTimeoutError(`${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([op(ac.signal), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs tasks with at most `limit` in flight. Once one fails, no further task starts; the first error
 * is thrown after the running ones settle.
 */
export async function runLimited(tasks: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let error: { err: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (error === null && next < tasks.length) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (err) {
        error ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (error !== null) throw (error as { err: unknown }).err;
}

export const sha256Hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

export interface AwsAuditWriterOptions {
  doc: DynamoDBDocumentClient;
  s3: S3Client;
  bucket: string;
  policy: AwsWritePolicy;
  /** Called before each retry (statistics). */
  onRetry?: (err: unknown) => void;
}

export class AwsAuditWriter {
  constructor(private readonly o: AwsAuditWriterOptions) {}

  /**
   * Puts `item` unless an item with its partition key (and sort key, if given) exists. A refused put
   * counts as written when the stored item's `checkAttr` equals ours.
   */
  async putNew(table: string, item: Record<string, unknown>, key: { pk: string; sk?: string }, checkAttr: string): Promise<void> {
    const keyOf = { [key.pk]: item[key.pk], ...(key.sk ? { [key.sk]: item[key.sk] } : {}) };
    const what = `put ${table} ${JSON.stringify(keyOf)}`;
    try {
      await withRetry(
        this.o.policy,
        what,
        (abortSignal) =>
          this.o.doc.send(
            new PutCommand({ TableName: table, Item: item, ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: { '#pk': key.pk } }),
            { abortSignal },
          ),
        this.o.onRetry,
      );
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
      const stored = await this.getItem(table, keyOf);
      if (stored?.[checkAttr] === item[checkAttr]) return;
      throw new AuditConflictError(`${what}: the key already holds another writer's item; refusing to overwrite`, { cause: err });
    }
  }

  /**
   * SETs `values` on an existing item whose `onceAttr` is absent (a one-time transition such as a
   * session's end). A refused update counts as written when the stored `checkAttr` equals ours.
   */
  async updateOnce(table: string, keyOf: Record<string, unknown>, values: Record<string, unknown>, onceAttr: string, checkAttr: string): Promise<void> {
    const what = `update ${table} ${JSON.stringify(keyOf)}`;
    const names: Record<string, string> = { '#pk': Object.keys(keyOf)[0]!, '#once': onceAttr };
    const exprValues: Record<string, unknown> = {};
    const sets: string[] = [];
    Object.entries(values).forEach(([name, value], i) => {
      if (value === undefined) return;
      names[`#a${i}`] = name;
      exprValues[`:v${i}`] = value;
      sets.push(`#a${i} = :v${i}`);
    });
    try {
      await withRetry(
        this.o.policy,
        what,
        (abortSignal) =>
          this.o.doc.send(
            new UpdateCommand({
              TableName: table,
              Key: keyOf,
              UpdateExpression: `SET ${sets.join(', ')}`,
              ConditionExpression: 'attribute_exists(#pk) AND attribute_not_exists(#once)',
              ExpressionAttributeNames: names,
              ExpressionAttributeValues: exprValues,
            }),
            { abortSignal },
          ),
        this.o.onRetry,
      );
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
      const stored = await this.getItem(table, keyOf);
      if (stored !== undefined && stored[onceAttr] !== undefined && stored[checkAttr] === values[checkAttr]) return;
      throw new AuditConflictError(`${what}: the item is missing or was already updated by another writer`, { cause: err });
    }
  }

  /**
   * Puts an object under a key that must not exist yet (`If-None-Match: *`; S3 answers 412 if it
   * does). A refused put counts as written when the stored bytes are ours (same SHA-256).
   */
  async putObjectNew(key: string, body: string, contentType: string): Promise<{ sha256: string; bytes: number }> {
    const data = Buffer.from(body, 'utf8');
    const sha256 = sha256Hex(data);
    const what = `put s3://${this.o.bucket}/${key}`;
    try {
      await withRetry(
        this.o.policy,
        what,
        (abortSignal) =>
          this.o.s3.send(
            new PutObjectCommand({
              Bucket: this.o.bucket,
              Key: key,
              Body: data,
              ContentType: contentType,
              IfNoneMatch: '*',
              // S3 checks the upload against it; buckets with Object Lock default retention require one.
              ChecksumAlgorithm: 'SHA256',
            }),
            { abortSignal },
          ),
        this.o.onRetry,
      );
    } catch (err) {
      if (!isPreconditionFailure(err)) throw err;
      const stored = await this.getObject(key);
      if (stored !== undefined && sha256Hex(stored) === sha256) return { sha256, bytes: data.length };
      throw new AuditConflictError(`${what}: the key already holds another object; refusing to overwrite`, { cause: err });
    }
    return { sha256, bytes: data.length };
  }

  private async getItem(table: string, keyOf: Record<string, unknown>): Promise<Record<string, unknown> | undefined> {
    const out = await withRetry(this.o.policy, `get ${table}`, (abortSignal) =>
      this.o.doc.send(new GetCommand({ TableName: table, Key: keyOf, ConsistentRead: true }), { abortSignal }),
    );
    return out.Item;
  }

  private async getObject(key: string): Promise<Buffer | undefined> {
    try {
      const out = await withRetry(this.o.policy, `get s3://${this.o.bucket}/${key}`, async (abortSignal) => {
        const res = await this.o.s3.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: key }), { abortSignal });
        return Buffer.from((await res.Body?.transformToByteArray()) ?? new Uint8Array());
      });
      return out;
    } catch (err) {
      if ((err as SdkErrorShape).name === 'NoSuchKey') return undefined;
      throw err;
    }
  }
}
