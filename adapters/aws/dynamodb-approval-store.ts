/**
 * The approvals table on AWS: one item per request, keyed by `id`.
 *
 * | attribute | holds |
 * |---|---|
 * | `id` (S, partition key) | the request id |
 * | `state` (M) | the ApprovalState as shown to approvers, the CLI and the proxy |
 * | `status` (S), `revision` (N) | copies of the state's, for conditions and filters |
 * | `createdAt` (S) | copy of the request's, to list pending requests oldest first |
 * | `expiresAtEpoch` (N) | DynamoDB TTL: when the item may be deleted (housekeeping only, see below) |
 * | `taskToken` (S) | the Step Functions task token; never part of `state` and never read by `get` |
 * | `slackMessage` (M) | `{ channel, ts }` of the request message in Slack |
 *
 * Every change of `state` is conditional on `revision`, so concurrent voters, double clicks and retried
 * deliveries cannot lose or double-count a vote (core/approval/approval-store.ts re-judges on conflict).
 * Reads are strongly consistent: an eventually consistent read could hand `recordVote` a stale revision
 * on every retry.
 *
 * @see https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html
 */
import { ConditionalCheckFailedException, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, PutCommand, ScanCommand, UpdateCommand, type ScanCommandOutput } from '@aws-sdk/lib-dynamodb';
import type { ApprovalId, ApprovalState } from '../../core/approval/approval-request.ts';
import { ApprovalNotFoundError, type ApprovalStore } from '../../core/approval/approval-store.ts';

/** Where the request message was posted in Slack (chat.postMessage's `channel` and `ts`). */
export interface SlackMessageRef {
  readonly channel: string;
  readonly ts: string;
}

export interface DynamoDbApprovalStoreOptions {
  /** A plain DynamoDB client; the store wraps it in a document client with its own marshalling options. */
  readonly client: DynamoDBClient;
  readonly tableName: string;
  /**
   * How long an item is kept after its request expires, in seconds (default 30 days). DynamoDB's TTL
   * deletes lazily (often hours, up to days late), so it is never used to expire a request; it only
   * bounds the table. It must outlast the async grant's time to live, which counts from the approval.
   */
  readonly retentionSeconds?: number;
  /** Items a Scan page evaluates (`Limit`); default: DynamoDB's own page of up to 1 MB. */
  readonly scanPageLimit?: number;
}

const DEFAULT_RETENTION_SECONDS = 30 * 24 * 3600;

export class ApprovalStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApprovalStoreError';
  }
}

/** `create` found an item with the same id. */
export class ApprovalAlreadyExistsError extends ApprovalStoreError {
  constructor(
    readonly id: string,
    options?: { cause?: unknown },
  ) {
    super(`approval request ${id} already exists`, options);
    this.name = 'ApprovalAlreadyExistsError';
  }
}

export class DynamoDbApprovalStore implements ApprovalStore {
  readonly tableName: string;
  private readonly doc: DynamoDBDocumentClient;
  private readonly retentionSeconds: number;
  private readonly scanPageLimit: number | undefined;

  constructor(options: DynamoDbApprovalStoreOptions) {
    this.tableName = options.tableName;
    this.retentionSeconds = options.retentionSeconds ?? DEFAULT_RETENTION_SECONDS;
    this.scanPageLimit = options.scanPageLimit;
    // Optional fields of the state are left out rather than stored as NULL, so a read gives back what was written.
    this.doc = DynamoDBDocumentClient.from(options.client, { marshallOptions: { removeUndefinedValues: true } });
  }

  async create(state: ApprovalState): Promise<void> {
    try {
      await this.doc.send(
        new PutCommand({
          TableName: this.tableName,
          Item: {
            id: state.request.id,
            ...this.stateAttributes(state),
            createdAt: state.request.createdAt,
          },
          ConditionExpression: 'attribute_not_exists(id)',
        }),
      );
    } catch (err) {
      if (isConditionFailure(err)) throw new ApprovalAlreadyExistsError(state.request.id, { cause: err });
      throw err;
    }
  }

  async get(id: ApprovalId): Promise<ApprovalState | undefined> {
    const out = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: { id },
        ConsistentRead: true,
        // Only the state: the task token stays in the table unless asked for by name.
        ProjectionExpression: '#state',
        ExpressionAttributeNames: { '#state': 'state' },
      }),
    );
    return out.Item === undefined ? undefined : stateOf(out.Item, id);
  }

  async replace(next: ApprovalState): Promise<boolean> {
    // UpdateItem rather than PutItem: the task token and the Slack message reference live beside the state.
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { id: next.request.id },
          UpdateExpression: 'SET #state = :state, #status = :status, #revision = :revision, #expires = :expires',
          // A missing item has no revision, so this also refuses to create one.
          ConditionExpression: '#revision = :previous',
          ExpressionAttributeNames: { '#state': 'state', '#status': 'status', '#revision': 'revision', '#expires': 'expiresAtEpoch' },
          ExpressionAttributeValues: {
            ':state': next,
            ':status': next.status,
            ':revision': next.revision,
            ':expires': this.expiresAtEpoch(next),
            ':previous': next.revision - 1,
          },
        }),
      );
      return true;
    } catch (err) {
      if (isConditionFailure(err)) return false;
      throw err;
    }
  }

  /**
   * A Scan filtered on status, paginated. A global secondary index on `status` would put every pending
   * request under one key value (a hot partition) and can only be read eventually consistent; the table
   * holds only requests within the retention period, and this runs from operators' commands and
   * housekeeping, never per vote, so a consistent Scan is the simpler and cheaper choice.
   */
  async listPending(): Promise<ApprovalState[]> {
    const found: { state: ApprovalState; createdAt: string }[] = [];
    let startKey: ScanCommandOutput['LastEvaluatedKey'];
    do {
      const page: ScanCommandOutput = await this.doc.send(
        new ScanCommand({
          TableName: this.tableName,
          ConsistentRead: true,
          FilterExpression: '#status = :pending',
          ProjectionExpression: 'id, #state, createdAt',
          ExpressionAttributeNames: { '#status': 'status', '#state': 'state' },
          ExpressionAttributeValues: { ':pending': 'pending' },
          ...(this.scanPageLimit !== undefined ? { Limit: this.scanPageLimit } : {}),
          ...(startKey ? { ExclusiveStartKey: startKey } : {}),
        }),
      );
      for (const item of page.Items ?? []) {
        const state = stateOf(item, String(item.id));
        found.push({ state, createdAt: typeof item.createdAt === 'string' ? item.createdAt : state.request.createdAt });
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey !== undefined);
    found.sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt) || a.state.request.id.localeCompare(b.state.request.id));
    return found.map((f) => f.state);
  }

  /** Stores the Step Functions task token of the request's wait (replacing one from an earlier attempt). */
  async putTaskToken(id: ApprovalId, token: string): Promise<void> {
    await this.setAttribute(id, 'taskToken', token);
  }

  /** The task token, or undefined when none was stored (or the request is unknown). */
  async getTaskToken(id: ApprovalId): Promise<string | undefined> {
    const value = await this.getAttribute(id, 'taskToken');
    return typeof value === 'string' ? value : undefined;
  }

  /**
   * Removes the task token once its task was completed, if it is still this token (a retried task
   * attempt may have stored a newer one, which must stay). A token left in place marks a completion
   * still owed, which a retried Slack delivery then makes up.
   */
  async deleteTaskToken(id: ApprovalId, token: string): Promise<void> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { id },
          UpdateExpression: 'REMOVE #a',
          ConditionExpression: '#a = :t',
          ExpressionAttributeNames: { '#a': 'taskToken' },
          ExpressionAttributeValues: { ':t': token },
        }),
      );
    } catch (err) {
      if (!isConditionFailure(err)) throw err;
    }
  }

  async setSlackMessage(id: ApprovalId, message: SlackMessageRef): Promise<void> {
    await this.setAttribute(id, 'slackMessage', { channel: message.channel, ts: message.ts });
  }

  async getSlackMessage(id: ApprovalId): Promise<SlackMessageRef | undefined> {
    const value = await this.getAttribute(id, 'slackMessage');
    if (typeof value !== 'object' || value === null) return undefined;
    const { channel, ts } = value as Record<string, unknown>;
    return typeof channel === 'string' && typeof ts === 'string' ? { channel, ts } : undefined;
  }

  private stateAttributes(state: ApprovalState): Record<string, unknown> {
    return { state, status: state.status, revision: state.revision, expiresAtEpoch: this.expiresAtEpoch(state) };
  }

  private expiresAtEpoch(state: ApprovalState): number {
    const expires = Date.parse(state.request.expiresAt);
    if (Number.isNaN(expires)) throw new ApprovalStoreError(`approval request ${state.request.id} has no valid expiresAt`);
    return Math.floor(expires / 1000) + this.retentionSeconds;
  }

  private async setAttribute(id: ApprovalId, name: 'taskToken' | 'slackMessage', value: unknown): Promise<void> {
    try {
      await this.doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { id },
          UpdateExpression: 'SET #a = :v',
          ConditionExpression: 'attribute_exists(id)',
          ExpressionAttributeNames: { '#a': name },
          ExpressionAttributeValues: { ':v': value },
        }),
      );
    } catch (err) {
      if (isConditionFailure(err)) throw new ApprovalNotFoundError(id);
      throw err;
    }
  }

  private async getAttribute(id: ApprovalId, name: 'taskToken' | 'slackMessage'): Promise<unknown> {
    const out = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: { id },
        ConsistentRead: true,
        ProjectionExpression: '#a',
        ExpressionAttributeNames: { '#a': name },
      }),
    );
    return out.Item?.[name];
  }
}

function stateOf(item: Record<string, unknown>, id: string): ApprovalState {
  const state = item.state as ApprovalState | undefined;
  if (typeof state !== 'object' || state === null || typeof state.revision !== 'number' || typeof state.request !== 'object') {
    throw new ApprovalStoreError(`approvals table item ${id} holds no approval state`);
  }
  return state;
}

function isConditionFailure(err: unknown): boolean {
  return err instanceof ConditionalCheckFailedException || (err instanceof Error && err.name === 'ConditionalCheckFailedException');
}
