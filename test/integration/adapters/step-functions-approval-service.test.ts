/**
 * StepFunctionsApprovalService with the approvals table on dynalite (DynamoDbApprovalStore through the
 * real SDK) and Step Functions faked at the SDK's HTTP boundary (test/helpers/fake-step-functions.ts: a
 * local server answering StartExecution, StopExecution and DescribeExecution in the service's JSON
 * protocol, talked to by a real SFNClient). The execution's functions are played by the test: it creates
 * the request in the table and records votes with core `recordVote`.
 *
 * Proves: submit starts one execution named by the request id with `{ request, timeoutSeconds }` and is
 * idempotent, but refuses another request under a used name or an id that cannot name an execution;
 * outcome tolerates a request not created yet, resolves once the table shows it closed, rejects with an
 * AbortError when aborted, fails closed when the execution ended without creating the request, and
 * expires a request the workflow forgot; withdraw stops the execution with the reason; useGrant is single
 * use (also under concurrency), respects the time to live, the digest, the requester and the target, never
 * hands out a withdrawn request or one of wait mode, and only knows requests this service submitted.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DynamoDbApprovalStore } from '../../../adapters/aws/dynamodb-approval-store.ts';
import { ApprovalSubmitError, ApprovalWorkflowError, StepFunctionsApprovalService, type StepFunctionsApprovalServiceOptions } from '../../../adapters/aws/step-functions-approval-service.ts';
import { ApprovalStatus, newApprovalState, type ApprovalId, type ApprovalRequest, type Approver } from '../../../core/approval/approval-request.ts';
import { recordVote } from '../../../core/approval/approval-store.ts';
import { sampleApprovalRequest } from '../../helpers/approval-fixtures.ts';
import { startDynalite, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import { startFakeStepFunctions, type FakeStepFunctions } from '../../helpers/fake-step-functions.ts';

const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:warden-approval';
const EXECUTION_PREFIX = 'arn:aws:states:us-east-1:123456789012:execution:warden-approval:';
const TIMEOUT_SECONDS = 900;
const GRANT_TTL_MS = 3_600_000;

const CREATED = Date.parse('2030-01-01T12:00:00.000Z');
let sequence = 0;
function request(o: { mode?: 'wait' | 'async'; digest?: string; subject?: string; target?: string } = {}): ApprovalRequest {
  sequence += 1;
  return sampleApprovalRequest({ ...o, id: `apr-sfn-${process.pid}-${sequence}`, digest: o.digest ?? 'a'.repeat(64), createdAt: CREATED, expiresAt: CREATED + TIMEOUT_SECONDS * 1000 });
}

const alice: Approver = { id: 'alice@example.com', groups: ['db-approvers'], slackUserId: 'UALICE' };

describe('StepFunctionsApprovalService', { timeout: 20_000 }, () => {
  let db: LocalDynamoDb;
  let sfn: FakeStepFunctions;
  let store: DynamoDbApprovalStore;
  /** The clock the service reads; tests move it. */
  let now = CREATED + 60_000;

  before(async () => {
    db = await startDynalite();
    await db.createTable('approvals');
    store = new DynamoDbApprovalStore({ client: db.client, tableName: 'approvals' });
    sfn = await startFakeStepFunctions();
  });
  after(async () => {
    await sfn?.close();
    await db?.close();
  });

  function service(o: Partial<StepFunctionsApprovalServiceOptions> = {}): StepFunctionsApprovalService {
    return new StepFunctionsApprovalService({
      client: sfn.client,
      stateMachineArn: STATE_MACHINE_ARN,
      store,
      timeoutSeconds: TIMEOUT_SECONDS,
      grantTtlMs: GRANT_TTL_MS,
      pollIntervalMs: 20,
      now: () => new Date(now),
      ...o,
    });
  }

  /** What the approval request function and an approver do. */
  async function createdAndApproved(r: ApprovalRequest, at = CREATED + 30_000): Promise<void> {
    await store.create(newApprovalState(r));
    const vote = await recordVote(store, r.id, { approver: alice, choice: 'approve', channel: 'slack', now: new Date(at) });
    assert.equal(vote.kind === 'accepted' && vote.closed, true);
  }

  test('refuses a state machine ARN or timeout Step Functions would not take', () => {
    assert.throws(() => service({ stateMachineArn: 'arn:aws:lambda:us-east-1:123456789012:function:x' }), /stateMachineArn/);
    assert.throws(() => service({ timeoutSeconds: 1.5 }), /timeoutSeconds/);
  });

  test('submit starts one execution named by the request id with the request and the timeout', async () => {
    const s = service();
    const r = request();

    await s.submit(r);

    const starts = sfn.calls.filter((c) => c.operation === 'StartExecution' && c.body.name === r.id);
    assert.equal(starts.length, 1);
    assert.equal(starts[0]!.body.stateMachineArn, STATE_MACHINE_ARN);
    assert.deepEqual(JSON.parse(starts[0]!.body.input as string), { request: r, timeoutSeconds: TIMEOUT_SECONDS });
    assert.equal(sfn.execution(r.id)?.status, 'RUNNING');
    assert.equal(s.executionArn(r.id), EXECUTION_PREFIX + r.id);
  });

  test('submit is idempotent for the same request, running or closed, and refuses another request under a used name', async () => {
    const s = service();
    const r = request();
    await s.submit(r);

    await s.submit(r);
    sfn.execution(r.id)!.status = 'SUCCEEDED';
    await s.submit(r);

    assert.equal([...sfn.executions.values()].filter((e) => e.name === r.id).length, 1);
    await assert.rejects(s.submit({ ...r, reason: 'another request, same id' }), ApprovalSubmitError);
    const callsBefore = sfn.calls.length;
    await assert.rejects(s.submit({ ...r, id: 'apr with spaces' as ApprovalId }), ApprovalSubmitError);
    assert.equal(sfn.calls.length, callsBefore, 'an invalid id is refused before any call');
  });

  test('outcome waits for a request not created yet and resolves once the table shows it approved', async () => {
    const s = service();
    const r = request();
    await s.submit(r);
    let settled = false;

    const outcome = s.outcome(r.id).finally(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 100));
    await store.create(newApprovalState(r));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(settled, false, 'still pending');
    await recordVote(store, r.id, { approver: alice, choice: 'approve', channel: 'slack', now: new Date(CREATED + 30_000) });

    const state = await outcome;
    assert.equal(state.status, ApprovalStatus.approved);
    assert.deepEqual(state.votes.map((v) => v.approverId), [alice.id]);
    assert.deepEqual(await s.get(r.id), state);
  });

  test('outcome rejects with an AbortError when aborted, also when aborted before it starts', async () => {
    const s = service();
    const r = request();
    await s.submit(r);
    await store.create(newApprovalState(r));
    const controller = new AbortController();

    const outcome = s.outcome(r.id, controller.signal);
    setTimeout(() => controller.abort(), 60);

    await assert.rejects(outcome, (err: unknown) => err instanceof Error && err.name === 'AbortError');
    await assert.rejects(s.outcome(r.id, AbortSignal.abort()), { name: 'AbortError' });
  });

  test('outcome fails closed when the execution ended without creating the request, and waits while it runs', async () => {
    const s = service({ notFoundGraceMs: 50 });
    const ended = request();
    await s.submit(ended);
    sfn.execution(ended.id)!.status = 'FAILED';

    await assert.rejects(s.outcome(ended.id), (err: unknown) => err instanceof ApprovalWorkflowError && /FAILED/.test(err.message));
    await assert.rejects(s.outcome(request().id), (err: unknown) => err instanceof ApprovalWorkflowError && /no execution/.test(err.message));

    const running = request();
    await s.submit(running);
    const outcome = s.outcome(running.id, AbortSignal.timeout(300));
    await assert.rejects(outcome, { name: 'AbortError' }, 'kept waiting while the execution runs');
  });

  test('outcome closes a request the workflow forgot as expired, once past expiresAt and the grace', async () => {
    const s = service({ expiryGraceMs: 60_000 });
    const r = request();
    await s.submit(r);
    await store.create(newApprovalState(r));
    now = Date.parse(r.expiresAt) + 61_000;
    try {
      const state = await s.outcome(r.id);

      assert.equal(state.status, ApprovalStatus.expired);
      assert.equal((await store.get(r.id))?.status, ApprovalStatus.expired);
    } finally {
      now = CREATED + 60_000;
    }
  });

  test('withdraw stops the execution with the reason; withdrawing an unknown one is harmless', async () => {
    const s = service();
    const r = request();
    await s.submit(r);

    await s.withdraw(r.id, 'the client cancelled the statement');
    await s.withdraw(r.id, 'again');
    await s.withdraw('apr-never-submitted' as ApprovalId, 'the client disconnected');

    assert.equal(sfn.execution(r.id)?.status, 'ABORTED');
    assert.deepEqual(sfn.execution(r.id)?.stop, { error: 'Warden.Withdrawn', cause: 'the client cancelled the statement' });
    const stops = sfn.calls.filter((c) => c.operation === 'StopExecution' && c.body.executionArn === EXECUTION_PREFIX + r.id);
    assert.equal(stops.length, 2);
  });

  describe('useGrant', () => {
    const requester = { issuer: 'https://issuer.example', subject: 'grant-bot' };

    test('an approved async request is usable once, for exactly its statement, requester and target', async () => {
      const s = service();
      const r = request({ mode: 'async', subject: 'grant-bot', digest: 'b'.repeat(64) });
      await s.submit(r);
      await createdAndApproved(r);

      assert.equal(await s.useGrant(requester, 'ledger', 'c'.repeat(64)), undefined, 'another statement');
      assert.equal(await s.useGrant({ ...requester, subject: 'other-bot' }, 'ledger', 'b'.repeat(64)), undefined, 'another requester');
      assert.equal(await s.useGrant({ ...requester, issuer: 'https://other.example' }, 'ledger', 'b'.repeat(64)), undefined, 'another issuer');
      assert.equal(await s.useGrant(requester, 'appdb', 'b'.repeat(64)), undefined, 'another target');
      const used = await s.useGrant(requester, 'ledger', 'b'.repeat(64));
      const again = await s.useGrant(requester, 'ledger', 'b'.repeat(64));

      assert.equal(used?.request.id, r.id);
      assert.equal(used?.executedAt, new Date(now).toISOString());
      assert.equal((await store.get(r.id))?.executedAt, used?.executedAt);
      assert.equal(again, undefined, 'single use');
    });

    test('two sessions racing for one grant: exactly one gets it', async () => {
      const s = service();
      const other = service();
      const r = request({ mode: 'async', subject: 'grant-bot', digest: 'e'.repeat(64) });
      await s.submit(r);
      await other.submit(r);
      await createdAndApproved(r);

      const results = await Promise.all([s.useGrant(requester, 'ledger', 'e'.repeat(64)), other.useGrant(requester, 'ledger', 'e'.repeat(64))]);

      assert.equal(results.filter((x) => x !== undefined).length, 1);
    });

    test('a grant is usable until its time to live after the approval, not after', async () => {
      const s = service();
      const inTime = request({ mode: 'async', subject: 'grant-bot', digest: 'f'.repeat(64) });
      const late = request({ mode: 'async', subject: 'grant-bot', digest: '0'.repeat(64) });
      const approvedAt = CREATED + 30_000;
      for (const r of [inTime, late]) {
        await s.submit(r);
        await createdAndApproved(r, approvedAt);
      }
      try {
        now = approvedAt + GRANT_TTL_MS;
        assert.equal((await s.useGrant(requester, 'ledger', 'f'.repeat(64)))?.request.id, inTime.id);
        now = approvedAt + GRANT_TTL_MS + 1;
        assert.equal(await s.useGrant(requester, 'ledger', '0'.repeat(64)), undefined);
        assert.equal((await store.get(late.id))?.executedAt, undefined);
      } finally {
        now = CREATED + 60_000;
      }
    });

    test('a withdrawn request never becomes a grant, even if approved afterwards', async () => {
      const s = service();
      const r = request({ mode: 'async', subject: 'grant-bot', digest: '4'.repeat(64) });
      await s.submit(r);

      await s.withdraw(r.id, 'the client disconnected');
      await createdAndApproved(r);

      assert.equal(await s.useGrant(requester, 'ledger', '4'.repeat(64)), undefined);
    });

    test('pending, denied and wait requests grant nothing; a request submitted by another task is not found', async () => {
      const s = service();
      const pendingRequest = request({ mode: 'async', subject: 'grant-bot', digest: '1'.repeat(64) });
      await s.submit(pendingRequest);
      await store.create(newApprovalState(pendingRequest));
      assert.equal(await s.useGrant(requester, 'ledger', '1'.repeat(64)), undefined);

      const denied = request({ mode: 'async', subject: 'grant-bot', digest: '2'.repeat(64) });
      await s.submit(denied);
      await store.create(newApprovalState(denied));
      await recordVote(store, denied.id, { approver: alice, choice: 'deny', reason: 'no', channel: 'slack', now: new Date(CREATED + 1000) });
      assert.equal(await s.useGrant(requester, 'ledger', '2'.repeat(64)), undefined);

      const waited = request({ mode: 'wait', subject: 'grant-bot', digest: '5'.repeat(64) });
      await s.submit(waited);
      await createdAndApproved(waited);
      assert.equal(await s.useGrant(requester, 'ledger', '5'.repeat(64)), undefined, 'a wait request is no grant');

      const elsewhere = request({ mode: 'async', subject: 'grant-bot', digest: '3'.repeat(64) });
      await service().submit(elsewhere);
      await createdAndApproved(elsewhere);
      assert.equal(await s.useGrant(requester, 'ledger', '3'.repeat(64)), undefined, 'grants are usable on the task that submitted them');
    });
  });
});
