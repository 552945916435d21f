/**
 * The proxy's side of an approval: hand the request over, learn its outcome. Locally the request is a
 * file that `warden approvals` votes on; on AWS it is an execution of statemachines/approval.asl.json
 * that posts to Slack, with the outcome read from the approvals table.
 */
import type { ApprovalId, ApprovalRequest, ApprovalState } from './approval-request.ts';

export interface ApprovalService {
  /** Records the request and notifies its approvers. */
  submit(request: ApprovalRequest): Promise<void>;
  /** Resolves with the closed state (approved, denied, expired, withdrawn); rejects if `signal` aborts. */
  outcome(id: ApprovalId, signal?: AbortSignal): Promise<ApprovalState>;
  /** The agent gave up (cancel, disconnect): close the request if still pending and tell the approvers. */
  withdraw(id: ApprovalId, why: string): Promise<void>;
  /**
   * Async mode: the approved, unused request of this requester for exactly this statement (digest),
   * marked used; undefined if there is none.
   */
  useGrant(requester: { issuer: string; subject: string }, target: string, digest: string): Promise<ApprovalState | undefined>;
  /** Current state, for progress notices. */
  get(id: ApprovalId): Promise<ApprovalState | undefined>;
}
