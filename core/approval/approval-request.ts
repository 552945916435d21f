/**
 * What an approval is about, and where it stands. The same records flow through the embedded default
 * (files under the state folder, `warden approvals`) and AWS (DynamoDB, Step Functions, Slack), so
 * every rule that decides a vote lives in core (approval-rules.ts) and both paths call it.
 */
import type { ApprovalRequirement, TargetRef } from '../policy/decision.ts';

export type ApprovalId = string & { readonly __brand: 'ApprovalId' };

export const ApprovalStatus = {
  pending: 'pending',
  approved: 'approved',
  denied: 'denied',
  expired: 'expired',
  withdrawn: 'withdrawn',
} as const;
export type ApprovalStatus = (typeof ApprovalStatus)[keyof typeof ApprovalStatus];
export type ApprovalOutcome = Exclude<ApprovalStatus, 'pending'>;

export const ApprovalMode = { wait: 'wait', async: 'async' } as const;
export type ApprovalMode = (typeof ApprovalMode)[keyof typeof ApprovalMode];

export const VoteChoice = { approve: 'approve', deny: 'deny' } as const;
export type VoteChoice = (typeof VoteChoice)[keyof typeof VoteChoice];

/** Who asked: the agent's verified identity. */
export interface Requester {
  readonly issuer: string;
  readonly subject: string;
  readonly groups: readonly string[];
}

/** The statement held, as the approver sees it and as a grant must match it. */
export interface HeldStatement {
  readonly text: string;
  /** libpg-query fingerprint of the text (same shape, different literals = same fingerprint). */
  readonly fingerprint: string;
  /** SHA-256 (hex) of the exact text and bound parameters: what an async grant allows to run once. */
  readonly digest: string;
  readonly command: string;
  readonly tables: readonly string[];
  readonly risks: readonly string[];
}

export interface ApprovalRequest {
  readonly id: ApprovalId;
  readonly requester: Requester;
  readonly target: TargetRef;
  readonly sessionId: string;
  readonly statement: HeldStatement;
  /** The agent's own words (`/* warden:reason="..." *\/`), if it gave any. */
  readonly reason?: string;
  /** Policies that held the statement and their reason. */
  readonly policies: readonly string[];
  readonly policyReason?: string;
  readonly requirement: ApprovalRequirement;
  readonly mode: ApprovalMode;
  /** ISO-8601. */
  readonly createdAt: string;
  readonly expiresAt: string;
}

/** An approver as configured: never matched by display name. */
export interface Approver {
  /** Stable identity, e.g. an e-mail address or the OIDC subject of the person. */
  readonly id: string;
  readonly groups: readonly string[];
  /** Slack member id (U…/W…) that maps to this approver. */
  readonly slackUserId?: string;
  /** OIDC identities of this person; a request from any of them cannot be approved by them. */
  readonly identities?: readonly { readonly issuer: string; readonly subject: string }[];
}

export interface ApprovalVote {
  readonly approverId: string;
  readonly choice: VoteChoice;
  readonly reason?: string;
  /** ISO-8601. */
  readonly at: string;
  /** Where the vote came from: 'slack', 'cli'. */
  readonly channel: string;
}

export interface ApprovalState {
  readonly request: ApprovalRequest;
  readonly status: ApprovalStatus;
  readonly votes: readonly ApprovalVote[];
  /** Bumped by every change; stores write conditionally on it (optimistic concurrency). */
  readonly revision: number;
  /** Set once status leaves pending. */
  readonly decidedAt?: string;
  /** Why it closed: the denier's reason, 'timed out', 'withdrawn by the client'. */
  readonly outcomeReason?: string;
  /** Async mode: when the single-use grant was used (the statement ran). */
  readonly executedAt?: string;
}

export function newApprovalState(request: ApprovalRequest): ApprovalState {
  return { request, status: ApprovalStatus.pending, votes: [], revision: 0 };
}
