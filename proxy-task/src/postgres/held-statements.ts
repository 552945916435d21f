/**
 * Statements that policy holds for approval, for one session: the request is handed to the
 * ApprovalService and the session learns its outcome.
 *
 * - `wait`: the statement is held (nothing reaches the target) while NoticeResponses tell the agent which
 *   request it waits for; approved, it runs; denied, expired or withdrawn, the agent gets the reason.
 * - `async`: the agent gets an error naming the request at once; once approved, the same identity may run
 *   exactly the same statement (text and parameters) once, within the grant's time to live.
 *
 * A cancel (CancelRequest) or a disconnect withdraws the pending request. Every step is an audit event of
 * the session, linked to the statement: requested, each vote with its approver, closed, executed.
 */
import { createHash } from 'node:crypto';
import { agentReasonOf } from '../../../core/approval/agent-reason.ts';
import { ApprovalMode, ApprovalStatus, type ApprovalId, type ApprovalRequest, type ApprovalState } from '../../../core/approval/approval-request.ts';
import { approvalsMissing } from '../../../core/approval/approval-rules.ts';
import type { ApprovalService } from '../../../core/approval/approval-service.ts';
import type { SessionAudit } from '../../../core/audit/ports.ts';
import type { Principal } from '../../../core/identity/principal.ts';
import type { Decision, TargetRef } from '../../../core/policy/decision.ts';
import { fingerprintSql } from '../../../core/sql/parser.ts';
import type { StatementClass } from '../../../core/sql/classify.ts';
import { noticeResponse, type NoticeFields } from './backend-messages.ts';
import { SqlState } from './protocol-codes.ts';

export interface HeldStatementsOptions {
  readonly service: ApprovalService;
  readonly newId: () => ApprovalId;
  readonly mode: ApprovalMode;
  readonly timeoutMs: number;
  readonly grantTtlMs: number;
  readonly noticeIntervalMs: number;
  readonly sessionId: string;
  readonly principal: Principal;
  readonly target: TargetRef;
  readonly audit: SessionAudit;
  /** Writes a message to the client (progress notices). */
  readonly toClient: (message: Buffer) => void;
  readonly log: { warn(msg: string, o?: object): void; error(msg: string, o?: object): void };
  readonly now?: () => Date;
}

export interface HeldInput {
  readonly text: string;
  readonly params: readonly (string | null)[] | undefined;
  readonly statement: StatementClass;
  readonly decision: Decision;
  /** The id the statement gets in this session's trail, whatever the outcome. */
  readonly statementId: number;
}

export type HoldResult =
  /** Approved (now, or earlier with a grant): run it, recorded with this decision. */
  | { readonly kind: 'run'; readonly decision: Decision; readonly approvalId: string }
  /** Not run: the decision to record and what the agent is told. */
  | { readonly kind: 'refuse'; readonly decision: Decision; readonly answer: NoticeFields };

export class HeldStatements {
  private pending: { id: ApprovalId; controller: AbortController; done: Promise<unknown> } | undefined;
  private readonly now: () => Date;

  constructor(private readonly o: HeldStatementsOptions) {
    this.now = o.now ?? (() => new Date());
  }

  /** Holds one statement until its approval closes (wait), or answers at once (async). Never rejects. */
  async hold(input: HeldInput): Promise<HoldResult> {
    const digest = statementDigest(input.text, input.params);
    if (this.o.mode === ApprovalMode.async) {
      const grant = await this.o.service.useGrant({ issuer: this.o.principal.issuer, subject: this.o.principal.subject }, this.o.target.name, digest).catch((err: unknown) => {
        this.o.log.error('approvals: could not look up a grant; treating it as absent', { err });
        return undefined;
      });
      if (grant) {
        await this.record(grant, input.statementId);
        return this.approved(grant, input);
      }
    }
    const request = this.requestFor(input, digest);
    try {
      await this.o.service.submit(request);
      await this.o.audit.append(
        {
          type: 'approval.requested',
          approvalId: request.id,
          statementId: input.statementId,
          mode: request.mode,
          approvers: [...request.requirement.approvers],
          approvals: request.requirement.approvals,
          policies: [...request.policies],
          ...(request.reason ? { reason: request.reason } : {}),
          expiresAt: request.expiresAt,
        },
        { durable: true },
      );
    } catch (err) {
      this.o.log.error('approvals: the request could not be made; refusing the statement (fail closed)', { err });
      return this.refusal(input.decision, `approval required, but the request could not be made: ${input.decision.reason ?? 'held by policy'}`, SqlState.insufficientPrivilege, 'try again later, or ask an operator to check the approval service');
    }
    const needs = needsText(input.decision);
    if (this.o.mode === ApprovalMode.async) {
      return this.refusal(
        input.decision,
        `approval required: ${input.decision.reason ?? 'held by policy'}; request ${request.id} waits for ${needs}`,
        SqlState.insufficientPrivilege,
        `once it is approved, run exactly the same statement again within ${minutes(this.o.grantTtlMs)}: it runs once`,
        'approval',
      );
    }
    return this.wait(request, input, needs);
  }

  /** A CancelRequest for this session: withdraws the pending request; false when nothing is held. */
  cancel(): boolean {
    if (!this.pending) return false;
    this.pending.controller.abort('cancelled by the client');
    return true;
  }

  /** The session ends: a pending request is withdrawn; settles once that is recorded. */
  close(): Promise<unknown> | undefined {
    const p = this.pending;
    if (!p) return undefined;
    p.controller.abort('the client disconnected');
    return p.done;
  }

  private wait(request: ApprovalRequest, input: HeldInput, needs: string): Promise<HoldResult> {
    const controller = new AbortController();
    const done = this.waitFor(request, input, needs, controller);
    this.pending = { id: request.id, controller, done };
    return done;
  }

  private async waitFor(request: ApprovalRequest, input: HeldInput, needs: string, controller: AbortController): Promise<HoldResult> {
    this.notice(`waiting for approval: request ${request.id} needs ${needs} (expires ${request.expiresAt})`, request.reason ? `your reason was sent to the approvers: ${request.reason}` : 'give approvers a reason with a comment in the statement: /* warden:reason="..." */');
    const ticker = setInterval(() => {
      void this.o.service.get(request.id).then(
        (s) => s && s.status === ApprovalStatus.pending && this.notice(`still waiting for approval: request ${request.id} needs ${approvalsMissing(s)} more approval(s)`),
        () => undefined,
      );
    }, this.o.noticeIntervalMs);
    ticker.unref();
    let state: ApprovalState;
    try {
      state = await this.o.service.outcome(request.id, controller.signal);
    } catch (err) {
      const why = controller.signal.aborted ? String(controller.signal.reason ?? 'withdrawn') : 'the approval service failed';
      if (!controller.signal.aborted) this.o.log.error('approvals: waiting for an outcome failed; refusing the statement (fail closed)', { err });
      await this.o.service.withdraw(request.id, why).catch((e: unknown) => this.o.log.warn('approvals: could not withdraw a request', { err: e }));
      state = (await this.o.service.get(request.id).catch(() => undefined)) ?? { request, status: ApprovalStatus.withdrawn, votes: [], revision: 0, outcomeReason: why, decidedAt: this.now().toISOString() };
      if (state.status === ApprovalStatus.pending) state = { ...state, status: ApprovalStatus.withdrawn, outcomeReason: why };
    } finally {
      clearInterval(ticker);
      this.pending = undefined;
    }
    await this.record(state, input.statementId).catch((err: unknown) => this.o.log.error('approvals: the outcome could not be recorded', { err }));
    switch (state.status) {
      case ApprovalStatus.approved:
        return this.approved(state, input);
      case ApprovalStatus.denied: {
        const denier = state.votes.find((v) => v.choice === 'deny');
        return this.refusal(input.decision, `denied by ${denier?.approverId ?? 'an approver'} in request ${request.id}: ${state.outcomeReason ?? 'no reason given'}`, SqlState.insufficientPrivilege);
      }
      case ApprovalStatus.expired:
        return this.refusal(input.decision, `approval request ${request.id} expired with no decision; the statement was not run`, SqlState.insufficientPrivilege);
      default:
        return this.refusal(
          input.decision,
          state.outcomeReason === 'cancelled by the client' ? 'canceling statement due to user request (its approval request was withdrawn)' : `approval request ${request.id} withdrawn: ${state.outcomeReason ?? ''}`,
          state.outcomeReason === 'cancelled by the client' ? SqlState.queryCanceled : SqlState.insufficientPrivilege,
        );
    }
  }

  private async approved(state: ApprovalState, input: HeldInput): Promise<HoldResult> {
    const approvers = [...new Set(state.votes.filter((v) => v.choice === 'approve').map((v) => v.approverId))];
    await this.o.audit.append({ type: 'approval.executed', approvalId: state.request.id, statementId: input.statementId }, { durable: true });
    return {
      kind: 'run',
      approvalId: state.request.id,
      decision: { ...input.decision, effect: 'allow', reason: `approved in ${state.request.id} by ${approvers.join(', ')}` },
    };
  }

  /** The votes and the outcome, in the agent's session (AU-10: who approved what). */
  private async record(state: ApprovalState, statementId: number): Promise<void> {
    for (const v of state.votes) {
      await this.o.audit.append({ type: 'approval.vote', approvalId: state.request.id, approverId: v.approverId, choice: v.choice, channel: v.channel, at: v.at, ...(v.reason ? { reason: v.reason } : {}) }, { durable: false });
    }
    if (state.status === ApprovalStatus.pending) return;
    await this.o.audit.append(
      {
        type: 'approval.closed',
        approvalId: state.request.id,
        statementId,
        status: state.status,
        decidedAt: state.decidedAt ?? this.now().toISOString(),
        ...(state.outcomeReason ? { outcomeReason: state.outcomeReason } : {}),
        votes: state.votes.map((v) => ({ approverId: v.approverId, choice: v.choice, at: v.at, channel: v.channel, ...(v.reason ? { reason: v.reason } : {}) })),
      },
      { durable: true },
    );
  }

  private requestFor(input: HeldInput, digest: string): ApprovalRequest {
    const now = this.now();
    const reason = agentReasonOf(input.text);
    const requirement = input.decision.approval ?? { approvers: [], approvals: 1 };
    return {
      id: this.o.newId(),
      requester: { issuer: this.o.principal.issuer, subject: this.o.principal.subject, groups: [...this.o.principal.groups] },
      target: this.o.target,
      sessionId: this.o.sessionId,
      statement: {
        text: input.text,
        fingerprint: fingerprintSql(input.text),
        digest,
        command: input.statement.command,
        tables: [...input.statement.tables],
        risks: [...input.statement.risks],
      },
      ...(reason ? { reason } : {}),
      policies: [...input.decision.policies],
      ...(input.decision.reason ? { policyReason: input.decision.reason } : {}),
      requirement,
      mode: this.o.mode,
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + this.o.timeoutMs).toISOString(),
    };
  }

  /** `effect`: 'approval' while the request is open (async mode), 'deny' once it closed without approval. */
  private refusal(decision: Decision, message: string, code: string, hint?: string, effect: 'deny' | 'approval' = 'deny'): HoldResult {
    return {
      kind: 'refuse',
      decision: { ...decision, effect, reason: message },
      answer: { severity: 'ERROR', code, message, detail: `policies: ${decision.policies.join(', ') || '(none)'}`, ...(hint ? { hint } : {}) },
    };
  }

  private notice(message: string, hint?: string): void {
    this.o.toClient(noticeResponse({ severity: 'NOTICE', code: '00000', message, ...(hint ? { hint } : {}) }));
  }
}

/** What an async grant must match: the exact text and bound parameters. */
export function statementDigest(text: string, params: readonly (string | null)[] | undefined): string {
  return createHash('sha256').update(JSON.stringify([text, params ?? null])).digest('hex');
}

function needsText(d: Decision): string {
  const a = d.approval;
  if (!a) return '1 approval';
  return `${a.approvals} approval${a.approvals === 1 ? '' : 's'} from ${a.approvers.join(' or ')}`;
}

function minutes(ms: number): string {
  const m = Math.round(ms / 60_000);
  return m >= 1 ? `${m} minute${m === 1 ? '' : 's'}` : `${Math.round(ms / 1000)} seconds`;
}
