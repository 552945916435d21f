/**
 * What the policy decision function answers: is this agent allowed to connect to a target, and what does
 * policy say about a SQL text on it. The same core code the proxy runs in process decides here, so an
 * answer from the function and one from the proxy agree whenever they hold the same policy version.
 *
 * The request is validated at the edge (strict objects: an unknown field is a client fault, not something
 * to ignore), and every failure of the client's is a DecisionRequestInvalidError whose message names the
 * fields and nothing of the function's internals.
 */
import { z } from 'zod';
import type { Principal } from '../../core/identity/principal.ts';
import type { DecisionAnswer, DecisionErrorResponse, StatementAnswer } from '../../core/policy/decision-answer.ts';
import { Effect, refusalAmong, type Decision, type StatementDecider, type TargetRef } from '../../core/policy/decision.ts';
import { classifySql } from '../../core/sql/classify.ts';

/** Largest SQL text accepted, in characters. Far above any statement an agent sends; well inside Lambda's 6 MB payload limit. */
export const MAX_SQL_CHARS = 1024 * 1024;
const MAX_NAME_CHARS = 256;
const MAX_GROUPS = 1024;

const name = z.string().min(1).max(MAX_NAME_CHARS);

const PrincipalSchema = z.strictObject({
  issuer: name,
  subject: name,
  groups: z.array(name).max(MAX_GROUPS),
});

const TargetSchema = z.strictObject({
  name,
  kind: z.enum(['postgres', 'ssh']),
  environment: z.enum(['development', 'staging', 'production']),
});

export const DecisionRequestSchema = z.discriminatedUnion('action', [
  z.strictObject({ action: z.literal('connect'), principal: PrincipalSchema, target: TargetSchema }),
  z.strictObject({
    action: z.literal('statement'),
    principal: PrincipalSchema,
    // SQL is only ever run on a PostgreSQL target.
    target: TargetSchema.extend({ kind: z.literal('postgres') }),
    // '' (or only comments) holds no statement and is allowed, as the proxy forwards an empty query.
    sql: z.string().max(MAX_SQL_CHARS),
  }),
]);

export type DecisionRequest = z.infer<typeof DecisionRequestSchema>;

export type { DecisionAnswer, DecisionErrorResponse, DecisionResponse, StatementAnswer } from '../../core/policy/decision-answer.ts';

/** A decider that answers in process (CedarDecider): no I/O, so the answer is a plain function of the request. */
export interface InProcessDecider extends StatementDecider {
  readonly version: string;
  decideConnect(principal: Principal, target: TargetRef): Decision;
}

export class DecisionRequestInvalidError extends Error {
  constructor(
    /** One line per problem: the field's path and what is wrong with it. */
    readonly problems: readonly string[],
  ) {
    super(`invalid decision request: ${problems.join('; ')}`);
    this.name = 'DecisionRequestInvalidError';
  }
}

const MAX_PROBLEMS = 10;
const MAX_ECHO_CHARS = 64;

/** Validates a raw event; throws DecisionRequestInvalidError naming each bad field. */
export function parseDecisionRequest(event: unknown): DecisionRequest {
  const r = DecisionRequestSchema.safeParse(event);
  if (r.success) return r.data;
  const problems = r.error.issues.slice(0, MAX_PROBLEMS).map(describeIssue);
  if (r.error.issues.length > MAX_PROBLEMS) problems.push(`(${r.error.issues.length - MAX_PROBLEMS} more problems)`);
  throw new DecisionRequestInvalidError(problems);
}

function describeIssue(i: z.core.$ZodIssue): string {
  const at = i.path.map(String).join('.');
  // Name unknown fields by their full path, and echo no more of the client's own key than needed.
  if (i.code === 'unrecognized_keys') return i.keys.map((k) => `${at ? `${at}.` : ''}${echo(k)}: unknown field`).join('; ');
  return `${at || '(request)'}: ${i.message}`;
}

function echo(key: string): string {
  const s = JSON.stringify(key.length > MAX_ECHO_CHARS ? `${key.slice(0, MAX_ECHO_CHARS)}…` : key);
  return s.slice(1, -1);
}

/**
 * Decides a validated request. For a SQL text every top-level statement is decided on its own; the text as
 * a whole takes the first decision that is not allow, exactly as the proxy refuses a simple Query, or
 * allow. A text that does not parse is one statement of operation `unknown`, which policy denies: a parse
 * error is the policy's to refuse, not a fault of the request.
 *
 * The SQL parser must have been initialised (`initSqlParser()`).
 */
export function answerDecisionRequest(decider: InProcessDecider, request: DecisionRequest): DecisionAnswer {
  const principal: Principal = {
    issuer: request.principal.issuer,
    subject: request.principal.subject,
    groups: [...request.principal.groups],
    username: request.principal.subject,
    claims: {},
  };
  // TargetRef names only PostgreSQL until the SSH data path lands; Cedar sees `kind` as a plain string.
  const target = { ...request.target } as TargetRef;

  if (request.action === 'connect') return fromDecision(decider.decideConnect(principal, target), decider.version);

  const decided = classifySql(request.sql).statements.map((s) => ({ s, d: decider.decideStatement(principal, target, s) }));
  const statements = decided.map(({ s, d }): StatementAnswer => ({
    text: s.text,
    operation: s.operation,
    command: s.command,
    effect: d.effect,
    policies: d.policies,
    ...(d.reason !== undefined ? { reason: d.reason } : {}),
  }));
  const refused = refusalAmong(decided, ({ d }) => d);
  if (refused) return { ...fromDecision(refused.d, decider.version), statements };
  const policies = [...new Set(decided.flatMap(({ d }) => d.policies))].sort();
  return { effect: Effect.allow, policies, policyVersion: decider.version, statements };
}

function fromDecision(d: Decision, version: string): DecisionAnswer {
  return {
    effect: d.effect,
    policies: d.policies,
    ...(d.reason !== undefined ? { reason: d.reason } : {}),
    policyVersion: d.policyVersion ?? version,
    ...(d.approval ? { approval: d.approval } : {}),
  };
}

/** A client fault becomes a 400 that says what to fix; anything else a generic 500 (the details go to the log only). */
export function errorResponse(err: unknown): DecisionErrorResponse {
  if (err instanceof DecisionRequestInvalidError) return { statusCode: 400, error: { code: 'InvalidRequest', message: err.problems.join('; ') } };
  return { statusCode: 500, error: { code: 'InternalError', message: 'internal error' } };
}
