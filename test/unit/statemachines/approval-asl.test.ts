/**
 * statemachines/approval.asl.json, the real file, run by aws-local-stepfunctions with both Task states
 * replaced by local handlers.
 *
 * Proves: an approval (the task completes) records `approved` and succeeds; a denial (`Warden.Denied`)
 * records `denied` with the denier's reason and fails the execution with that reason; no decision within
 * `timeoutSeconds` (or a request the interaction function found expired) records `expired`; two distinct approvers are needed where two are required, and one
 * approver clicking twice completes nothing; a withdrawal (`Warden.Withdrawn`) records `withdrawn`; any
 * other failure of the approval request function records `failed` and fails the execution (fail closed)
 * without retrying the function; failures of the Invoke call itself are retried; the definition uses
 * exactly the two substitution variables infra fills in.
 *
 * How the emulation maps to Step Functions:
 * - aws-local-stepfunctions creates no task tokens and has no SendTaskSuccess / SendTaskFailure. Each run
 *   gets `{ context: { Task: { Token } } }`, so `$$.Task.Token` resolves, and the local RequestApproval
 *   handler returns a promise that `callbacks.succeed(token)` resolves (SendTaskSuccess) or
 *   `callbacks.fail(token, error, cause)` rejects with an Error named `error` whose message is `cause`
 *   (SendTaskFailure: the library reports `error.name` as Error and `error.message` as Cause).
 * - The library resolves `TimeoutSecondsPath` against the task's effective input, i.e. after `Parameters`
 *   (`{ FunctionName, Payload }`), where `$.timeoutSeconds` does not exist; Step Functions resolves it
 *   against the state input. RequestApproval is the start state and has no InputPath, so its state input
 *   is the execution input, and the test points the path at `$$.Execution.Input.timeoutSeconds`: the same
 *   value Step Functions reads. The file itself is asserted to say `$.timeoutSeconds`.
 * - A local handler receives the effective Parameters, `{ FunctionName, Payload }`; `Payload` is what the
 *   Lambda function receives.
 * - Lambda service errors are emulated by rejecting with an Error named like the error Step Functions
 *   reports (`Lambda.TooManyRequestsException`); a function's own failure by a plain Error (Step Functions
 *   reports the function's errorType, here `Error`). Retry pauses are overridden to 0 ms. In Step
 *   Functions every retry of RequestApproval gets a new task token; here it keeps the run's token.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { StateMachine as LocalStateMachine } from 'aws-local-stepfunctions';
import { ApprovalStatus, newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver } from '../../../core/approval/approval-request.ts';
import { recordVote, type ApprovalStore } from '../../../core/approval/approval-store.ts';
import { sampleApprovalRequest } from '../../helpers/approval-fixtures.ts';

// aws-local-stepfunctions calls Promise.withResolvers (Node 22); Node 20 lacks it, so it is added before
// the library is loaded.
if (typeof (Promise as { withResolvers?: unknown }).withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value<T>() {
      let resolve!: (value: T | PromiseLike<T>) => void;
      let reject!: (reason?: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
const { StateMachine } = await import('aws-local-stepfunctions');

const ASL_PATH = new URL('../../../statemachines/approval.asl.json', import.meta.url);
const REQUEST_FN_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:warden-approval-request';
const OUTCOME_FN_ARN = 'arn:aws:lambda:us-east-1:123456789012:function:warden-approval-outcome';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface Definition {
  StartAt: string;
  States: Record<string, Record<string, Json>>;
}

/** The file with the two substitutions infra makes (DefinitionBody.fromFile + definitionSubstitutions). */
function substitutedDefinition(): Definition {
  const text = readFileSync(ASL_PATH, 'utf8')
    .replaceAll('${ApprovalRequestFunctionArn}', REQUEST_FN_ARN)
    .replaceAll('${ApprovalOutcomeFunctionArn}', OUTCOME_FN_ARN);
  assert.doesNotMatch(text, /\$\{/, 'no substitution variable is left');
  return JSON.parse(text) as Definition;
}

/** The definition as the local runner needs it to read the timeout where Step Functions does (see above). */
function runnableDefinition(): Definition {
  const d = substitutedDefinition();
  const task = d.States.RequestApproval!;
  assert.equal(d.StartAt, 'RequestApproval');
  assert.equal(task.InputPath, undefined);
  assert.equal(task.TimeoutSecondsPath, '$.timeoutSeconds');
  task.TimeoutSecondsPath = '$$.Execution.Input.timeoutSeconds';
  return d;
}

/** SendTaskSuccess / SendTaskFailure by task token. */
class TaskCallbacks {
  private readonly waiting = new Map<string, { resolve: (output: Json) => void; reject: (err: Error) => void }>();
  /** Tokens of every wait started, in order. */
  readonly started: string[] = [];

  wait(token: string): Promise<Json> {
    this.started.push(token);
    return new Promise<Json>((resolve, reject) => this.waiting.set(token, { resolve, reject }));
  }
  succeed(token: string, output: Json = {}): void {
    this.take(token).resolve(output);
  }
  fail(token: string, error: string, cause: string): void {
    const err = new Error(cause);
    err.name = error;
    this.take(token).reject(err);
  }
  private take(token: string) {
    const w = this.waiting.get(token);
    if (!w) throw new Error(`TaskDoesNotExist: no task waits with token ${token}`);
    this.waiting.delete(token);
    return w;
  }
}

interface Invocation {
  FunctionName: string;
  Payload: Record<string, Json>;
}

interface Run {
  readonly result: Promise<Json>;
  readonly requestCalls: Invocation[];
  readonly outcomeCalls: Invocation[];
  readonly settled: () => boolean;
}

type LocalHandler = (input: Invocation) => Promise<Json> | Json;

function run(
  input: { request: ApprovalRequest; timeoutSeconds: number },
  token: string,
  handlers: { requestApproval: LocalHandler; recordOutcome?: LocalHandler },
): Run {
  const machine: LocalStateMachine = new StateMachine(runnableDefinition() as never);
  const requestCalls: Invocation[] = [];
  const outcomeCalls: Invocation[] = [];
  const execution = machine.run(input as never, {
    context: { Task: { Token: token } },
    overrides: {
      taskResourceLocalHandlers: {
        RequestApproval: (i) => {
          requestCalls.push(i as never);
          return handlers.requestApproval(i as never) as never;
        },
        RecordOutcome: (i) => {
          outcomeCalls.push(i as never);
          return (handlers.recordOutcome ?? (() => ({ recorded: true })))(i as never) as never;
        },
      },
      retryIntervalOverrides: { RequestApproval: 0, RecordOutcome: 0 },
    },
  });
  let done = false;
  const result = execution.result as Promise<Json>;
  result.then(
    () => (done = true),
    () => (done = true),
  );
  return { result, requestCalls, outcomeCalls, settled: () => done };
}

/** The Error and Cause the execution failed with (a Fail state's `Error` / `Cause`). */
async function failureOf(result: Promise<unknown>): Promise<{ error: string; cause: string }> {
  const err = await result.then(
    () => assert.fail('the execution should have failed'),
    (e: unknown) => e as Error & { cause?: Error },
  );
  assert.equal(err.name, 'ExecutionError');
  assert.ok(err.cause instanceof Error);
  return { error: err.cause.name, cause: err.cause.message };
}

const NOW = Date.now();
let sequence = 0;
function request(approvals = 1): ApprovalRequest {
  sequence += 1;
  return sampleApprovalRequest({ id: `apr-asl-${sequence}`, approvals, createdAt: NOW });
}

/** What the approval request function does with its event: the token it was given. */
function tokenOf(call: Invocation): string {
  return call.Payload.taskToken as string;
}

/** A few turns of the event loop, enough for any pending state transition of the local runner. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 5));
}

/** An ApprovalStore in memory, with the same conditional replace as the DynamoDB one. */
class MemoryApprovalStore implements ApprovalStore {
  private readonly states = new Map<string, ApprovalState>();
  async create(state: ApprovalState): Promise<void> {
    if (this.states.has(state.request.id)) throw new Error(`approval request ${state.request.id} already exists`);
    this.states.set(state.request.id, structuredClone(state));
  }
  async get(id: ApprovalId): Promise<ApprovalState | undefined> {
    const s = this.states.get(id);
    return s === undefined ? undefined : structuredClone(s);
  }
  async replace(next: ApprovalState): Promise<boolean> {
    const current = this.states.get(next.request.id);
    if (current === undefined || current.revision !== next.revision - 1) return false;
    this.states.set(next.request.id, structuredClone(next));
    return true;
  }
  async listPending(): Promise<ApprovalState[]> {
    return [...this.states.values()].filter((s) => s.status === ApprovalStatus.pending).map((s) => structuredClone(s));
  }
}

describe('approval state machine (aws-local-stepfunctions)', { timeout: 20_000 }, () => {
  test('uses exactly the substitution variables infra fills in, and waits for a task token with the input timeout', () => {
    const text = readFileSync(ASL_PATH, 'utf8');
    const variables = new Set([...text.matchAll(/\$\{([A-Za-z0-9]+)\}/g)].map((m) => m[1]));
    assert.deepEqual([...variables].sort(), ['ApprovalOutcomeFunctionArn', 'ApprovalRequestFunctionArn']);
    const d = substitutedDefinition();
    const wait = d.States.RequestApproval!;
    assert.equal(wait.Resource, 'arn:aws:states:::lambda:invoke.waitForTaskToken');
    assert.deepEqual(wait.Parameters, { FunctionName: REQUEST_FN_ARN, Payload: { 'request.$': '$.request', 'taskToken.$': '$$.Task.Token' } });
    assert.equal(wait.TimeoutSecondsPath, '$.timeoutSeconds');
    assert.equal(d.States.RecordOutcome!.Resource, 'arn:aws:states:::lambda:invoke');
    assert.equal((d.States.RecordOutcome!.Parameters as Record<string, Json>).FunctionName, OUTCOME_FN_ARN);
    // The local runner validates the definition (state types, transitions, paths) when it is built.
    assert.doesNotThrow(() => new StateMachine(d as never));
  });

  test('an approval records approved and the execution succeeds', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-approve', { requestApproval: (i) => callbacks.wait(tokenOf(i)) });
    await settle();
    assert.equal(r.requestCalls.length, 1);
    assert.deepEqual(r.requestCalls[0], { FunctionName: REQUEST_FN_ARN, Payload: { request: req as unknown as Json, taskToken: 'token-approve' } });
    assert.equal(r.settled(), false, 'the execution waits for the task token');

    callbacks.succeed('token-approve', { approvedBy: ['alice@example.com'] });

    assert.deepEqual(await r.result, { requestId: req.id, outcome: 'approved' });
    assert.deepEqual(r.outcomeCalls, [{ FunctionName: OUTCOME_FN_ARN, Payload: { requestId: req.id, outcome: 'approved' } }]);
  });

  test('a denial records denied with the reason and fails the execution with it', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-deny', { requestApproval: (i) => callbacks.wait(tokenOf(i)) });
    await settle();

    callbacks.fail('token-deny', 'Warden.Denied', 'not during the quarter close');

    assert.deepEqual(await failureOf(r.result), { error: 'Warden.Denied', cause: 'not during the quarter close' });
    assert.deepEqual(r.outcomeCalls.map((c) => c.Payload), [
      { requestId: req.id, outcome: 'denied', error: 'Warden.Denied', cause: 'not during the quarter close' },
    ]);
    assert.equal(r.requestCalls.length, 1);
  });

  test('no decision within timeoutSeconds records expired and fails the execution', async () => {
    const req = request();
    const started = Date.now();
    const r = run({ request: req, timeoutSeconds: 1 }, 'token-timeout', { requestApproval: () => new Promise<Json>(() => {}) });

    const failure = await failureOf(r.result);

    const took = Date.now() - started;
    assert.equal(failure.error, 'Warden.Expired');
    assert.ok(took >= 950 && took < 5000, `timed out after ${took} ms, expected about 1000`);
    assert.deepEqual(r.outcomeCalls.map((c) => c.Payload), [
      { requestId: req.id, outcome: 'expired', error: 'States.Timeout', cause: 'no decision before the approval timeout' },
    ]);
    assert.equal(r.requestCalls.length, 1, 'a timeout is not retried');
  });

  test('two required approvals: one approver twice completes nothing, a second approver completes the wait', async () => {
    const store = new MemoryApprovalStore();
    const callbacks = new TaskCallbacks();
    const req = request(2);
    const alice: Approver = { id: 'alice@example.com', groups: ['db-approvers'], slackUserId: 'UALICE' };
    const bob: Approver = { id: 'bob@example.com', groups: ['db-approvers'], slackUserId: 'UBOB' };
    const requesterAsApprover: Approver = { id: 'etl-bot', groups: ['db-approvers'] };
    // The approval request function: create the request, keep the token, wait.
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-two', {
      requestApproval: async (i) => {
        await store.create(newApprovalState(i.Payload.request as unknown as ApprovalRequest));
        return callbacks.wait(tokenOf(i));
      },
    });
    await settle();
    // The Slack interaction function: record the vote; complete the task once the request is approved.
    const vote = async (approver: Approver) => {
      const result = await recordVote(store, req.id, { approver, choice: 'approve', channel: 'slack', now: new Date(NOW + 1000) });
      if (result.kind === 'accepted' && result.closed && result.state.status === ApprovalStatus.approved) callbacks.succeed('token-two');
      return result;
    };

    const first = await vote(alice);
    const again = await vote(alice);
    const self = await vote(requesterAsApprover);
    await settle();

    assert.equal(first.kind, 'accepted');
    assert.equal(again.kind, 'duplicate');
    assert.equal(self.kind, 'refused');
    assert.equal(r.settled(), false, 'still waiting after one distinct approval');
    assert.equal(r.outcomeCalls.length, 0);
    assert.equal((await store.get(req.id))?.status, ApprovalStatus.pending);

    const second = await vote(bob);

    assert.equal(second.kind === 'accepted' && second.closed, true);
    assert.deepEqual(await r.result, { requestId: req.id, outcome: 'approved' });
    const state = await store.get(req.id);
    assert.equal(state?.status, ApprovalStatus.approved);
    assert.deepEqual(state?.votes.map((v) => v.approverId), ['alice@example.com', 'bob@example.com']);
    assert.deepEqual(r.outcomeCalls.map((c) => c.Payload), [{ requestId: req.id, outcome: 'approved' }]);
  });

  test('a withdrawal through the task records withdrawn with its reason', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-withdraw', { requestApproval: (i) => callbacks.wait(tokenOf(i)) });
    await settle();

    callbacks.fail('token-withdraw', 'Warden.Withdrawn', 'the client disconnected');

    assert.deepEqual(await failureOf(r.result), { error: 'Warden.Withdrawn', cause: 'the client disconnected' });
    assert.deepEqual(r.outcomeCalls.map((c) => c.Payload), [
      { requestId: req.id, outcome: 'withdrawn', error: 'Warden.Withdrawn', cause: 'the client disconnected' },
    ]);
  });

  test('a request found expired by the interaction function (Warden.Expired) records expired', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-expired', { requestApproval: (i) => callbacks.wait(tokenOf(i)) });
    await settle();

    callbacks.fail('token-expired', 'Warden.Expired', 'no decision before the request expired');

    assert.equal((await failureOf(r.result)).error, 'Warden.Expired');
    assert.deepEqual(r.outcomeCalls.map((c) => c.Payload), [
      { requestId: req.id, outcome: 'expired', error: 'Warden.Expired', cause: 'no decision before the approval timeout' },
    ]);
  });

  test('an unexpected failure of the approval request function records failed, is not retried, and fails closed', async () => {
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-fail', {
      requestApproval: () => Promise.reject(new Error('Slack answered channel_not_found')),
    });

    const failure = await failureOf(r.result);

    assert.equal(failure.error, 'Warden.ApprovalFailed');
    assert.match(failure.cause, /denied \(fail closed\)/);
    assert.equal(r.requestCalls.length, 1, 'a failure of the function itself is not retried');
    assert.equal(r.outcomeCalls.length, 1);
    const payload = r.outcomeCalls[0]!.Payload;
    assert.equal(payload.requestId, req.id);
    assert.equal(payload.outcome, 'failed');
    assert.equal(payload.error, 'Error');
    assert.deepEqual(JSON.parse(payload.cause as string), { Error: 'Error', Cause: 'Slack answered channel_not_found' });
  });

  test('an error name the workflow does not know also fails closed', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-odd', { requestApproval: (i) => callbacks.wait(tokenOf(i)) });
    await settle();

    callbacks.fail('token-odd', 'Warden.Approved', 'an error name nobody sends');

    assert.equal((await failureOf(r.result)).error, 'Warden.ApprovalFailed');
    assert.equal(r.outcomeCalls[0]?.Payload.outcome, 'failed');
  });

  test('failures of the Invoke call itself are retried; the outcome step retries its function', async () => {
    const callbacks = new TaskCallbacks();
    const req = request();
    let requestAttempts = 0;
    let outcomeAttempts = 0;
    const r = run({ request: req, timeoutSeconds: 900 }, 'token-retry', {
      requestApproval: (i) => {
        requestAttempts += 1;
        if (requestAttempts === 1) return Promise.reject(Object.assign(new Error('Rate exceeded'), { name: 'Lambda.TooManyRequestsException' }));
        if (requestAttempts === 2) return Promise.reject(Object.assign(new Error('Service unavailable'), { name: 'Lambda.ServiceException' }));
        return callbacks.wait(tokenOf(i));
      },
      recordOutcome: () => {
        outcomeAttempts += 1;
        if (outcomeAttempts === 1) return Promise.reject(new Error('ProvisionedThroughputExceededException'));
        return { recorded: true };
      },
    });
    for (let i = 0; i < 20 && callbacks.started.length === 0; i++) await settle();

    callbacks.succeed('token-retry');

    assert.deepEqual(await r.result, { requestId: req.id, outcome: 'approved' });
    assert.equal(requestAttempts, 3);
    assert.equal(outcomeAttempts, 2);
  });
});
