/**
 * Audit event model: one hash-chained stream of events per session.
 *
 * Every event carries the chain fields `{ v, type, sessionId, seq, time, prevHash, hash }`
 * plus the fields of its `type`. A session's stream is:
 *   session.start, (auth.* | upstream.connect | statement | statement.end)*, session.end, seal
 * `seq` counts 0,1,2... per session; `prevHash` is the previous event's `hash`
 * (64 zeros for seq 0); `hash` is sha256 over the canonical JSON of the event
 * without `hash` (see hash-chain.ts).
 */

/** Session ids become file names, so they are branded and restricted to a safe alphabet. */
import type { MaskingSummary } from '../masking/vocabulary.ts';
export type SessionId = string & { readonly __brand: 'SessionId' };

const SESSION_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class AuditSessionIdError extends Error {
  constructor(value: string, options?: { cause?: unknown }) {
    super(`invalid session id ${JSON.stringify(value)}: expected 1-128 chars of [A-Za-z0-9._-], not starting with '.', '_' or '-'`, options);
    this.name = 'AuditSessionIdError';
  }
}

export function isSessionId(value: unknown): value is SessionId {
  return typeof value === 'string' && SESSION_ID_RE.test(value);
}

export function asSessionId(value: string): SessionId {
  if (!isSessionId(value)) throw new AuditSessionIdError(value);
  return value;
}

export const AUDIT_EVENT_VERSION = 1 as const;
/** prevHash of the first event of a session. */
export const GENESIS_HASH = '0'.repeat(64);

export interface Principal {
  issuer: string;
  subject: string;
  groups: string[];
}

export interface SessionStartFields {
  protocol: 'postgres' | 'ssh';
  source: { address: string; port: number };
  listener: string;
  tls: boolean;
  /** Target the client asked for (before resolution). */
  target: string;
  startupUser: string;
}

export interface AuthSuccessFields {
  principal: Principal;
  method: 'oidc-jwt';
}

export interface AuthFailureFields {
  /** Internal reason code. */
  reason: string;
  /** Operator detail; never the token. */
  detail: string;
  sqlstate: string;
  claimedUser: string;
  issuer?: string;
  subject?: string;
}

export interface UpstreamConnectFields {
  target: string;
  host: string;
  port: number;
  database: string;
  tls: boolean;
  ok: boolean;
  error?: string;
}

export type DecisionEffect = 'allow' | 'deny' | 'approval';

export interface StatementDecision {
  effect: DecisionEffect;
  policies: string[];
  reason?: string;
  policyVersion?: string;
  /** When held for approval: who may approve and how many approvals are needed. */
  approval?: { approvers: string[]; approvals: number };
}

/** Written BEFORE the statement is forwarded upstream. */
export interface StatementFields {
  /** Per session, 1.. */
  statementId: number;
  protocol: 'simple' | 'extended';
  text: string;
  /** Bound parameters as text; binary ones as '\\x' + hex. */
  params?: (string | null)[];
  /** Opaque JSON object from the SQL classifier. */
  classification: unknown;
  decision: StatementDecision;
  startedAt: string;
  /** Present when text or parameters were cut to their audited limits: full lengths and SHA-256s. */
  truncated?: {
    text?: { chars: number; sha256: string };
    params?: { index: number; chars: number; sha256: string }[];
  };
}

export type StatementOutcome = 'ok' | 'error' | 'denied' | 'cancelled';

export interface StatementEndFields {
  statementId: number;
  endedAt: string;
  durationMs: number;
  outcome: StatementOutcome;
  /** CommandComplete tag, e.g. 'SELECT 3'. */
  command?: string;
  rows?: number;
  sqlstate?: string;
  error?: string;
  /** What masking did to the statement's results (and error texts): the evidence, never the values. */
  masking?: MaskingSummary;
  /** The sealed forensic-vault record holding the masked originals. */
  vault?: { id: string; cells: number; sha256: string };
}

export type SessionEndReason =
  | 'client_terminate'
  | 'client_disconnect'
  | 'upstream_closed'
  | 'protocol_error'
  | 'auth_failed'
  | 'shutdown'
  /** The identity was revoked while the session was live (the RevocationList changed). */
  | 'revoked'
  | 'error';

export interface SessionEndFields {
  reason: SessionEndReason;
  statements: number;
  bytesFromClient: number;
  bytesToClient: number;
  durationMs: number;
}

/** Last event of a session. */
export interface SealFields {
  /** Number of events before the seal (= the seal's seq). */
  eventCount: number;
  /** Hash of the event before the seal (= the seal's prevHash). */
  lastHash: string;
  /** base64 Ed25519 signature over sealPayload(sessionId, eventCount, lastHash). */
  signature: string;
  keyId: string;
}

/**
 * An operator revealed a forensic-vault record (`warden vault reveal`), in an audit session of its own;
 * durable before any original is shown. The revealed record is `record*`: the event's own `sessionId`
 * is the operator's session.
 */
export interface VaultRevealFields {
  /** The agent session whose masked originals were revealed. */
  recordSessionId: string;
  recordStatementId: number;
  /** The vault record's id and the SHA-256 of its sealed file (its VaultRef). */
  recordId: string;
  recordSha256: string;
  /** Cells revealed. */
  cells: number;
  /** Who revealed: the name given with `--as`, else the OS user; issuer `local:<host>`. */
  operator: { issuer: string; subject: string };
  /** The OS account that ran the command (also when `--as` names someone else). */
  osUser: string;
  reason?: string;
}

/** A held statement's approval request was created (in the agent's session, linked to its statement). */
export interface ApprovalRequestedFields {
  approvalId: string;
  statementId: number;
  mode: 'wait' | 'async';
  /** Groups that may approve, and how many approvals are needed. */
  approvers: string[];
  approvals: number;
  policies: string[];
  /** The agent's stated reason, if any. */
  reason?: string;
  expiresAt: string;
}

/**
 * An approver's vote, accepted or refused (AU-10: who approved what). In the agent's session when the
 * proxy learns the outcome; in the operators' trail when cast with `warden approvals`.
 */
export interface ApprovalVoteFields {
  approvalId: string;
  approverId: string;
  choice: 'approve' | 'deny';
  /** 'cli', 'slack'. */
  channel: string;
  at: string;
  reason?: string;
  /** Set when the vote did not count: unknown_approver, not_in_group, self_approval, closed, expired, reason_required, duplicate. */
  refused?: string;
  /** Who asked (for the operators' trail, where the agent's session is elsewhere). */
  requester?: { issuer: string; subject: string };
  recordSessionId?: string;
}

/** The request closed: approved (threshold met), denied, expired or withdrawn. */
export interface ApprovalClosedFields {
  approvalId: string;
  statementId: number;
  status: 'approved' | 'denied' | 'expired' | 'withdrawn';
  decidedAt: string;
  outcomeReason?: string;
  votes: { approverId: string; choice: 'approve' | 'deny'; at: string; channel: string; reason?: string }[];
}

/** An approved statement was forwarded to the target (wait mode at once; async mode when its grant is used). */
export interface ApprovalExecutedFields {
  approvalId: string;
  statementId: number;
}

/**
 * An operator revoked an identity or lifted its revocation (`warden revoke` / `warden unrevoke`), in the
 * operators' trail, in an audit session of its own. `changed` is false when nothing changed (the identity
 * was revoked already, or was not revoked): the attempt is evidence too.
 */
export interface IdentityRevocationFields {
  action: 'revoke' | 'unrevoke';
  /** The identity, exactly as verified tokens carry it. */
  identity: { issuer: string; subject: string };
  changed: boolean;
  /** Who acted: the name given with `--as`, else the OS user; issuer `local:<host>`. */
  operator: { issuer: string; subject: string };
  /** The OS account that ran the command (also when `--as` names someone else). */
  osUser: string;
  reason?: string;
}

/** Fields per event type; the single source for the unions below. */
export interface AuditEventFieldMap {
  'session.start': SessionStartFields;
  'auth.success': AuthSuccessFields;
  'auth.failure': AuthFailureFields;
  'upstream.connect': UpstreamConnectFields;
  statement: StatementFields;
  'statement.end': StatementEndFields;
  'session.end': SessionEndFields;
  seal: SealFields;
  'vault.reveal': VaultRevealFields;
  'approval.requested': ApprovalRequestedFields;
  'approval.vote': ApprovalVoteFields;
  'approval.closed': ApprovalClosedFields;
  'approval.executed': ApprovalExecutedFields;
  'identity.revocation': IdentityRevocationFields;
}

export type AuditEventType = keyof AuditEventFieldMap;

export const AUDIT_EVENT_TYPES: readonly AuditEventType[] = [
  'session.start',
  'auth.success',
  'auth.failure',
  'upstream.connect',
  'statement',
  'statement.end',
  'session.end',
  'seal',
  'vault.reveal',
  'approval.requested',
  'approval.vote',
  'approval.closed',
  'approval.executed',
  'identity.revocation',
];

export interface ChainFields {
  v: typeof AUDIT_EVENT_VERSION;
  sessionId: SessionId;
  seq: number;
  /** ISO-8601 with milliseconds, UTC. */
  time: string;
  prevHash: string;
  hash: string;
}

/** Body of one event type: `{ type } & fields`, no chain fields. */
export type AuditEventBodyOf<T extends AuditEventType> = { type: T } & AuditEventFieldMap[T];

/** Body of any event type (what chainEvent takes). */
export type AnyAuditEventBody = { [T in AuditEventType]: AuditEventBodyOf<T> }[AuditEventType];

/** Types written by the sink itself (openSession / end), not via SessionAudit.append. */
export type LifecycleEventType = 'session.start' | 'session.end' | 'seal';
export const LIFECYCLE_EVENT_TYPES: readonly LifecycleEventType[] = ['session.start', 'session.end', 'seal'];

/** Bodies a caller may pass to SessionAudit.append. */
export type AuditEventBody = { [T in Exclude<AuditEventType, LifecycleEventType>]: AuditEventBodyOf<T> }[Exclude<
  AuditEventType,
  LifecycleEventType
>];

export type AuditEventOf<T extends AuditEventType> = ChainFields & AuditEventBodyOf<T>;

/** A full, chained event (discriminated on `type`). */
export type AuditEvent = { [T in AuditEventType]: AuditEventOf<T> }[AuditEventType];

/** An event before its hash is computed. */
export type UnhashedAuditEvent = { [T in AuditEventType]: Omit<AuditEventOf<T>, 'hash'> }[AuditEventType];

export function isAuditEventType(value: unknown): value is AuditEventType {
  return typeof value === 'string' && (AUDIT_EVENT_TYPES as readonly string[]).includes(value);
}

export function isLifecycleEventType(value: unknown): value is LifecycleEventType {
  return typeof value === 'string' && (LIFECYCLE_EVENT_TYPES as readonly string[]).includes(value);
}
