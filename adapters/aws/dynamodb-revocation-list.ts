/**
 * The revocation list on AWS: a DynamoDB table, one item per revoked identity, read by every proxy task
 * with a full Scan every `pollIntervalMs` (default 15 s).
 *
 * | attribute | holds |
 * |---|---|
 * | `identity` (S, partition key) | `<issuer>|<subject>` |
 * | `issuer`, `subject` (S) | the identity, exactly as the verified token carries it |
 * | `revokedAt` (S) | ISO-8601 |
 * | `reason`, `revokedBy` (S, optional) | why, and which operator |
 *
 * Why a full Scan: revocations are rare and few (an identity is revoked when an agent is compromised or
 * retired), so the table is expected to hold at most a few thousand items of about 200 bytes, which is
 * one or two Scan pages and a few dozen read units per poll and task. Polling keeps the proxy task's
 * permissions to `dynamodb:Scan` on one table and needs no stream consumer. If the table ever grows past
 * tens of thousands of items, revoked entries should expire (or be archived) rather than the poll grow.
 *
 * Fail closed: answers come from the last complete Scan; when none succeeded for longer than
 * `toleranceMs` (default 60 s: four missed polls), every check answers `unavailable` and logins are
 * refused until a poll succeeds again. A Scan that returns an item whose identity cannot be read counts as
 * a failed poll: skipping it could let a revoked identity in.
 *
 * @see https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Scan.html
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, PutCommand, ScanCommand, type ScanCommandOutput } from '@aws-sdk/lib-dynamodb';
import type { RevocationList, RevocationStatus, RevokedIdentity } from '../../core/identity/revocation.ts';
import {
  parseRevocationDocument,
  RevocationDocumentError,
  revocationKey,
  RevocationListeners,
  RevocationSnapshot,
  SILENT_REVOCATION_LOGGER,
  type RevocationLogger,
} from '../../core/identity/revocation-document.ts';

export const DEFAULT_REVOCATION_POLL_INTERVAL_MS = 15_000;
export const DEFAULT_REVOCATION_TOLERANCE_MS = 60_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

export interface DynamoDbRevocationListOptions {
  readonly client: DynamoDBClient;
  readonly tableName: string;
  /** Time between the end of one Scan and the start of the next. Default 15 s. */
  readonly pollIntervalMs?: number;
  /** How old the last complete Scan may be before every check answers `unavailable`. Default 60 s. */
  readonly toleranceMs?: number;
  /** A Scan page that takes longer than this is abandoned (the poll fails). Default 10 s. */
  readonly requestTimeoutMs?: number;
  /** Items a Scan page evaluates (`Limit`); default: DynamoDB's own page of up to 1 MB. */
  readonly scanPageLimit?: number;
  readonly log?: RevocationLogger;
  /** Clock, for tests. */
  readonly now?: () => number;
}

/** A poll that read the table but found an item it cannot interpret. */
export class RevocationItemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RevocationItemError';
  }
}

export class DynamoDbRevocationList implements RevocationList {
  readonly tableName: string;
  readonly ready: Promise<void>;
  private readonly doc: DynamoDBDocumentClient;
  private readonly pollIntervalMs: number;
  private readonly toleranceMs: number;
  private readonly requestTimeoutMs: number;
  private readonly scanPageLimit: number | undefined;
  private readonly log: RevocationLogger;
  private readonly now: () => number;
  private readonly listeners: RevocationListeners;
  private snapshot: RevocationSnapshot | undefined;
  /** When the last complete Scan started (its data is at least that fresh). */
  private lastSuccess: number | undefined;
  private readonly started: number;
  private failingSince: number | undefined;
  private reportedStale = false;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private closed = false;
  private settleReady: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readyTimer: NodeJS.Timeout | undefined;

  constructor(options: DynamoDbRevocationListOptions) {
    this.tableName = options.tableName;
    this.pollIntervalMs = options.pollIntervalMs ?? DEFAULT_REVOCATION_POLL_INTERVAL_MS;
    this.toleranceMs = options.toleranceMs ?? DEFAULT_REVOCATION_TOLERANCE_MS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.scanPageLimit = options.scanPageLimit;
    if (!(this.pollIntervalMs > 0) || !(this.toleranceMs > this.pollIntervalMs)) {
      throw new RangeError(`toleranceMs (${this.toleranceMs}) must be greater than pollIntervalMs (${this.pollIntervalMs}), which must be positive`);
    }
    this.log = options.log ?? SILENT_REVOCATION_LOGGER;
    this.now = options.now ?? Date.now;
    this.listeners = new RevocationListeners((err) => this.log.error('revocation list: a change listener failed', { err }));
    this.doc = DynamoDBDocumentClient.from(options.client);
    this.started = this.now();
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    this.ready.catch(() => undefined);
    // No complete Scan within the tolerance: the list is unavailable, and start-up fails rather than
    // start a task that refuses every login.
    this.readyTimer = setTimeout(() => this.failReady(), this.toleranceMs);
    this.readyTimer.unref();
    this.schedule(0);
  }

  check(issuer: string, subject: string): RevocationStatus {
    if (!this.snapshot || this.lastSuccess === undefined || this.now() - this.lastSuccess > this.toleranceMs) return 'unavailable';
    return this.snapshot.status(issuer, subject);
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  /** Runs a poll now (and waits for it); the regular schedule continues after it. */
  async refresh(): Promise<void> {
    if (this.polling) return this.polling;
    clearTimeout(this.timer);
    await this.pollOnce();
    if (!this.closed) this.schedule(this.pollIntervalMs);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.readyTimer);
    this.failReady('the revocation list was closed before its first complete read');
    this.listeners.clear();
    await this.polling?.catch(() => undefined);
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      void this.pollOnce().finally(() => this.schedule(this.pollIntervalMs));
    }, delayMs);
    this.timer.unref();
  }

  private pollOnce(): Promise<void> {
    this.polling ??= this.scanAndApply().finally(() => {
      this.polling = undefined;
    });
    return this.polling;
  }

  private async scanAndApply(): Promise<void> {
    const startedAt = this.now();
    let entries: RevokedIdentity[];
    try {
      entries = await this.scanAll();
    } catch (err) {
      if (this.closed) return;
      this.failingSince ??= startedAt;
      const staleForMs = this.lastSuccess === undefined ? startedAt - this.started : startedAt - this.lastSuccess;
      this.log.warn('revocation list: reading the table failed', { table: this.tableName, err, failingForMs: startedAt - this.failingSince });
      if (staleForMs > this.toleranceMs && !this.reportedStale) {
        this.reportedStale = true;
        this.log.error('revocation list unavailable: no complete read within the tolerance; every new login is refused (fail closed); live sessions continue', {
          table: this.tableName,
          toleranceMs: this.toleranceMs,
        });
      }
      return;
    }
    if (this.closed) return;
    const next = new RevocationSnapshot(entries);
    const prev = this.snapshot;
    this.snapshot = next;
    this.lastSuccess = startedAt;
    if (this.failingSince !== undefined) this.log.info('revocation list: reading the table works again', { table: this.tableName, revoked: next.size });
    this.failingSince = undefined;
    this.reportedStale = false;
    if (this.settleReady) {
      clearTimeout(this.readyTimer);
      this.settleReady.resolve();
      this.settleReady = undefined;
      this.log.info('revocation list loaded', { table: this.tableName, revoked: next.size });
    }
    if (!prev || prev.fingerprint !== next.fingerprint) this.listeners.emit();
  }

  /** Every item of the table, page by page (strongly consistent: a revocation is seen by the next poll). */
  private async scanAll(): Promise<RevokedIdentity[]> {
    const items: Record<string, unknown>[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const page: ScanCommandOutput = await this.doc.send(
        new ScanCommand({
          TableName: this.tableName,
          ConsistentRead: true,
          ...(this.scanPageLimit ? { Limit: this.scanPageLimit } : {}),
          ...(startKey ? { ExclusiveStartKey: startKey } : {}),
        }),
        { abortSignal: AbortSignal.timeout(this.requestTimeoutMs) },
      );
      for (const item of page.Items ?? []) items.push(item);
      startKey = page.LastEvaluatedKey;
    } while (startKey);
    return items.map((item, i) => toRevokedIdentity(item, i));
  }

  private failReady(message?: string): void {
    if (!this.settleReady) return;
    this.settleReady.reject(new Error(message ?? `revocation list: no complete read of table ${this.tableName} within ${this.toleranceMs} ms`));
    this.settleReady = undefined;
  }
}

function toRevokedIdentity(item: Record<string, unknown>, index: number): RevokedIdentity {
  const { identity, issuer, subject, revokedAt, reason, revokedBy } = item;
  const entry = {
    issuer,
    subject,
    revokedAt,
    ...(reason !== undefined ? { reason } : {}),
    ...(revokedBy !== undefined ? { revokedBy } : {}),
  };
  let parsed: RevokedIdentity;
  try {
    parsed = parseRevocationDocument({ revoked: [entry] }).revoked[0]!;
  } catch (err) {
    const problem = err instanceof RevocationDocumentError ? err.message.replace(/^revoked\.0\./, '') : (err as Error).message;
    throw new RevocationItemError(`item ${index} (identity ${JSON.stringify(identity)}) is not a revocation: ${problem}`);
  }
  if (identity !== revocationKey(parsed.issuer, parsed.subject)) {
    throw new RevocationItemError(`item ${index}: identity ${JSON.stringify(identity)} does not match its issuer and subject`);
  }
  return parsed;
}

/**
 * Writes a revocation (an operator's tool or a test; the proxy task only reads). An identity revoked
 * already keeps its first entry: the condition makes a second revoke a no-op that reports `false`.
 */
export async function putRevocation(client: DynamoDBClient, tableName: string, entry: RevokedIdentity): Promise<boolean> {
  const doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  try {
    await doc.send(
      new PutCommand({
        TableName: tableName,
        Item: { identity: revocationKey(entry.issuer, entry.subject), ...entry },
        ConditionExpression: 'attribute_not_exists(#identity)',
        ExpressionAttributeNames: { '#identity': 'identity' },
      }),
    );
    return true;
  } catch (err) {
    if ((err as Error).name === 'ConditionalCheckFailedException') return false;
    throw err;
  }
}

/** Removes a revocation; resolves `false` when the identity was not revoked. */
export async function deleteRevocation(client: DynamoDBClient, tableName: string, issuer: string, subject: string): Promise<boolean> {
  const doc = DynamoDBDocumentClient.from(client);
  const out = await doc.send(new DeleteCommand({ TableName: tableName, Key: { identity: revocationKey(issuer, subject) }, ReturnValues: 'ALL_OLD' }));
  return out.Attributes !== undefined;
}
