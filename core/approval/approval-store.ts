/**
 * Where approval requests and their votes are kept: files on the embedded default, a DynamoDB table on
 * AWS. Every change is a conditional write on the state's revision, so two approvers clicking at once,
 * a double click or a retried Slack delivery can never lose or double-count a vote.
 */
import type { ApprovalId, ApprovalState } from './approval-request.ts';
import { castVote, type VoteInput, type VoteResult } from './approval-rules.ts';

export interface ApprovalStore {
  /** Stores a new request; rejects if the id exists. */
  create(state: ApprovalState): Promise<void>;
  get(id: ApprovalId): Promise<ApprovalState | undefined>;
  /** Replaces the stored state if its revision is still `next.revision - 1`; false when someone else won. */
  replace(next: ApprovalState): Promise<boolean>;
  /** Requests still pending, oldest first. */
  listPending(): Promise<ApprovalState[]>;
}

export class ApprovalNotFoundError extends Error {
  constructor(readonly id: string) {
    super(`no approval request ${id}`);
    this.name = 'ApprovalNotFoundError';
  }
}

/**
 * Loads, applies the vote rules and writes back conditionally, retrying when another writer got there
 * first (the vote is re-judged against what they wrote).
 */
export async function recordVote(store: ApprovalStore, id: ApprovalId, input: VoteInput, attempts = 5): Promise<VoteResult> {
  for (let i = 0; ; i++) {
    const state = await store.get(id);
    if (state === undefined) throw new ApprovalNotFoundError(id);
    const result = castVote(state, input);
    if (result.kind !== 'accepted') return result;
    if (await store.replace(result.state)) return result;
    if (i + 1 >= attempts) throw new Error(`approval ${id}: too many concurrent writers`);
  }
}

/** Applies a state transition (expire, withdraw, useGrant) with the same conditional write. */
export async function transition(
  store: ApprovalStore,
  id: ApprovalId,
  step: (state: ApprovalState) => ApprovalState | undefined,
  attempts = 5,
): Promise<ApprovalState | undefined> {
  for (let i = 0; ; i++) {
    const state = await store.get(id);
    if (state === undefined) throw new ApprovalNotFoundError(id);
    const next = step(state);
    if (next === undefined) return undefined;
    if (next === state) return state;
    if (await store.replace(next)) return next;
    if (i + 1 >= attempts) throw new Error(`approval ${id}: too many concurrent writers`);
  }
}
