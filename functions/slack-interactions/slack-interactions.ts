/**
 * Slack's interactivity requests (a Lambda function URL): the Approve and Deny buttons of a request
 * message and the deny modal's submission.
 *
 * Order of work, and why:
 * 1. The signature is checked over the raw body bytes before anything is parsed (core/approval/slack-signature.ts).
 * 2. The Slack member id (never a display name) maps to a configured approver (approverBySlackUser).
 * 3. The vote is judged by the same rules as `warden approvals` and written conditionally
 *    (recordVote): a double click, two approvers at once or a Slack retry never counts a vote twice.
 * 4. After an accepted vote the message is updated; once the request closed the Step Functions task is
 *    completed. A vote that did not count changes nothing and is answered to the clicker alone.
 *
 * Every attempt, counted or not (bad signatures included), is one `approval.vote` log line.
 *
 * Slack waits 3 seconds for the answer and retries (X-Slack-Retry-Num) when it gets none or an error.
 * The work is a handful of small calls. A retry of a vote already recorded is a duplicate and changes
 * nothing; when the earlier delivery recorded a closing vote but failed before the task was completed,
 * the token is still stored, and the retry completes it.
 *
 * @see https://api.slack.com/interactivity/handling
 */
import { Buffer } from 'node:buffer';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { WebClient } from '@slack/web-api';
import { z } from 'zod';
import { VoteChoice, type ApprovalId, type ApprovalState, type Approver } from '../../core/approval/approval-request.ts';
import { approverBySlackUser, castVote, type VoteResult } from '../../core/approval/approval-rules.ts';
import { ApprovalNotFoundError, recordVote } from '../../core/approval/approval-store.ts';
import {
  DENY_MODAL_CALLBACK_ID,
  DENY_REASON_ACTION_ID,
  DENY_REASON_BLOCK_ID,
  SlackActionId,
  renderApprovalMessage,
  renderClosedMessage,
  renderDenyModal,
  renderRefusal,
} from '../../core/approval/slack-messages.ts';
import { verifySlackRequest } from '../../core/approval/slack-signature.ts';
import {
  completeStoredTask,
  slackErrorCode,
  type ApprovalSlackStore,
  type SlackTokenProvider,
  type StructuredLog,
  type TaskCallbacks,
} from '../approval-request/approval-request.ts';

export { renderClosedMessage };

export interface SlackInteractionDependencies {
  readonly store: ApprovalSlackStore;
  readonly slack: WebClient;
  readonly slackToken: SlackTokenProvider;
  readonly signingSecret: () => Promise<string>;
  readonly approvers: readonly Approver[];
  readonly sfn: TaskCallbacks;
  readonly log: StructuredLog;
  readonly now?: () => Date;
}

export type FunctionUrlResult = APIGatewayProxyStructuredResultV2;

/** Far above any interaction payload Slack sends; a body beyond it is refused before it is hashed. */
export const MAX_BODY_BYTES = 256 * 1024;
const VOTE_CHANNEL = 'slack';

const UserSchema = z.object({ id: z.string().min(1).max(64) });
const BlockActionsSchema = z.object({
  type: z.literal('block_actions'),
  user: UserSchema,
  trigger_id: z.string().optional(),
  channel: z.object({ id: z.string() }).optional(),
  container: z.object({ channel_id: z.string().optional(), message_ts: z.string().optional() }).optional(),
  actions: z.array(z.object({ action_id: z.string(), value: z.string().max(256).optional() })).min(1),
});
const ViewSubmissionSchema = z.object({
  type: z.literal('view_submission'),
  user: UserSchema,
  view: z.object({
    callback_id: z.string(),
    private_metadata: z.string().max(256),
    state: z.object({ values: z.record(z.string(), z.record(z.string(), z.object({ value: z.string().nullish() }).loose())) }),
  }),
});
type BlockActions = z.infer<typeof BlockActionsSchema>;
type ViewSubmission = z.infer<typeof ViewSubmissionSchema>;

/** What the audit line says about one attempt. */
interface VoteAttempt {
  readonly approvalId?: string;
  readonly slackUserId?: string;
  readonly approverId?: string;
  readonly choice?: VoteChoice;
  readonly outcome: 'accepted' | 'duplicate' | 'refused' | 'rejected';
  /** Why it did not count: a VoteRefusal, 'duplicate', 'unknown_request', 'bad_signature', 'body_too_large'. */
  readonly refused?: string;
  readonly detail?: string;
  readonly status?: string;
}

export async function handleSlackInteraction(event: APIGatewayProxyEventV2, deps: SlackInteractionDependencies): Promise<FunctionUrlResult> {
  const now = (deps.now ?? (() => new Date()))();
  const headers = lowerCaseHeaders(event.headers);
  const retryNum = headers['x-slack-retry-num'];
  const ctx = { deps, now, retry: retryNum !== undefined, retryNum };

  const rawBody = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
  if (rawBody.length > MAX_BODY_BYTES) {
    audit(ctx, { outcome: 'rejected', refused: 'body_too_large' });
    return text(413, 'request too large');
  }
  const verified = verifySlackRequest({
    rawBody,
    timestamp: headers['x-slack-request-timestamp'],
    signature: headers['x-slack-signature'],
    signingSecret: await deps.signingSecret(),
    now,
  });
  if (!verified.ok) {
    audit(ctx, { outcome: 'rejected', refused: 'bad_signature', detail: verified.reason });
    return text(401, 'invalid request signature');
  }

  const payload = parsePayload(rawBody);
  if (payload === undefined) return text(400, 'no interaction payload');
  if (payload.type === 'block_actions') {
    const parsed = BlockActionsSchema.safeParse(payload);
    if (!parsed.success) return text(400, 'malformed block_actions payload');
    return onBlockAction(parsed.data, ctx);
  }
  if (payload.type === 'view_submission') {
    const parsed = ViewSubmissionSchema.safeParse(payload);
    if (!parsed.success) return text(400, 'malformed view_submission payload');
    return onViewSubmission(parsed.data, ctx);
  }
  // Other interactions (view_closed, shortcuts) are not Warden's: acknowledged and ignored.
  return ok();
}

interface Ctx {
  readonly deps: SlackInteractionDependencies;
  readonly now: Date;
  /** A redelivery by Slack of a request it got no timely answer to. */
  readonly retry: boolean;
  readonly retryNum: string | undefined;
}

async function onBlockAction(payload: BlockActions, ctx: Ctx): Promise<FunctionUrlResult> {
  const action = payload.actions[0]!;
  if (action.action_id !== SlackActionId.approve && action.action_id !== SlackActionId.deny) return ok();
  const id = (action.value ?? '') as ApprovalId;
  if (id === '') return text(400, 'the button carries no request id');
  const slackUserId = payload.user.id;
  const approver = approverBySlackUser(ctx.deps.approvers, slackUserId);
  const base = { approvalId: id, slackUserId, ...(approver ? { approverId: approver.id } : {}) };
  const channel = payload.channel?.id ?? payload.container?.channel_id;
  const answer = (message: string) => ephemeral(ctx, channel, slackUserId, message);

  if (action.action_id === SlackActionId.deny) {
    // The vote itself comes with the modal's submission; judged now only so that a click that could not
    // count is answered at once instead of after a reason was typed.
    const state = await ctx.deps.store.get(id);
    if (state === undefined) {
      audit(ctx, { ...base, choice: VoteChoice.deny, outcome: 'refused', refused: 'unknown_request' });
      await answer(`there is no approval request ${id}`);
      return ok();
    }
    const judged = castVote(state, { approver, choice: VoteChoice.deny, reason: 'judged before the reason is asked for', channel: VOTE_CHANNEL, now: ctx.now });
    if (judged.kind === 'refused') {
      audit(ctx, { ...base, choice: VoteChoice.deny, outcome: 'refused', refused: judged.refusal, status: state.status });
      await answer(judged.message);
      return ok();
    }
    if (judged.kind === 'duplicate') {
      audit(ctx, { ...base, choice: VoteChoice.deny, outcome: 'duplicate', refused: 'duplicate', status: state.status });
      await makeUpCompletion(ctx, state);
      if (!ctx.retry) await answer('you already denied this request');
      return ok();
    }
    // A trigger id is valid for 3 seconds: a retry comes later than that, and the first delivery opened the modal.
    if (ctx.retry || payload.trigger_id === undefined) return ok();
    try {
      await ctx.deps.slack.views.open({ token: await ctx.deps.slackToken(), ...renderDenyModal(state.request, payload.trigger_id) });
      ctx.deps.log.info('approval.deny_requested', { ...base, retryNum: ctx.retryNum });
    } catch (err) {
      ctx.deps.log.error('approval.deny_modal_failed', { ...base, slackError: slackErrorCode(err) });
      await answer('the deny dialog could not be opened; please try again');
    }
    return ok();
  }

  const result = await vote(ctx, id, { approver, choice: VoteChoice.approve });
  if (result === undefined) {
    audit(ctx, { ...base, choice: VoteChoice.approve, outcome: 'refused', refused: 'unknown_request' });
    await answer(`there is no approval request ${id}`);
    return ok();
  }
  const fallback = payload.container?.channel_id && payload.container.message_ts ? { channel: payload.container.channel_id, ts: payload.container.message_ts } : undefined;
  await afterVote(ctx, result, { ...base, choice: VoteChoice.approve }, fallback);
  if (result.kind === 'refused') await answer(result.message);
  if (result.kind === 'duplicate' && !ctx.retry) await answer('your approval was already recorded');
  return ok();
}

async function onViewSubmission(payload: ViewSubmission, ctx: Ctx): Promise<FunctionUrlResult> {
  if (payload.view.callback_id !== DENY_MODAL_CALLBACK_ID) return ok();
  const id = payload.view.private_metadata as ApprovalId;
  if (id === '') return text(400, 'the view carries no request id');
  const slackUserId = payload.user.id;
  const approver = approverBySlackUser(ctx.deps.approvers, slackUserId);
  const base = { approvalId: id, slackUserId, ...(approver ? { approverId: approver.id } : {}), choice: VoteChoice.deny };
  const reason = payload.view.state.values[DENY_REASON_BLOCK_ID]?.[DENY_REASON_ACTION_ID]?.value ?? '';

  const result = await vote(ctx, id, { approver, choice: VoteChoice.deny, reason });
  if (result === undefined) {
    audit(ctx, { ...base, outcome: 'refused', refused: 'unknown_request' });
    return modalError(`there is no approval request ${id}`);
  }
  await afterVote(ctx, result, base, undefined);
  // The modal stays open and shows why when the denial did not count; it closes otherwise.
  return result.kind === 'refused' ? modalError(result.message) : ok();
}

/** Records the vote; undefined when the request does not exist. */
async function vote(ctx: Ctx, id: ApprovalId, v: { approver: Approver | undefined; choice: VoteChoice; reason?: string }): Promise<VoteResult | undefined> {
  try {
    return await recordVote(ctx.deps.store, id, { ...v, channel: VOTE_CHANNEL, now: ctx.now });
  } catch (err) {
    if (err instanceof ApprovalNotFoundError) return undefined;
    throw err;
  }
}

/** Logs the attempt; after an accepted vote updates the message and, once closed, completes the task. */
async function afterVote(
  ctx: Ctx,
  result: VoteResult,
  base: { approvalId: string; slackUserId: string; approverId?: string; choice: VoteChoice },
  fallback: { channel: string; ts: string } | undefined,
): Promise<void> {
  const status = result.state.status;
  if (result.kind === 'refused') {
    audit(ctx, { ...base, outcome: 'refused', refused: result.refusal, status });
    return;
  }
  if (result.kind === 'duplicate') {
    audit(ctx, { ...base, outcome: 'duplicate', refused: 'duplicate', status });
    await makeUpCompletion(ctx, result.state);
    return;
  }
  audit(ctx, { ...base, outcome: 'accepted', status });
  // Both at once: Slack gives the whole interaction 3 seconds. A failed message update is logged and
  // does not undo the vote; a failed completion fails the request, so that Slack retries it.
  await Promise.all([updateMessage(ctx, result.state, fallback), result.closed ? complete(ctx, result.state) : undefined]);
}

/** A duplicate of a closing vote whose task was not completed (the earlier delivery failed midway). */
async function makeUpCompletion(ctx: Ctx, state: ApprovalState): Promise<void> {
  if (state.status !== 'approved' && state.status !== 'denied') return;
  if ((await ctx.deps.store.getTaskToken(state.request.id)) === undefined) return;
  await Promise.all([updateMessage(ctx, state, undefined), complete(ctx, state)]);
}

async function complete(ctx: Ctx, state: ApprovalState): Promise<void> {
  const result = await completeStoredTask(ctx.deps.store, ctx.deps.sfn, state);
  ctx.deps.log.info('approval.closed', {
    approvalId: state.request.id,
    status: state.status,
    decidedAt: state.decidedAt,
    votes: state.votes.map((v) => ({ approverId: v.approverId, choice: v.choice, at: v.at, channel: v.channel })),
    task: result ?? 'no_task_token',
  });
}

async function updateMessage(ctx: Ctx, state: ApprovalState, fallback: { channel: string; ts: string } | undefined): Promise<void> {
  try {
    const ref = (await ctx.deps.store.getSlackMessage(state.request.id)) ?? fallback;
    if (ref === undefined) return;
    const message = renderApprovalMessage(state);
    await ctx.deps.slack.chat.update({ token: await ctx.deps.slackToken(), channel: ref.channel, ts: ref.ts, text: message.text, blocks: message.blocks });
  } catch (err) {
    ctx.deps.log.error('approval.message_update_failed', { approvalId: state.request.id, slackError: slackErrorCode(err) });
  }
}

/** Answers only the clicker; a failure to answer is logged, never retried by failing the request. */
async function ephemeral(ctx: Ctx, channel: string | undefined, user: string, message: string): Promise<void> {
  if (channel === undefined) return;
  try {
    const m = renderRefusal(message);
    await ctx.deps.slack.chat.postEphemeral({ token: await ctx.deps.slackToken(), channel, user, text: m.text, blocks: m.blocks });
  } catch (err) {
    ctx.deps.log.warn('approval.ephemeral_failed', { slackUserId: user, slackError: slackErrorCode(err) });
  }
}

/** One structured line per attempt (AU-10: who voted how on what, and whether it counted). Never a token or a body. */
function audit(ctx: Ctx, attempt: VoteAttempt): void {
  const line = { audit: 'approval.vote', channel: VOTE_CHANNEL, at: ctx.now.toISOString(), ...attempt, ...(ctx.retryNum !== undefined ? { retryNum: ctx.retryNum } : {}) };
  if (attempt.outcome === 'rejected') ctx.deps.log.warn('approval.vote', line);
  else ctx.deps.log.info('approval.vote', line);
}

function parsePayload(rawBody: Buffer): { type?: unknown } | undefined {
  const payload = new URLSearchParams(rawBody.toString('utf8')).get('payload');
  if (payload === null) return undefined;
  try {
    const parsed: unknown = JSON.parse(payload);
    return typeof parsed === 'object' && parsed !== null ? (parsed as { type?: unknown }) : undefined;
  } catch {
    return undefined;
  }
}

function lowerCaseHeaders(headers: APIGatewayProxyEventV2['headers'] | undefined): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers ?? {})) out[k.toLowerCase()] = v;
  return out;
}

function ok(): FunctionUrlResult {
  return { statusCode: 200, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: '' };
}

function text(statusCode: number, body: string): FunctionUrlResult {
  return { statusCode, headers: { 'content-type': 'text/plain; charset=utf-8' }, body };
}

function modalError(message: string): FunctionUrlResult {
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ response_action: 'errors', errors: { [DENY_REASON_BLOCK_ID]: message.slice(0, 150) } }),
  };
}
