/** A held statement's approval request as the tests of the approval functions and adapters use it. */
import type { ApprovalId, ApprovalMode, ApprovalRequest } from '../../core/approval/approval-request.ts';

export interface SampleApprovalRequestOptions {
  /** Default: a new `apr-sample-…` id. */
  id?: string;
  /** Milliseconds since the epoch; default: now. */
  createdAt?: number;
  /** Milliseconds since the epoch; default: 15 minutes after createdAt. */
  expiresAt?: number;
  /** Approvals needed from db-approvers; default 1. */
  approvals?: number;
  /** The requester's subject; default etl-bot. */
  subject?: string;
  /** The target's name; default ledger. */
  target?: string;
  mode?: ApprovalMode;
  /** Default: 'd' × 64. */
  digest?: string;
  policyReason?: string;
}

let sequence = 0;

/** `DELETE FROM accounts WHERE id = 7` by etl-bot on the production target ledger, held by sql.write.production-approval. */
export function sampleApprovalRequest(o: SampleApprovalRequestOptions = {}): ApprovalRequest {
  const createdAt = o.createdAt ?? Date.now();
  return {
    id: (o.id ?? `apr-sample-${process.pid}-${++sequence}`) as ApprovalId,
    requester: { issuer: 'https://issuer.example', subject: o.subject ?? 'etl-bot', groups: ['writers'] },
    target: { name: o.target ?? 'ledger', kind: 'postgres', environment: 'production' },
    sessionId: 'sess-1',
    statement: { text: 'DELETE FROM accounts WHERE id = 7', fingerprint: 'fp', digest: o.digest ?? 'd'.repeat(64), command: 'DELETE', tables: ['public.accounts'], risks: [] },
    policies: ['sql.write.production-approval'],
    ...(o.policyReason !== undefined ? { policyReason: o.policyReason } : {}),
    requirement: { approvers: ['db-approvers'], approvals: o.approvals ?? 1 },
    mode: o.mode ?? 'wait',
    createdAt: new Date(createdAt).toISOString(),
    expiresAt: new Date(o.expiresAt ?? createdAt + 15 * 60_000).toISOString(),
  };
}
