/**
 * The proxy's ApprovalService on AWS: one execution of statemachines/approval.asl.json per request,
 * named by the request id; the outcome is read from the approvals table, which the execution's
 * functions write (the approval request function creates the item, the Slack interaction function
 * records the votes, the outcome function records an expiry, a failure or a withdrawal).
 *
 * Async grants are found through an in-process index of the requests this service submitted, not by a
 * scan or a secondary index of the table: a grant is usable on the same proxy task that submitted the
 * request, for as long as that task runs. An agent whose next connection lands on another task (the
 * Network Load Balancer spreads connections) or arrives after a restart finds no grant and has to ask
 * again. Looking a grant up by requester and digest across tasks would need a global secondary index on
 * those attributes of the approvals table; it is left out while a request is tied to the session that
 * raised it.
 *
 * @see https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html
 * @see https://docs.aws.amazon.com/step-functions/latest/apireference/API_StopExecution.html
 */
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DescribeExecutionCommand,
  StartExecutionCommand,
  StopExecutionCommand,
  type DescribeExecutionCommandOutput,
  type StartExecutionCommandOutput,
  type StopExecutionCommandOutput,
} from '@aws-sdk/client-sfn';
import { ApprovalMode, ApprovalStatus, type ApprovalId, type ApprovalRequest, type ApprovalState } from '../../core/approval/approval-request.ts';
import { expire, useGrant } from '../../core/approval/approval-rules.ts';
import type { ApprovalService } from '../../core/approval/approval-service.ts';
import { ApprovalNotFoundError, transition, type ApprovalStore } from '../../core/approval/approval-store.ts';

/** The part of SFNClient this service uses; a real `SFNClient` satisfies it. */
export interface StepFunctionsClient {
  send(command: StartExecutionCommand): Promise<StartExecutionCommandOutput>;
  send(command: StopExecutionCommand): Promise<StopExecutionCommandOutput>;
  send(command: DescribeExecutionCommand): Promise<DescribeExecutionCommandOutput>;
}

export interface StepFunctionsApprovalServiceOptions {
  readonly client: StepFunctionsClient;
  /** `arn:<partition>:states:<region>:<account>:stateMachine:<name>` of the approval state machine. */
  readonly stateMachineArn: string;
  /** The approvals table: read for outcomes, written only to mark a grant used or to expire a forgotten request. */
  readonly store: ApprovalStore;
  /** `approvals.timeoutSeconds`: the span the request's `expiresAt` was computed with. */
  readonly timeoutSeconds: number;
  /** `approvals.grantTtlSeconds` in milliseconds: how long after the approval an async grant may be used. */
  readonly grantTtlMs: number;
  /** How often `outcome` reads the table. @default 1000 */
  readonly pollIntervalMs?: number;
  /**
   * How long `outcome` waits for the request's item to appear before it asks Step Functions whether the
   * execution still runs (the execution's first function creates the item). @default 30000
   */
  readonly notFoundGraceMs?: number;
  /**
   * A request still pending this long after its `expiresAt` is closed as expired by `outcome` itself: the
   * state machine normally does that at `expiresAt`, and would only miss it if its outcome function kept
   * failing. @default 60000
   */
  readonly expiryGraceMs?: number;
  /** Most requests kept in the grant index; the oldest are forgotten first. @default 10000 */
  readonly maxIndexedRequests?: number;
  readonly now?: () => Date;
}

export class ApprovalWorkflowError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApprovalWorkflowError';
  }
}

/** The request id cannot name an execution, or another execution already has its name. */
export class ApprovalSubmitError extends ApprovalWorkflowError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApprovalSubmitError';
  }
}

/** Step Functions execution names: 1 to 80 characters; these are also the only ones CloudWatch Logs takes unchanged. */
const EXECUTION_NAME = /^[0-9A-Za-z_-]{1,80}$/;
const STATE_MACHINE_ARN = /^arn:(aws[a-z-]*):states:([a-z0-9-]+):(\d{12}):stateMachine:([0-9A-Za-z_-]{1,80})$/;
/** StopExecution's `cause` is at most 32768 characters. */
const MAX_CAUSE_CHARS = 32_768;

interface GrantKey {
  readonly issuer: string;
  readonly subject: string;
  readonly target: string;
  readonly digest: string;
}

export class StepFunctionsApprovalService implements ApprovalService {
  private readonly client: StepFunctionsClient;
  private readonly store: ApprovalStore;
  private readonly stateMachineArn: string;
  /** `arn:<partition>:states:<region>:<account>:execution:<state machine name>:`; the request id completes it. */
  private readonly executionArnPrefix: string;
  private readonly timeoutSeconds: number;
  private readonly grantTtlMs: number;
  private readonly pollIntervalMs: number;
  private readonly notFoundGraceMs: number;
  private readonly expiryGraceMs: number;
  private readonly maxIndexedRequests: number;
  private readonly now: () => Date;
  /** Requests submitted by this process, oldest first (Map keeps insertion order): the grant index. */
  private readonly submitted = new Map<ApprovalId, GrantKey>();

  constructor(options: StepFunctionsApprovalServiceOptions) {
    const arn = STATE_MACHINE_ARN.exec(options.stateMachineArn);
    if (!arn) {
      throw new Error(`stateMachineArn must look like arn:aws:states:<region>:<account>:stateMachine:<name>, got "${options.stateMachineArn}"`);
    }
    if (!Number.isInteger(options.timeoutSeconds) || options.timeoutSeconds < 1) {
      throw new Error(`timeoutSeconds must be a positive integer (Step Functions' TimeoutSecondsPath), got ${options.timeoutSeconds}`);
    }
    if (!(options.grantTtlMs > 0)) throw new Error(`grantTtlMs must be positive, got ${options.grantTtlMs}`);
    const [, partition, region, account, name] = arn;
    this.client = options.client;
    this.store = options.store;
    this.stateMachineArn = options.stateMachineArn;
    this.executionArnPrefix = `arn:${partition}:states:${region}:${account}:execution:${name}:`;
    this.timeoutSeconds = options.timeoutSeconds;
    this.grantTtlMs = options.grantTtlMs;
    this.pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.notFoundGraceMs = options.notFoundGraceMs ?? 30_000;
    this.expiryGraceMs = options.expiryGraceMs ?? 60_000;
    this.maxIndexedRequests = options.maxIndexedRequests ?? 10_000;
    this.now = options.now ?? (() => new Date());
  }

  /** The execution that holds a request: its name is the request id. */
  executionArn(id: ApprovalId): string {
    return this.executionArnPrefix + id;
  }

  /**
   * Starts the execution. Submitting the same request again is harmless: Step Functions answers a running
   * execution with the same name and input as the first call, and a closed one with ExecutionAlreadyExists,
   * which is accepted when the stored input is the same.
   */
  async submit(request: ApprovalRequest): Promise<void> {
    if (!EXECUTION_NAME.test(request.id)) {
      throw new ApprovalSubmitError(`approval request id "${request.id}" cannot name an execution (1-80 of A-Z a-z 0-9 - _)`);
    }
    const input = { request, timeoutSeconds: this.timeoutSeconds };
    try {
      await this.client.send(new StartExecutionCommand({ stateMachineArn: this.stateMachineArn, name: request.id, input: JSON.stringify(input) }));
    } catch (err) {
      if (errorName(err) !== 'ExecutionAlreadyExists') throw err;
      const existing = await this.client.send(new DescribeExecutionCommand({ executionArn: this.executionArn(request.id) }));
      if (!isDeepStrictEqual(parseJson(existing.input), parseJson(JSON.stringify(input)))) {
        throw new ApprovalSubmitError(`an execution named ${request.id} already exists for another request`, { cause: err });
      }
    }
    if (request.mode === ApprovalMode.async) this.remember(request);
  }

  /**
   * Reads the table until the request is closed. A request not found yet is normal for a moment (the
   * execution's function creates it); after `notFoundGraceMs` Step Functions is asked, and an execution
   * that no longer runs without having created the request is an ApprovalWorkflowError, which the proxy
   * treats as a denial.
   */
  async outcome(id: ApprovalId, signal?: AbortSignal): Promise<ApprovalState> {
    // Step Functions is asked at most once per grace period: DescribeExecution is throttled per account.
    let nextExecutionCheck = Date.now() + this.notFoundGraceMs;
    for (;;) {
      throwIfAborted(id, signal);
      const state = await this.store.get(id);
      if (state !== undefined && state.status !== ApprovalStatus.pending) return state;
      if (state !== undefined) {
        const closed = await this.expireForgotten(state);
        if (closed !== undefined) return closed;
      } else if (Date.now() >= nextExecutionCheck) {
        await this.assertStillRunning(id);
        nextExecutionCheck = Date.now() + this.notFoundGraceMs;
      }
      await wait(this.pollIntervalMs, id, signal);
    }
  }

  /**
   * Stops the execution; the outcome function, called by the EventBridge rule on the `ABORTED` status,
   * closes the request as withdrawn and updates the Slack message. A request that was never started has
   * nothing to withdraw; a closed execution is left as it is.
   */
  async withdraw(id: ApprovalId, why: string): Promise<void> {
    // Whatever the approvers do now, the agent gave up on this request: it never becomes a grant here.
    this.submitted.delete(id);
    try {
      await this.client.send(
        new StopExecutionCommand({ executionArn: this.executionArn(id), error: 'Warden.Withdrawn', cause: why.slice(0, MAX_CAUSE_CHARS) }),
      );
    } catch (err) {
      if (errorName(err) !== 'ExecutionDoesNotExist') throw err;
    }
  }

  /**
   * Marks the first submitted approved, unused async request of this requester for exactly this statement
   * on this target as used, with a conditional write, so two sessions racing for one grant cannot both run
   * it. Only async requests submitted by this process are candidates (see the module comment); a `wait`
   * request's approval belongs to the statement that waited for it.
   */
  async useGrant(requester: { issuer: string; subject: string }, target: string, digest: string): Promise<ApprovalState | undefined> {
    const now = this.now();
    for (const [id, key] of [...this.submitted]) {
      if (key.issuer !== requester.issuer || key.subject !== requester.subject || key.target !== target || key.digest !== digest) continue;
      let state: ApprovalState | undefined;
      let used: ApprovalState | undefined;
      try {
        used = await transition(this.store, id, (s) => {
          state = s;
          // The table is the authority: the index only says where to look.
          if (!sameGrant(s, requester, target, digest)) return undefined;
          return useGrant(s, now, this.grantTtlMs);
        });
      } catch (err) {
        if (err instanceof ApprovalNotFoundError) continue;
        throw err;
      }
      if (used !== undefined) {
        this.submitted.delete(id);
        return used;
      }
      if (state !== undefined && !this.mayStillGrant(state, now)) this.submitted.delete(id);
    }
    return undefined;
  }

  async get(id: ApprovalId): Promise<ApprovalState | undefined> {
    return this.store.get(id);
  }

  private remember(request: ApprovalRequest): void {
    this.submitted.delete(request.id);
    this.submitted.set(request.id, {
      issuer: request.requester.issuer,
      subject: request.requester.subject,
      target: request.target.name,
      digest: request.statement.digest,
    });
    while (this.submitted.size > this.maxIndexedRequests) {
      const oldest = this.submitted.keys().next().value;
      if (oldest === undefined) break;
      this.submitted.delete(oldest);
    }
  }

  /** Whether a request may yet become a usable grant: pending, or approved, unused and within its time to live. */
  private mayStillGrant(state: ApprovalState, now: Date): boolean {
    if (state.status === ApprovalStatus.pending) return true;
    if (state.status !== ApprovalStatus.approved || state.executedAt !== undefined || state.decidedAt === undefined) return false;
    return now.getTime() <= Date.parse(state.decidedAt) + this.grantTtlMs;
  }

  private async expireForgotten(state: ApprovalState): Promise<ApprovalState | undefined> {
    const now = this.now();
    if (now.getTime() < Date.parse(state.request.expiresAt) + this.expiryGraceMs) return undefined;
    const next = await transition(this.store, state.request.id, (s) => expire(s, now));
    return next !== undefined && next.status !== ApprovalStatus.pending ? next : undefined;
  }

  private async assertStillRunning(id: ApprovalId): Promise<void> {
    let status: string | undefined;
    try {
      status = (await this.client.send(new DescribeExecutionCommand({ executionArn: this.executionArn(id) }))).status;
    } catch (err) {
      if (errorName(err) !== 'ExecutionDoesNotExist') throw err;
      throw new ApprovalWorkflowError(`approval request ${id} has no execution`, { cause: err });
    }
    if (status !== 'RUNNING') {
      throw new ApprovalWorkflowError(`approval request ${id} was never recorded; its execution is ${status ?? 'in an unknown state'}`);
    }
  }
}

function sameGrant(state: ApprovalState, requester: { issuer: string; subject: string }, target: string, digest: string): boolean {
  const r = state.request;
  return r.mode === ApprovalMode.async && r.requester.issuer === requester.issuer && r.requester.subject === requester.subject && r.target.name === target && r.statement.digest === digest;
}

function abortError(id: ApprovalId): DOMException {
  return new DOMException(`waiting for approval request ${id} was aborted`, 'AbortError');
}

function throwIfAborted(id: ApprovalId, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(id);
}

async function wait(ms: number, id: ApprovalId, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : undefined);
  } catch (err) {
    if (signal?.aborted) throw abortError(id);
    throw err;
  }
}

function errorName(err: unknown): string | undefined {
  return err instanceof Error ? err.name : undefined;
}

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
