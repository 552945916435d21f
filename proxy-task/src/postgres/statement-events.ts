/**
 * The audit events of one statement as the relay records them, and what a refused statement tells the
 * client. Kept apart from the relay so the wire handling and the evidence it produces read separately.
 */
import type { AuditEventBody } from '../../../core/audit/events.ts';
import { boundStatementForAudit, classificationForAudit, decisionForAudit } from '../../../core/audit/statement-record.ts';
import type { MaskingSummary } from '../../../core/masking/vocabulary.ts';
import type { Decision } from '../../../core/policy/decision.ts';
import type { SqlClassification, StatementClass } from '../../../core/sql/classify.ts';
import type { NoticeFields } from './backend-messages.ts';
import { SqlState } from './protocol-codes.ts';
import type { StatementResult } from './statement-tracker.ts';

const UNKNOWN_FIELDS = {
  operation: 'unknown',
  command: 'UNKNOWN',
  readOnly: false,
  tables: [],
  functions: [],
  risks: [],
  nested: [],
  location: { start: 0, length: 0 },
  text: '',
} as const;

/** What the relay decides on when it cannot know the statement (an Execute of an unknown portal). */
export const UNKNOWN_STATEMENT: StatementClass = Object.freeze({ ...UNKNOWN_FIELDS }) as unknown as StatementClass;

/** A fast-path FunctionCall names a function by OID: opaque to the parser, so the riskiest class. */
export const FUNCTION_CALL_STATEMENT: StatementClass = Object.freeze({ ...UNKNOWN_FIELDS, command: 'FUNCTION CALL' }) as unknown as StatementClass;
export const FUNCTION_CALL_CLASS: SqlClassification = Object.freeze({ statements: [], readOnly: false, risks: [] });

/** The statement event, written before the statement is forwarded (text and parameters bounded). */
export function statementEvent(
  statementId: number,
  protocol: 'simple' | 'extended',
  text: string,
  params: readonly (string | null)[] | undefined,
  classification: StatementClass | undefined,
  decision: Decision,
): AuditEventBody {
  const bounded = boundStatementForAudit(text, params);
  return {
    type: 'statement',
    statementId,
    protocol,
    text: bounded.text,
    ...(bounded.params ? { params: bounded.params } : {}),
    ...(bounded.truncated ? { truncated: bounded.truncated } : {}),
    classification: classificationForAudit(classification ?? UNKNOWN_STATEMENT),
    decision: decisionForAudit(decision),
    startedAt: new Date().toISOString(),
  };
}

/** The event that closes a statement with its outcome. */
export function statementEndEvent(r: StatementResult, masking?: MaskingSummary, vault?: { id: string; cells: number; sha256: string }): AuditEventBody {
  return {
    type: 'statement.end',
    statementId: r.statementId,
    endedAt: new Date().toISOString(),
    durationMs: Math.round(r.durationMs * 1000) / 1000,
    outcome: r.outcome,
    ...(r.command !== undefined ? { command: r.command } : {}),
    ...(r.rows !== undefined ? { rows: r.rows } : {}),
    ...(r.sqlstate !== undefined ? { sqlstate: r.sqlstate } : {}),
    ...(r.error !== undefined ? { error: r.error } : {}),
    ...(masking ? { masking } : {}),
    ...(vault ? { vault } : {}),
  };
}

/** The ErrorResponse of a refused statement: SQLSTATE 42501, the policy's reason, the deciding policies. */
export function refusalFields(d: Decision): NoticeFields {
  return {
    severity: 'ERROR',
    code: SqlState.insufficientPrivilege,
    message:
      d.effect === 'approval'
        ? `approval required: ${d.reason ?? 'this statement needs approval'} (${approvalText(d)})`
        : `denied by policy: ${d.reason ?? 'not permitted'}`,
    detail: `policies: ${d.policies.join(', ') || '(none)'}`,
    ...(d.effect === 'approval' ? { hint: 'no approval workflow is configured on this gateway, so the statement was not run; ask an approver to run it or change the policy' } : {}),
  };
}

function approvalText(d: Decision): string {
  const a = d.approval;
  if (!a) return 'approvers not named';
  return `${a.approvals} approval${a.approvals === 1 ? '' : 's'} from ${a.approvers.join(' or ')}`;
}
