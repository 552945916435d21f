/**
 * Decides connections and statements with Cedar: allow, deny with the policy's reason, or hold for
 * approval.
 *
 * Approval is expressed in Cedar itself: a request that is denied as it stands but permitted when the
 * context says `approved: true` is held, and the permit that would then decide names the approvers
 * (`@approvers`, `@approvals`). A forbid matches whatever `approved` says, so what is forbidden cannot be
 * approved either.
 *
 * Fail closed: if Cedar reports an error for any policy (which makes it skip that policy, a forbid
 * included), or cannot evaluate at all, the answer is deny.
 *
 * Decisions are cached per principal, target and statement classification, in a cache owned by this
 * decider and so by one policy version: a repeated statement costs neither a parse (the classifier caches
 * by text) nor an evaluation.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { Principal } from '../identity/principal.ts';
import type { StatementClass } from '../sql/classify.ts';
import {
  NAMESPACE,
  actionUid,
  principalEntities,
  agentUid,
  sessionContext,
  statementAction,
  statementContext,
  targetEntity,
  targetUid,
  type ActionName,
} from './cedar-request.ts';
import { Effect, type ApprovalRequirement, type Decision, type StatementDecider, type TargetRef } from './decision.ts';
import type { CompiledPolicy, CompiledPolicySet } from './policy-set.ts';

export interface CedarDeciderOptions {
  /** Most decisions kept (past it the cache starts afresh). Default 10,000; 0 disables the cache. */
  readonly cacheEntries?: number;
  /**
   * Validate every request against the schema too (about 1.7x the cost of an evaluation). Off by default:
   * the request shapes are fixed by cedar-request.ts and checked by the tests, and a shape the policies do
   * not expect makes Cedar report an error, which denies anyway.
   */
  readonly validateRequests?: boolean;
}

/**
 * Cedar is asked without the schema: with it, every call also checks the entities against the schema,
 * which costs several times the evaluation itself. What the schema would add is the action hierarchy
 * (`action in Warden::Action::"sql"`), so the requested action and its groups are passed as entities,
 * read from the schema once here. The tests decide the same requests both ways and compare.
 */
function actionEntities(schemaText: string): Map<string, cedar.EntityJson[]> {
  const answer = cedar.schemaToJson(schemaText);
  if (answer.type === 'failure') throw new Error(`cedar rejected a validated schema: ${answer.errors.map((e) => e.message).join('; ')}`);
  const actions = new Map<string, readonly { id: string; type?: string }[]>();
  for (const [ns, def] of Object.entries(answer.json)) {
    if (ns !== NAMESPACE) continue;
    for (const [name, a] of Object.entries(def.actions)) actions.set(name, (a.memberOf ?? []) as { id: string; type?: string }[]);
  }
  const out = new Map<string, cedar.EntityJson[]>();
  for (const name of actions.keys()) {
    const list: cedar.EntityJson[] = [];
    const seen = new Set<string>();
    const visit = (n: string): void => {
      if (seen.has(n)) return;
      seen.add(n);
      const parents = actions.get(n) ?? [];
      list.push({ uid: actionUid(n as ActionName), attrs: {}, parents: parents.map((p) => actionUid(p.id as ActionName)) });
      for (const p of parents) visit(p.id);
    };
    visit(name);
    out.set(name, list);
  }
  return out;
}

/** One Cedar evaluation, as `warden policy explain` shows it. */
export interface Evaluation {
  readonly approved: boolean;
  readonly decision: 'allow' | 'deny';
  /** Policies that determined the decision (the matching permits on allow, the matching forbids on deny). */
  readonly determining: readonly string[];
  readonly errors: readonly string[];
}

export interface Explanation {
  readonly action: ActionName;
  readonly decision: Decision;
  readonly evaluations: readonly Evaluation[];
}

const DEFAULT_CACHE_ENTRIES = 10_000;

/** What the decider keeps per principal object (one per session): its cache key, its entities, its last bucket. */
interface PrincipalMemo {
  readonly key: string;
  readonly entities: cedar.EntityJson[];
  target?: TargetRef;
  bucket?: Map<string, Decision>;
  generation: number;
}
let preparedSets = 0;

export class CedarDecider implements StatementDecider {
  readonly version: string;
  private readonly setId: string;
  /** principal + target → statement key → decision. */
  private readonly buckets = new Map<string, Map<string, Decision>>();
  private cached_ = 0;
  /** Bumped whenever the cache starts afresh, so per-principal shortcuts to old buckets are not used. */
  private generation = 0;
  private readonly cacheEntries: number;
  private readonly validateRequests: boolean;
  private readonly actions: Map<string, cedar.EntityJson[]>;
  private readonly principals = new WeakMap<Principal, PrincipalMemo>();
  private readonly statementKeys = new WeakMap<StatementClass, string>();
  private evaluations = 0;

  constructor(
    private readonly set: CompiledPolicySet,
    opts: CedarDeciderOptions = {},
  ) {
    this.version = set.version;
    this.cacheEntries = opts.cacheEntries ?? DEFAULT_CACHE_ENTRIES;
    this.validateRequests = opts.validateRequests ?? false;
    this.actions = actionEntities(set.schemaText);
    // Preparsed sets live in the WASM module by name; a fresh name per decider keeps two deciders of the
    // same version (tests, a reload) from sharing state they do not own.
    this.setId = `${set.version}#${++preparedSets}`;
    const policies = cedar.preparsePolicySet(this.setId, { staticPolicies: set.staticPolicies });
    if (policies.type === 'failure') throw new Error(`cedar rejected a validated policy set: ${policies.errors.map((e) => e.message).join('; ')}`);
    const schema = cedar.preparseSchema(this.setId, set.schemaText);
    if (schema.type === 'failure') throw new Error(`cedar rejected a validated schema: ${schema.errors.map((e) => e.message).join('; ')}`);
  }

  /** Cedar evaluations run so far (cache misses count two when approval is considered). */
  get evaluationCount(): number {
    return this.evaluations;
  }

  decideConnect(principal: Principal, target: TargetRef): Decision {
    return this.cached(principal, target, 'connect', () => this.decide(principal, target, 'connect', sessionContext));
  }

  decideStatement(principal: Principal, target: TargetRef, statement: StatementClass): Decision {
    const action = statementAction(statement);
    return this.cached(principal, target, this.statementKey(statement), () =>
      this.decide(principal, target, action, (approved) => statementContext(statement, approved), undefined, unpermittedNote(statement)),
    );
  }

  /** Decides without the cache and shows both evaluations. */
  explainStatement(principal: Principal, target: TargetRef, statement: StatementClass): Explanation {
    const action = statementAction(statement);
    const evaluations: Evaluation[] = [];
    const decision = this.decide(principal, target, action, (approved) => statementContext(statement, approved), evaluations, unpermittedNote(statement));
    return { action, decision, evaluations };
  }

  explainConnect(principal: Principal, target: TargetRef): Explanation {
    const evaluations: Evaluation[] = [];
    const decision = this.decide(principal, target, 'connect', sessionContext, evaluations);
    return { action: 'connect', decision, evaluations };
  }

  /**
   * The decision for a principal, a target and a statement key (the classification as the context shows
   * it, or 'connect'). A session keeps asking for one target, so the bucket of its last target is kept on
   * the principal's memo and a repeated statement costs one map lookup. The cache is bounded by starting
   * afresh when full: cheaper on every hit than keeping a recency order, and a miss costs one evaluation.
   */
  private cached(principal: Principal, target: TargetRef, key: string, decide: () => Decision): Decision {
    if (this.cacheEntries === 0) return decide();
    const memo = this.principal(principal);
    let bucket = memo.generation === this.generation && memo.target === target ? memo.bucket : undefined;
    if (!bucket) {
      const bucketKey = `${memo.key}\u0000${target.name}\u0000${target.environment}`;
      bucket = this.buckets.get(bucketKey);
      if (!bucket) this.buckets.set(bucketKey, (bucket = new Map()));
      memo.target = target;
      memo.bucket = bucket;
      memo.generation = this.generation;
    }
    const hit = bucket.get(key);
    if (hit) return hit;
    const d = decide();
    if (++this.cached_ > this.cacheEntries) {
      this.buckets.clear();
      this.cached_ = 1;
      this.generation++;
      return this.cached(principal, target, key, () => d);
    }
    bucket.set(key, d);
    return d;
  }

  private decide(
    principal: Principal,
    target: TargetRef,
    action: ActionName,
    context: (approved: boolean) => cedar.Context,
    trace?: Evaluation[],
    note = '',
  ): Decision {
    const first = this.evaluate(principal, target, action, context(false));
    trace?.push(first);
    if (first.errors.length > 0) return this.failed(first);
    if (first.decision === 'allow') return this.finish({ effect: Effect.allow, policies: first.determining });

    const asApproved = this.evaluate(principal, target, action, context(true));
    trace?.push(asApproved);
    if (asApproved.errors.length > 0) return this.failed(asApproved);
    if (asApproved.decision === 'allow') {
      const approval = this.approvalFor(asApproved.determining);
      if (!approval) {
        return this.finish({
          effect: Effect.deny,
          policies: asApproved.determining,
          reason: 'the policy that would permit this once approved names no approvers (@approvers)',
        });
      }
      return this.finish({ effect: Effect.approval, policies: asApproved.determining, reason: this.reasonOf(asApproved.determining) ?? 'this statement needs approval', approval });
    }
    const reason = this.reasonOf(first.determining) ?? `no policy permits ${action} on target "${target.name}" for this agent${note}`;
    return this.finish({ effect: Effect.deny, policies: first.determining, reason });
  }

  private evaluate(principal: Principal, target: TargetRef, action: ActionName, context: cedar.Context): Evaluation {
    this.evaluations++;
    const approved = context.approved === true;
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        principal: agentUid(principal),
        action: actionUid(action),
        resource: targetUid(target),
        context,
        preparsedPolicySetId: this.setId,
        ...(this.validateRequests ? { preparsedSchemaName: this.setId, validateRequest: true } : { validateRequest: false }),
        // Without the schema, the action's groups come as entities (see actionEntities); an action the
        // schema does not know has none, so no policy over a group can match it, and no permit names it.
        entities: [...this.principal(principal).entities, targetEntity(target), ...(this.validateRequests ? [] : (this.actions.get(action) ?? []))],
      });
    } catch (err) {
      return { approved, decision: 'deny', determining: [], errors: [`policy evaluation failed: ${err instanceof Error ? err.message : String(err)}`] };
    }
    if (answer.type === 'failure') return { approved, decision: 'deny', determining: [], errors: answer.errors.map((e) => e.message) };
    const { decision, diagnostics } = answer.response;
    return {
      approved,
      decision,
      determining: diagnostics.reason,
      errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
    };
  }

  private failed(e: Evaluation): Decision {
    return this.finish({ effect: Effect.deny, policies: [], reason: `policy evaluation failed, so the request is denied (${e.errors.join('; ')})` });
  }

  private finish(d: { effect: Effect; policies: readonly string[]; reason?: string; approval?: ApprovalRequirement }): Decision {
    return Object.freeze({ ...d, policies: Object.freeze([...d.policies].sort()), policyVersion: this.version });
  }

  /** The strictest requirement among the permits that would decide once approved. */
  private approvalFor(ids: readonly string[]): ApprovalRequirement | undefined {
    let best: CompiledPolicy | undefined;
    for (const id of ids) {
      const p = this.set.policies.get(id);
      if (p && p.approvers.length > 0 && (!best || p.approvals > best.approvals)) best = p;
    }
    return best && Object.freeze({ approvers: Object.freeze([...best.approvers]), approvals: best.approvals });
  }

  private reasonOf(ids: readonly string[]): string | undefined {
    for (const id of [...ids].sort()) {
      const r = this.set.policies.get(id)?.annotations.reason;
      if (r) return r;
    }
    return undefined;
  }

  private principal(p: Principal): PrincipalMemo {
    let v = this.principals.get(p);
    if (!v) {
      v = { key: JSON.stringify([p.issuer, p.subject, [...new Set(p.groups)].sort()]), entities: principalEntities(p), generation: -1 };
      this.principals.set(p, v);
    }
    return v;
  }

  private statementKey(s: StatementClass): string {
    let k = this.statementKeys.get(s);
    if (k === undefined) {
      k = JSON.stringify([s.operation, s.command, s.readOnly, s.tables, s.functions, s.risks]);
      this.statementKeys.set(s, k);
    }
    return k;
  }
}

/** Why a statement that looks like a read may still be refused where reads are permitted. */
function unpermittedNote(s: StatementClass): string {
  const readLike = s.operation === 'read' || s.operation === 'transaction' || s.operation === 'session' || s.operation === 'copy_out';
  return readLike && !s.readOnly ? ' (the statement is not read-only: it locks rows, calls a function with side effects, or changes a guarded setting)' : '';
}
