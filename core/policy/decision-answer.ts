/**
 * What the policy decision function answers, shared by the function (functions/policy-decision), which
 * writes it, and the proxy's Lambda client (adapters/aws/lambda-connect-decider.ts), which reads it.
 */
import { z } from 'zod';
import type { ApprovalRequirement, Effect } from './decision.ts';

/** The decision on one statement of a SQL text. */
export interface StatementAnswer {
  readonly text: string;
  readonly operation: string;
  readonly command: string;
  readonly effect: Effect;
  readonly policies: readonly string[];
  readonly reason?: string;
}

export interface DecisionAnswer {
  readonly effect: Effect;
  readonly policies: readonly string[];
  readonly reason?: string;
  readonly policyVersion: string;
  readonly approval?: ApprovalRequirement;
  /** For `statement`: one entry per top-level statement of the text, in order. */
  readonly statements?: readonly StatementAnswer[];
}

/** What the function returns: always a value (never a thrown error) for a request it could read. */
export type DecisionResponse = { readonly statusCode: 200; readonly decision: DecisionAnswer } | DecisionErrorResponse;

export type DecisionErrorResponse =
  | { readonly statusCode: 400; readonly error: { readonly code: 'InvalidRequest'; readonly message: string } }
  | { readonly statusCode: 500; readonly error: { readonly code: 'InternalError'; readonly message: 'internal error' } };

/**
 * The reader's schema of a DecisionResponse. Tolerant: fields a newer function adds are ignored; what a
 * decision needs must be there.
 */
export const DecisionResponseSchema = z.union([
  z.object({
    statusCode: z.literal(200),
    decision: z.object({
      effect: z.enum(['allow', 'deny', 'approval']),
      policies: z.array(z.string()),
      reason: z.string().optional(),
      policyVersion: z.string().min(1),
      approval: z.object({ approvers: z.array(z.string()), approvals: z.number().int().min(1) }).optional(),
    }),
  }),
  z.object({ statusCode: z.number().int(), error: z.object({ code: z.string(), message: z.string() }) }),
]);
