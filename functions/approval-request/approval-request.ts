/**
 * The approval state machine's wait: a `lambda:invoke.waitForTaskToken` task hands this function the
 * request and a task token; the function stores both, posts the request to the approvers' Slack channel
 * and returns. The task then waits until the interaction function (functions/slack-interactions) completes
 * it with the token, or until the state machine's timeout.
 *
 * Step Functions may run the task again (a retry after a timeout or a throttled call), with a new token,
 * so every step is idempotent: the same request again continues where the first run stopped (a message
 * already posted is updated, never posted twice), the newest token replaces the older one, and a request
 * that was decided meanwhile completes the new token at once.
 *
 * Errors are thrown, because that is how a task fails: the state machine sees the error's name.
 * ApprovalTaskInvalidError and ApprovalRoutingError are faults of the input or the configuration that
 * no retry can fix; anything else (Slack or DynamoDB unavailable) may be retried.
 *
 * @see https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-wait-token
 */
import { isDeepStrictEqual } from 'node:util';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SendTaskFailureCommand, SendTaskSuccessCommand, SFNClient } from '@aws-sdk/client-sfn';
import { WebClient, type WebClientOptions } from '@slack/web-api';
import { z } from 'zod';
import { DynamoDbApprovalStore, type SlackMessageRef } from '../../adapters/aws/dynamodb-approval-store.ts';
import { ApprovalStatus, newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver } from '../../core/approval/approval-request.ts';
import type { ApprovalStore } from '../../core/approval/approval-store.ts';
import { renderApprovalMessage, renderStatementThread } from '../../core/approval/slack-messages.ts';
import { ApprovalsSchema } from '../../core/config/schema.ts';

// ----- what both approval functions share ---------------------------------------------------------

/** The approvals table with what the Slack functions keep beside each state (DynamoDbApprovalStore). */
export interface ApprovalSlackStore extends ApprovalStore {
  putTaskToken(id: ApprovalId, token: string): Promise<void>;
  getTaskToken(id: ApprovalId): Promise<string | undefined>;
  deleteTaskToken(id: ApprovalId, token: string): Promise<void>;
  setSlackMessage(id: ApprovalId, message: SlackMessageRef): Promise<void>;
  getSlackMessage(id: ApprovalId): Promise<SlackMessageRef | undefined>;
}

/** Where the bot token comes from: the environment here; Secrets Manager or another source when injected. */
export type SlackTokenProvider = () => Promise<string>;

/** The part of the Step Functions client the approval functions use (an SFNClient fits). */
export interface TaskCallbacks {
  send(command: SendTaskSuccessCommand | SendTaskFailureCommand): Promise<unknown>;
}

/** Structured log lines (a Powertools Logger fits). */
export interface StructuredLog {
  info(message: string, attributes: Record<string, unknown>): void;
  warn(message: string, attributes: Record<string, unknown>): void;
  error(message: string, attributes: Record<string, unknown>): void;
}

export type ApprovalsConfig = z.output<typeof ApprovalsSchema>;

export class ApprovalConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApprovalConfigError';
  }
}

/** Reads the `approvals` section of the configuration from APPROVALS_CONFIG (JSON). */
export function approvalsConfigFromEnv(env: NodeJS.ProcessEnv = process.env): ApprovalsConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(env.APPROVALS_CONFIG ?? '{}');
  } catch (err) {
    throw new ApprovalConfigError('APPROVALS_CONFIG is not JSON', { cause: err });
  }
  const parsed = ApprovalsSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ApprovalConfigError(`APPROVALS_CONFIG is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, { cause: parsed.error });
  }
  return parsed.data;
}

/** The approvers of the configuration, as the vote rules take them. */
export function approversOf(config: ApprovalsConfig): Approver[] {
  return config.approvers.map((a) => ({
    id: a.id,
    groups: a.groups,
    ...(a.slackUserId !== undefined ? { slackUserId: a.slackUserId } : {}),
    identities: a.identities,
  }));
}

/** How the Slack client of a function retries and how long it waits, which depends on how long its caller waits. */
export type SlackClientPatience = Pick<WebClientOptions, 'retryConfig' | 'rejectRateLimitedCalls' | 'timeout'>;

/**
 * The clients both Slack approval functions use, configured from the environment: the approvals table
 * (APPROVALS_TABLE), Step Functions, and the Slack Web API (SLACK_API_URL, optional) with the given
 * patience. The bot token is not set on the client: it is passed per call.
 */
export function approvalClientsFromEnv(options: { slack: SlackClientPatience }, env: NodeJS.ProcessEnv = process.env): { store: DynamoDbApprovalStore; sfn: SFNClient; slack: WebClient } {
  const tableName = env.APPROVALS_TABLE;
  if (!tableName) throw new ApprovalConfigError('APPROVALS_TABLE is not set');
  return {
    store: new DynamoDbApprovalStore({ client: new DynamoDBClient({}), tableName }),
    sfn: new SFNClient({}),
    slack: new WebClient(undefined, {
      ...(env.SLACK_API_URL ? { slackApiUrl: env.SLACK_API_URL } : {}),
      ...options.slack,
      allowAbsoluteUrls: false,
    }),
  };
}

/** A provider of a secret held in an environment variable (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET). */
export function envSecret(name: string, env: NodeJS.ProcessEnv = process.env): () => Promise<string> {
  return async () => {
    const value = env[name];
    if (!value) throw new ApprovalConfigError(`${name} is not set`);
    return value;
  };
}

/** Error names the task fails with when a request closes without an approval. */
export const TaskFailure = {
  denied: 'Warden.Denied',
  expired: 'Warden.Expired',
  withdrawn: 'Warden.Withdrawn',
} as const;

export class ApprovalTaskCallbackError extends Error {
  constructor(id: string, options: { cause: unknown }) {
    super(`completing the approval task of ${id} failed`, options);
    this.name = 'ApprovalTaskCallbackError';
  }
}

/** Errors meaning the token's task is over already (completed, timed out, or never was): nothing left to do. */
const TASK_GONE = new Set(['TaskTimedOut', 'TaskDoesNotExist', 'InvalidToken']);
/** Step Functions' limit on `cause`. */
const MAX_CAUSE_CHARS = 32_768;

/**
 * Completes the task of a closed request: SendTaskSuccess with `{ status, votes }` when approved,
 * SendTaskFailure otherwise (Warden.Denied with the denier's reason as cause, Warden.Expired,
 * Warden.Withdrawn). 'gone' when the task had ended already, which is not an error: a retried delivery
 * or a second writer may complete the same token twice.
 */
export async function completeApprovalTask(sfn: TaskCallbacks, taskToken: string, state: ApprovalState): Promise<'completed' | 'gone'> {
  let command: SendTaskSuccessCommand | SendTaskFailureCommand;
  if (state.status === ApprovalStatus.approved) {
    command = new SendTaskSuccessCommand({ taskToken, output: JSON.stringify({ status: state.status, votes: state.votes }) });
  } else if (state.status === ApprovalStatus.pending) {
    throw new Error(`approval ${state.request.id} is still pending`);
  } else {
    command = new SendTaskFailureCommand({ taskToken, error: TaskFailure[state.status], cause: (state.outcomeReason ?? state.status).slice(0, MAX_CAUSE_CHARS) });
  }
  try {
    await sfn.send(command);
    return 'completed';
  } catch (err) {
    if (err instanceof Error && TASK_GONE.has(err.name)) return 'gone';
    throw new ApprovalTaskCallbackError(state.request.id, { cause: err });
  }
}

/** Completes the stored task of a closed request and forgets the token; undefined when no token is stored. */
export async function completeStoredTask(store: ApprovalSlackStore, sfn: TaskCallbacks, state: ApprovalState): Promise<'completed' | 'gone' | undefined> {
  const token = await store.getTaskToken(state.request.id);
  if (token === undefined) return undefined;
  const result = await completeApprovalTask(sfn, token, state);
  await store.deleteTaskToken(state.request.id, token);
  return result;
}

/** A Slack Web API call failed. */
export class ApprovalSlackError extends Error {
  constructor(method: string, options: { cause: unknown }) {
    super(`Slack ${method} failed: ${slackErrorCode(options.cause)}`, options);
    this.name = 'ApprovalSlackError';
  }
}

/** Slack's own error code (`not_in_channel`, `invalid_auth`, …) or the error's message. */
export function slackErrorCode(err: unknown): string {
  const data = (err as { data?: { error?: unknown } } | undefined)?.data;
  if (typeof data?.error === 'string') return data.error;
  return err instanceof Error ? err.message : String(err);
}

// ----- this function ------------------------------------------------------------------------------

const MAX_TEXT = 1024 * 1024;
const name = z.string().min(1).max(512);
const isoTime = z.iso.datetime({ offset: true });

export const ApprovalRequestSchema = z.strictObject({
  // Travels in button values and modal metadata: a plain identifier.
  id: z
    .string()
    .regex(/^[\w.:-]{1,128}$/, 'must be 1 to 128 letters, digits or . _ : -')
    .transform((s) => s as ApprovalId),
  requester: z.strictObject({ issuer: name, subject: name, groups: z.array(name).max(1024) }),
  target: z.strictObject({ name, kind: z.literal('postgres'), environment: name }),
  sessionId: name,
  statement: z.strictObject({
    text: z.string().max(MAX_TEXT),
    fingerprint: z.string().max(512),
    digest: z.string().max(512),
    command: name,
    tables: z.array(z.string().max(1024)).max(10_000),
    risks: z.array(z.string().max(512)).max(1024),
  }),
  reason: z.string().max(10_000).optional(),
  policies: z.array(name).max(1024),
  policyReason: z.string().max(10_000).optional(),
  requirement: z.strictObject({ approvers: z.array(name).min(1).max(64), approvals: z.number().int().min(1).max(100) }),
  mode: z.enum(['wait', 'async']),
  createdAt: isoTime,
  expiresAt: isoTime,
});

export const ApprovalTaskSchema = z.strictObject({
  request: ApprovalRequestSchema,
  // Step Functions task tokens are opaque strings of up to 2,048 characters.
  taskToken: z.string().min(1).max(2048),
});

export interface ApprovalTask {
  readonly request: ApprovalRequest;
  readonly taskToken: string;
}

/** The task's input is not what the state machine must send. Not worth a retry. */
export class ApprovalTaskInvalidError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid approval task input: ${problems.join('; ')}`);
    this.name = 'ApprovalTaskInvalidError';
  }
}

/** No Slack channel is configured for any approver group of the request. Not worth a retry. */
export class ApprovalRoutingError extends Error {
  constructor(id: string, groups: readonly string[]) {
    super(`approval ${id}: no Slack channel is configured for ${groups.join(', ')} (approvals.slack.channels)`);
    this.name = 'ApprovalRoutingError';
  }
}

/** The id exists with another request: two requests must never share an id. */
export class ApprovalRequestConflictError extends Error {
  constructor(id: string) {
    super(`approval ${id} exists with a different request`);
    this.name = 'ApprovalRequestConflictError';
  }
}

export function parseApprovalTask(event: unknown): ApprovalTask {
  const r = ApprovalTaskSchema.safeParse(event);
  if (r.success) return r.data;
  // Name the fields, never echo values: the token and the statement are not for the execution history.
  const problems = r.error.issues.slice(0, 10).map((i) => `${i.path.map(String).join('.') || '(input)'}: ${i.code === 'unrecognized_keys' ? `unknown field ${i.keys.map((k) => JSON.stringify(k.slice(0, 64))).join(', ')}` : i.message}`);
  throw new ApprovalTaskInvalidError(problems);
}

/** The channel of the first of the request's approver groups that has one. */
export function channelFor(request: ApprovalRequest, config: ApprovalsConfig): string {
  for (const group of request.requirement.approvers) {
    const channel = config.slack.channels[group];
    if (channel !== undefined) return channel;
  }
  throw new ApprovalRoutingError(request.id, request.requirement.approvers);
}

export interface ApprovalRequestDependencies {
  readonly store: ApprovalSlackStore;
  readonly slack: WebClient;
  readonly slackToken: SlackTokenProvider;
  readonly sfn: TaskCallbacks;
  readonly config: ApprovalsConfig;
  readonly log: StructuredLog;
}

export interface ApprovalRequestResult {
  readonly id: string;
  readonly status: ApprovalStatus;
  /** Where the request message is. */
  readonly slackMessage?: SlackMessageRef;
  /** 'posted' the first time, 'updated' when a retried task found the message, 'completed' when it found the request decided. */
  readonly action: 'posted' | 'updated' | 'completed';
}

export async function requestApproval(event: unknown, deps: ApprovalRequestDependencies): Promise<ApprovalRequestResult> {
  const { request, taskToken } = parseApprovalTask(event);
  const { store } = deps;
  // Routing is checked before anything is stored: a request nobody would see must fail loudly.
  const channel = channelFor(request, deps.config);

  await createOrResume(store, request);
  // The token is stored before the state is read: a vote that closes the request after this read finds
  // this token, and one that closed it before is seen below. Either way the token gets completed.
  await store.putTaskToken(request.id, taskToken);
  const state = await store.get(request.id);
  if (state === undefined) throw new Error(`approval ${request.id} vanished after it was stored`);
  const existing = await store.getSlackMessage(request.id);
  const token = await deps.slackToken();

  if (state.status !== ApprovalStatus.pending) {
    const completion = await completeStoredTask(store, deps.sfn, state);
    if (existing) await updateMessage(deps, token, existing, state);
    deps.log.info('approval.task', { approvalId: request.id, status: state.status, completion: completion ?? 'none' });
    return { id: request.id, status: state.status, action: 'completed', ...(existing ? { slackMessage: existing } : {}) };
  }
  if (existing) {
    await updateMessage(deps, token, existing, state);
    deps.log.info('approval.task', { approvalId: request.id, status: state.status, resumed: true, channel: existing.channel, ts: existing.ts });
    return { id: request.id, status: state.status, slackMessage: existing, action: 'updated' };
  }

  const message = renderApprovalMessage(state);
  let ref: SlackMessageRef;
  try {
    const posted = await deps.slack.chat.postMessage({ token, channel, text: message.text, blocks: message.blocks, unfurl_links: false, unfurl_media: false });
    if (typeof posted.ts !== 'string') throw new Error('chat.postMessage answered without a ts');
    ref = { channel: posted.channel ?? channel, ts: posted.ts };
  } catch (err) {
    throw new ApprovalSlackError('chat.postMessage', { cause: err });
  }
  // Stored before the thread replies: a retry after this point updates this message instead of posting another.
  await store.setSlackMessage(request.id, ref);
  const thread = renderStatementThread(request);
  for (const reply of thread) {
    try {
      await deps.slack.chat.postMessage({ token, channel: ref.channel, thread_ts: ref.ts, text: reply.text, blocks: reply.blocks, unfurl_links: false, unfurl_media: false });
    } catch (err) {
      throw new ApprovalSlackError('chat.postMessage (thread)', { cause: err });
    }
  }
  deps.log.info('approval.requested', {
    approvalId: request.id,
    requester: { issuer: request.requester.issuer, subject: request.requester.subject },
    target: request.target.name,
    approvers: request.requirement.approvers,
    approvals: request.requirement.approvals,
    expiresAt: request.expiresAt,
    channel: ref.channel,
    ts: ref.ts,
    threadReplies: thread.length,
  });
  return { id: request.id, status: state.status, slackMessage: ref, action: 'posted' };
}

async function createOrResume(store: ApprovalSlackStore, request: ApprovalRequest): Promise<void> {
  const existing = await store.get(request.id);
  if (existing === undefined) {
    try {
      await store.create(newApprovalState(request));
      return;
    } catch (err) {
      // Another attempt created it between the read and the write: judge what it wrote.
      const now = await store.get(request.id);
      if (now === undefined) throw err;
      if (!isDeepStrictEqual(now.request, request)) throw new ApprovalRequestConflictError(request.id);
      return;
    }
  }
  if (!isDeepStrictEqual(existing.request, request)) throw new ApprovalRequestConflictError(request.id);
}

async function updateMessage(deps: ApprovalRequestDependencies, token: string, ref: SlackMessageRef, state: ApprovalState): Promise<void> {
  const message = renderApprovalMessage(state);
  try {
    await deps.slack.chat.update({ token, channel: ref.channel, ts: ref.ts, text: message.text, blocks: message.blocks });
  } catch (err) {
    throw new ApprovalSlackError('chat.update', { cause: err });
  }
}
