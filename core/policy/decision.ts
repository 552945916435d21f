/**
 * The decision point of the data path. Every connection and every statement passes through a
 * StatementDecider before anything reaches the target.
 */
import type { Principal } from '../identity/principal.ts';
import type { StatementClass } from '../sql/classify.ts';

export const Effect = { allow: 'allow', deny: 'deny', approval: 'approval' } as const;
export type Effect = (typeof Effect)[keyof typeof Effect];

export interface Decision {
  readonly effect: Effect;
  /** Ids of the policies that decided. */
  readonly policies: readonly string[];
  /** Why, in words an agent's author understands (sent to the client on a denial). */
  readonly reason?: string;
  readonly policyVersion?: string;
  /** When effect is 'approval': who may approve, and how many approvals are needed. */
  readonly approval?: ApprovalRequirement;
}

export interface ApprovalRequirement {
  /** Groups whose members may approve. */
  readonly approvers: readonly string[];
  readonly approvals: number;
}

export interface TargetRef {
  readonly name: string;
  readonly kind: 'postgres';
  readonly environment: string;
}

export interface StatementDecider {
  /** May be remote (the policy decision Lambda); statements are always decided in process. */
  decideConnect(principal: Principal, target: TargetRef): Decision | Promise<Decision>;
  decideStatement(principal: Principal, target: TargetRef, statement: StatementClass): Decision;
}

/** Allows everything; stands in until policies are configured, and still records a decision per statement. */
export const allowAllDecider: StatementDecider = {
  decideConnect: () => ALLOW_ALL,
  decideStatement: () => ALLOW_ALL,
};

const ALLOW_ALL: Decision = Object.freeze({ effect: Effect.allow, policies: Object.freeze(['builtin.allow-all']), policyVersion: 'builtin' });

/**
 * The refusal that answers a text of several statements: a denial before a hold (an approver could not
 * make the text run anyway), otherwise the first hold; undefined when every statement is allowed.
 */
export function refusalAmong<T>(items: readonly T[], decisionOf: (item: T) => Decision): T | undefined {
  return items.find((i) => decisionOf(i).effect === Effect.deny) ?? items.find((i) => decisionOf(i).effect !== Effect.allow);
}
