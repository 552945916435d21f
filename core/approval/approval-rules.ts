/**
 * The rules of a vote, shared by every way of casting one (Slack button, `warden approvals approve`):
 * only configured approvers of a required group, never the requester, never after the request closed
 * or expired, one vote per approver (a repeat is a no-op, so double clicks and retries are harmless),
 * one denial closes the request, the required number of distinct approvals approves it.
 */
import {
  ApprovalStatus,
  VoteChoice,
  type ApprovalState,
  type ApprovalVote,
  type Approver,
  type Requester,
} from './approval-request.ts';

export const VoteRefusal = {
  unknownApprover: 'unknown_approver',
  notInGroup: 'not_in_group',
  selfApproval: 'self_approval',
  closed: 'closed',
  expired: 'expired',
  reasonRequired: 'reason_required',
} as const;
export type VoteRefusal = (typeof VoteRefusal)[keyof typeof VoteRefusal];

export type VoteResult =
  /** The vote counts; `state` is the new state (closed when the threshold was met or on a denial). */
  | { readonly kind: 'accepted'; readonly state: ApprovalState; readonly vote: ApprovalVote; readonly closed: boolean }
  /** The same approver already voted the same way: nothing changes. */
  | { readonly kind: 'duplicate'; readonly state: ApprovalState }
  | { readonly kind: 'refused'; readonly refusal: VoteRefusal; readonly message: string; readonly state: ApprovalState };

export interface VoteInput {
  /** Undefined when the voter could not be mapped to a configured approver. */
  readonly approver: Approver | undefined;
  readonly choice: VoteChoice;
  readonly reason?: string;
  readonly channel: string;
  readonly now: Date;
}

export function castVote(state: ApprovalState, input: VoteInput): VoteResult {
  const { request } = state;
  const refuse = (refusal: VoteRefusal, message: string): VoteResult => ({ kind: 'refused', refusal, message, state });
  const approver = input.approver;
  if (approver === undefined) return refuse(VoteRefusal.unknownApprover, 'you are not a configured approver');
  if (state.status !== ApprovalStatus.pending) {
    const earlier = state.votes.find((v) => v.approverId === approver.id);
    if (earlier?.choice === input.choice) return { kind: 'duplicate', state };
    return refuse(VoteRefusal.closed, `request ${request.id} is already ${state.status}`);
  }
  if (input.now.getTime() >= Date.parse(request.expiresAt)) {
    return refuse(VoteRefusal.expired, `request ${request.id} expired at ${request.expiresAt}`);
  }
  if (isRequester(approver, request.requester)) {
    return refuse(VoteRefusal.selfApproval, 'nobody may decide their own request');
  }
  const required = request.requirement.approvers;
  if (!approver.groups.some((g) => required.includes(g))) {
    return refuse(VoteRefusal.notInGroup, `approvers of this request must be in ${required.join(' or ')}`);
  }
  const earlier = state.votes.find((v) => v.approverId === approver.id);
  if (earlier !== undefined) {
    if (earlier.choice === input.choice) return { kind: 'duplicate', state };
    // Changing one's mind from approve to deny is allowed while pending; the denial closes it.
    if (input.choice === VoteChoice.approve) return refuse(VoteRefusal.closed, 'you already denied this request');
  }
  const reason = input.reason?.trim();
  if (input.choice === VoteChoice.deny && !reason) {
    return refuse(VoteRefusal.reasonRequired, 'a denial needs a reason, which the agent will see');
  }
  const vote: ApprovalVote = {
    approverId: approver.id,
    choice: input.choice,
    ...(reason ? { reason } : {}),
    at: input.now.toISOString(),
    channel: input.channel,
  };
  const votes = [...state.votes.filter((v) => v.approverId !== approver.id), vote];
  if (input.choice === VoteChoice.deny) {
    return {
      kind: 'accepted',
      vote,
      closed: true,
      state: { ...state, revision: state.revision + 1, votes, status: ApprovalStatus.denied, decidedAt: vote.at, outcomeReason: reason },
    };
  }
  const approvals = new Set(votes.filter((v) => v.choice === VoteChoice.approve).map((v) => v.approverId)).size;
  if (approvals >= request.requirement.approvals) {
    return { kind: 'accepted', vote, closed: true, state: { ...state, revision: state.revision + 1, votes, status: ApprovalStatus.approved, decidedAt: vote.at } };
  }
  return { kind: 'accepted', vote, closed: false, state: { ...state, revision: state.revision + 1, votes } };
}

/** Closes a pending request that ran out of time; anything else is returned unchanged. */
export function expire(state: ApprovalState, now: Date): ApprovalState {
  if (state.status !== ApprovalStatus.pending || now.getTime() < Date.parse(state.request.expiresAt)) return state;
  return { ...state, revision: state.revision + 1, status: ApprovalStatus.expired, decidedAt: now.toISOString(), outcomeReason: 'no decision before the request expired' };
}

/** Closes a pending request its agent gave up on (cancel, disconnect). */
export function withdraw(state: ApprovalState, now: Date, why: string): ApprovalState {
  if (state.status !== ApprovalStatus.pending) return state;
  return { ...state, revision: state.revision + 1, status: ApprovalStatus.withdrawn, decidedAt: now.toISOString(), outcomeReason: why };
}

/** How many more approvals the request needs. */
export function approvalsMissing(state: ApprovalState): number {
  const approvals = new Set(state.votes.filter((v) => v.choice === VoteChoice.approve).map((v) => v.approverId)).size;
  return Math.max(0, state.request.requirement.approvals - approvals);
}

function isRequester(approver: Approver, requester: Requester): boolean {
  if (approver.id === requester.subject) return true;
  return (approver.identities ?? []).some((i) => i.issuer === requester.issuer && i.subject === requester.subject);
}

/** Finds the configured approver behind a Slack member id (never by display name). */
export function approverBySlackUser(approvers: readonly Approver[], slackUserId: string): Approver | undefined {
  return approvers.find((a) => a.slackUserId !== undefined && a.slackUserId === slackUserId);
}

export function approverById(approvers: readonly Approver[], id: string): Approver | undefined {
  return approvers.find((a) => a.id === id);
}

/**
 * Marks an approved async request as used. Undefined when it cannot be used: not approved, already used,
 * or past the grant's time to live (counted from the approval).
 */
export function useGrant(state: ApprovalState, now: Date, ttlMs: number): ApprovalState | undefined {
  if (state.status !== ApprovalStatus.approved || state.executedAt !== undefined || state.decidedAt === undefined) return undefined;
  if (now.getTime() > Date.parse(state.decidedAt) + ttlMs) return undefined;
  return { ...state, revision: state.revision + 1, executedAt: now.toISOString() };
}
