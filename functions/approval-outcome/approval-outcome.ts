/**
 * The last step of an approval: record how the request ended where nobody has yet, and show it in the
 * Slack message. Two events arrive here:
 *
 * - the state machine's `RecordOutcome` task: `{ requestId, outcome, error?, cause? }`
 *   (statemachines/approval.asl.json);
 * - EventBridge's "Step Functions Execution Status Change" with status `ABORTED`: the proxy withdraws a
 *   request by stopping its execution, and a stopped execution runs no state any more.
 *
 * Approvals and denials were recorded with the votes (functions/slack-interactions), so they are only
 * read. An expiry or a withdrawal goes through the core rules; a failed workflow closes a pending request
 * as denied (fail closed). Every write is conditional on the state's revision, and the Slack update
 * rewrites the same message, so a retried invocation changes nothing twice.
 */
import { z } from 'zod';
import { ApprovalStatus, type ApprovalId, type ApprovalState } from '../../core/approval/approval-request.ts';
import { expire, withdraw } from '../../core/approval/approval-rules.ts';
import { ApprovalNotFoundError, transition, type ApprovalStore } from '../../core/approval/approval-store.ts';
import { renderClosedMessage, type SlackMessage } from '../../core/approval/slack-messages.ts';
import type { SlackMessageRef } from '../../adapters/aws/dynamodb-approval-store.ts';

export const WorkflowOutcome = {
  approved: 'approved',
  denied: 'denied',
  expired: 'expired',
  withdrawn: 'withdrawn',
  failed: 'failed',
} as const;
export type WorkflowOutcome = (typeof WorkflowOutcome)[keyof typeof WorkflowOutcome];

/** Why a request closed when the workflow itself failed (the approval request function, permissions, …). */
export const WORKFLOW_FAILED_REASON = 'approval workflow failed';
/** Why a request closed when its execution was stopped without a cause. */
export const WITHDRAWN_REASON = 'withdrawn by the client';

/** Step Functions execution names (= request ids) are at most 80 characters. */
const requestId = z.string().min(1).max(80);

/** What RecordOutcome sends: `$.record` of the state machine. */
export const OutcomeRecordSchema = z.strictObject({
  requestId,
  outcome: z.enum(['approved', 'denied', 'expired', 'withdrawn', 'failed']),
  error: z.string().max(256).optional(),
  cause: z.string().max(32_768).optional(),
});
export type OutcomeRecord = z.infer<typeof OutcomeRecordSchema>;

/**
 * The EventBridge event, loosely: EventBridge may add fields, and only these are read.
 * @see https://docs.aws.amazon.com/step-functions/latest/dg/cw-events.html
 */
export const ExecutionStatusChangeSchema = z.object({
  source: z.literal('aws.states'),
  'detail-type': z.literal('Step Functions Execution Status Change'),
  detail: z.object({
    executionArn: z.string().min(1),
    stateMachineArn: z.string().min(1),
    name: requestId,
    status: z.string().min(1),
    cause: z.string().nullish(),
  }),
});
export type ExecutionStatusChange = z.infer<typeof ExecutionStatusChangeSchema>;

export type OutcomeEvent =
  | { readonly kind: 'record'; readonly record: OutcomeRecord }
  | { readonly kind: 'execution-status'; readonly change: ExecutionStatusChange };

export class ApprovalOutcomeEventInvalidError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid approval outcome event: ${problems.join('; ')}`);
    this.name = 'ApprovalOutcomeEventInvalidError';
  }
}

/** Tells the two event kinds apart by EventBridge's `detail-type` and validates the one it is. */
export function parseOutcomeEvent(event: unknown): OutcomeEvent {
  if (typeof event === 'object' && event !== null && 'detail-type' in event) {
    const r = ExecutionStatusChangeSchema.safeParse(event);
    if (!r.success) throw invalidEvent(r.error);
    return { kind: 'execution-status', change: r.data };
  }
  const r = OutcomeRecordSchema.safeParse(event);
  if (!r.success) throw invalidEvent(r.error);
  return { kind: 'record', record: r.data };
}

function invalidEvent(error: z.ZodError): ApprovalOutcomeEventInvalidError {
  return new ApprovalOutcomeEventInvalidError(error.issues.slice(0, 10).map((i) => `${i.path.map(String).join('.') || '(event)'}: ${i.message}`));
}

/** The approvals table as this function uses it (DynamoDbApprovalStore). */
export interface OutcomeStore extends ApprovalStore {
  getSlackMessage(id: ApprovalId): Promise<SlackMessageRef | undefined>;
}

/** chat.update of a Slack WebClient. */
export interface SlackChatUpdater {
  chat: {
    update(args: { channel: string; ts: string } & SlackMessage): Promise<{ ok?: boolean; error?: string }>;
  };
}

/** Structured log lines (a Powertools Logger fits). */
export interface OutcomeLogger {
  info(message: string, attributes: Record<string, unknown>): void;
  warn(message: string, attributes: Record<string, unknown>): void;
}

export interface ApprovalOutcomeDeps {
  readonly store: OutcomeStore;
  readonly slack: SlackChatUpdater;
  readonly logger?: OutcomeLogger;
  readonly now?: () => Date;
}

export interface OutcomeResult {
  readonly requestId: string;
  /** The request's status after this call; undefined when it is not in the table, or the event was ignored. */
  readonly status?: ApprovalStatus;
  /** Whether this call closed the request (false when someone had already). */
  readonly closedNow: boolean;
  readonly slackMessageUpdated: boolean;
  /** Set when the event asked for nothing (a status other than ABORTED). */
  readonly ignored?: string;
}

/** Records what an event says and updates the Slack message. */
export async function handleOutcomeEvent(deps: ApprovalOutcomeDeps, event: OutcomeEvent): Promise<OutcomeResult> {
  if (event.kind === 'record') return recordOutcome(deps, event.record.requestId as ApprovalId, event.record.outcome, event.record.cause);
  const { detail } = event.change;
  if (detail.status !== 'ABORTED') {
    return { requestId: detail.name, closedNow: false, slackMessageUpdated: false, ignored: `execution status ${detail.status}` };
  }
  const why = detail.cause?.trim() ? detail.cause.trim() : WITHDRAWN_REASON;
  return recordOutcome(deps, detail.name as ApprovalId, WorkflowOutcome.withdrawn, why);
}

async function recordOutcome(deps: ApprovalOutcomeDeps, id: ApprovalId, outcome: WorkflowOutcome, cause: string | undefined): Promise<OutcomeResult> {
  const now = (deps.now ?? (() => new Date()))();
  let before: ApprovalState | undefined;
  let after: ApprovalState | undefined;
  const step = (apply: (s: ApprovalState) => ApprovalState) => (s: ApprovalState) => {
    before = s;
    return apply(s);
  };
  try {
    switch (outcome) {
      case WorkflowOutcome.expired:
        // Step Functions' timer is the authority: once it fired the task token is dead and no vote can
        // complete the wait, so the request closes even if this clock is a little behind expiresAt.
        after = await transition(deps.store, id, step((s) => expire(s, new Date(Math.max(now.getTime(), Date.parse(s.request.expiresAt) || 0)))));
        break;
      case WorkflowOutcome.withdrawn:
        after = await transition(deps.store, id, step((s) => withdraw(s, now, cause?.trim() || WITHDRAWN_REASON)));
        break;
      case WorkflowOutcome.failed:
        after = await transition(deps.store, id, step((s) => failClosed(s, now)));
        break;
      case WorkflowOutcome.approved:
      case WorkflowOutcome.denied:
        after = await deps.store.get(id);
        before = after;
        break;
    }
  } catch (err) {
    if (!(err instanceof ApprovalNotFoundError)) throw err;
  }
  if (after === undefined) {
    // The approval request function failed (or was stopped) before it created the request: nothing was
    // posted to Slack and nobody can vote, so there is nothing to close.
    deps.logger?.warn('approval request not found', { requestId: id, outcome });
    return { requestId: id, closedNow: false, slackMessageUpdated: false };
  }
  const closedNow = before !== undefined && before.status === ApprovalStatus.pending && after.status !== ApprovalStatus.pending;
  if (after.status !== expectedStatus(outcome)) {
    // Someone closed it first (a denial just before the timeout, an approval racing a withdrawal): the
    // table keeps the first outcome, and so does the Slack message.
    deps.logger?.info('approval request already closed differently', { requestId: id, outcome, status: after.status });
  }
  const slackMessageUpdated = after.status === ApprovalStatus.pending ? false : await updateSlackMessage(deps, after);
  deps.logger?.info('approval outcome recorded', { requestId: id, outcome, status: after.status, closedNow, slackMessageUpdated });
  return { requestId: id, status: after.status, closedNow, slackMessageUpdated };
}

/**
 * A failed workflow denies a pending request: nobody can complete its wait any more, and a request that
 * can never be decided must not stay open (fail closed). A closed request is returned unchanged.
 */
export function failClosed(state: ApprovalState, now: Date): ApprovalState {
  if (state.status !== ApprovalStatus.pending) return state;
  return {
    ...state,
    revision: state.revision + 1,
    status: ApprovalStatus.denied,
    decidedAt: now.toISOString(),
    outcomeReason: WORKFLOW_FAILED_REASON,
  };
}

function expectedStatus(outcome: WorkflowOutcome): ApprovalStatus {
  return outcome === WorkflowOutcome.failed ? ApprovalStatus.denied : outcome;
}

/**
 * Rewrites the request message to its closed form. A message that is gone, a channel the app left or a
 * revoked token will not get better by retrying: that is logged and the outcome stands. Network errors,
 * HTTP errors and rate limits are thrown, so the invocation is retried.
 */
async function updateSlackMessage(deps: ApprovalOutcomeDeps, state: ApprovalState): Promise<boolean> {
  const ref = await deps.store.getSlackMessage(state.request.id);
  if (ref === undefined) {
    deps.logger?.warn('no Slack message to update', { requestId: state.request.id });
    return false;
  }
  try {
    const answer = await deps.slack.chat.update({ channel: ref.channel, ts: ref.ts, ...renderClosedMessage(state) });
    if (answer.ok === false) throw new SlackUpdateRefusedError(answer.error);
    return true;
  } catch (err) {
    const platformError = err instanceof SlackUpdateRefusedError ? err.error : slackPlatformError(err);
    if (platformError === undefined) throw err;
    deps.logger?.warn('Slack refused the message update', { requestId: state.request.id, channel: ref.channel, error: platformError });
    return false;
  }
}

/** A WebClient throws `ok: false` answers as `slack_webapi_platform_error` with `data.error`. */
function slackPlatformError(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || (err as { code?: unknown }).code !== 'slack_webapi_platform_error') return undefined;
  const error = (err as { data?: { error?: unknown } }).data?.error;
  return typeof error === 'string' ? error : 'unknown_error';
}

class SlackUpdateRefusedError extends Error {
  constructor(readonly error = 'unknown_error') {
    super(`Slack answered ${error}`);
    this.name = 'SlackUpdateRefusedError';
  }
}
