/**
 * Bounds what one statement event holds. A 50 MB INSERT or a 12 MB bytea parameter would otherwise
 * become an audit line of the same size (twice that as hex) and could push a session over the audit
 * buffer limit, ending a session that works directly. Past the limits the event keeps a prefix, the
 * full length and a SHA-256 of the whole value, which is enough to prove what was sent.
 */
import { createHash } from 'node:crypto';
import type { StatementDecision } from './events.ts';
import { registerImmutable } from './hash-chain.ts';
import type { StatementClass } from '../sql/classify.ts';

export const MAX_AUDITED_TEXT_CHARS = 256 * 1024;
export const MAX_AUDITED_PARAM_CHARS = 4 * 1024;

export interface TruncationNote {
  text?: { chars: number; sha256: string };
  params?: { index: number; chars: number; sha256: string }[];
}

const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

export function boundStatementForAudit(
  text: string,
  params: readonly (string | null)[] | undefined,
): { text: string; params: (string | null)[] | undefined; truncated?: TruncationNote } {
  let truncated: TruncationNote | undefined;
  let outText = text;
  if (text.length > MAX_AUDITED_TEXT_CHARS) {
    outText = text.slice(0, MAX_AUDITED_TEXT_CHARS);
    truncated = { text: { chars: text.length, sha256: sha256(text) } };
  }
  let outParams = params as (string | null)[] | undefined;
  if (params?.some((p) => p !== null && p.length > MAX_AUDITED_PARAM_CHARS)) {
    const notes: { index: number; chars: number; sha256: string }[] = [];
    outParams = params.map((p, index) => {
      if (p === null || p.length <= MAX_AUDITED_PARAM_CHARS) return p;
      notes.push({ index, chars: p.length, sha256: sha256(p) });
      return p.slice(0, MAX_AUDITED_PARAM_CHARS);
    });
    truncated = { ...truncated, params: notes };
  }
  return truncated ? { text: outText, params: outParams, truncated } : { text: outText, params: outParams };
}

/** What a statement event records of the classification: everything but the text, which the event holds once. */
export interface AuditedClassification {
  operation: string;
  command: string;
  readOnly: boolean;
  tables: readonly string[];
  functions: readonly string[];
  risks: readonly string[];
  nested?: AuditedClassification[];
  preparedName?: string;
}

// Classifications are cached and frozen, so their projection can be cached by identity too.
const projections = new WeakMap<StatementClass, AuditedClassification>();

export function classificationForAudit(c: StatementClass): AuditedClassification {
  let p = projections.get(c);
  if (!p) {
    p = {
      operation: c.operation,
      command: c.command,
      readOnly: c.readOnly,
      tables: c.tables,
      functions: c.functions,
      risks: c.risks,
      ...(c.nested.length ? { nested: c.nested.map(classificationForAudit) } : {}),
      ...(c.preparedName !== undefined ? { preparedName: c.preparedName } : {}),
    };
    projections.set(c, registerImmutable(p));
  }
  return p;
}

interface DecisionLike {
  readonly effect: StatementDecision['effect'];
  readonly policies: readonly string[];
  readonly reason?: string;
  readonly policyVersion?: string;
  readonly approval?: { readonly approvers: readonly string[]; readonly approvals: number };
}

const decisions = new WeakMap<DecisionLike, StatementDecision>();

/** The decision as a statement event records it; shared (and encoded once) per decision object. */
export function decisionForAudit(d: DecisionLike): StatementDecision {
  let r = decisions.get(d);
  if (!r) {
    r = registerImmutable({
      effect: d.effect,
      policies: [...d.policies],
      ...(d.reason !== undefined ? { reason: d.reason } : {}),
      ...(d.policyVersion !== undefined ? { policyVersion: d.policyVersion } : {}),
      ...(d.approval !== undefined ? { approval: { approvers: [...d.approval.approvers], approvals: d.approval.approvals } } : {}),
    });
    decisions.set(d, r);
  }
  return r;
}
