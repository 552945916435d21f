/**
 * DynamoDbApprovalStore against a DynamoDB API (dynalite on 127.0.0.1) through the real AWS SDK v3 clients.
 *
 * Proves: a state reads back exactly as written; a second create of the same id is refused and changes
 * nothing; replace is conditional on the revision (of two concurrent writers of the same revision exactly
 * one wins, and a stale or unknown revision loses); recordVote under concurrency counts two approvers who
 * click at the same moment, and a concurrent double click once; listPending pages through the whole table
 * and returns only pending requests, oldest first; the task token and the Slack message reference are kept
 * beside the state, survive its replacement, and are never part of what `get` returns; a used token is
 * deleted only while no newer one replaced it; the TTL attribute is the expiry plus the retention period.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { ApprovalAlreadyExistsError, DynamoDbApprovalStore } from '../../../adapters/aws/dynamodb-approval-store.ts';
import { newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver } from '../../../core/approval/approval-request.ts';
import { castVote } from '../../../core/approval/approval-rules.ts';
import { ApprovalNotFoundError, recordVote } from '../../../core/approval/approval-store.ts';
import { sampleApprovalRequest } from '../../helpers/approval-fixtures.ts';
import { startDynalite, type LocalDynamoDb } from '../../helpers/dynalite.ts';

const NOW = new Date('2030-01-01T12:00:00.000Z');
let sequence = 0;

function request(o: { approvals?: number; createdAt?: string } = {}): ApprovalRequest {
  sequence += 1;
  return sampleApprovalRequest({
    id: `apr-${process.pid}-${sequence}`,
    policyReason: 'changes to production data need approval',
    approvals: o.approvals ?? 1,
    createdAt: Date.parse(o.createdAt ?? NOW.toISOString()),
    expiresAt: NOW.getTime() + 15 * 60_000,
  });
}

const alice: Approver = { id: 'alice@example.com', groups: ['db-approvers'], slackUserId: 'UALICE' };
const bob: Approver = { id: 'bob@example.com', groups: ['db-approvers'], slackUserId: 'UBOB' };
const approve = (approver: Approver) => ({ approver, choice: 'approve' as const, channel: 'slack', now: NOW });

describe('DynamoDbApprovalStore on dynalite', { timeout: 20_000 }, () => {
  let db: LocalDynamoDb;
  let store: DynamoDbApprovalStore;
  const TABLE = 'approvals';

  before(async () => {
    db = await startDynalite();
    await db.createTable(TABLE);
  });
  after(async () => {
    await db?.close();
  });
  beforeEach(() => {
    store = new DynamoDbApprovalStore({ client: db.client, tableName: TABLE });
  });

  test('a created state reads back exactly as written, optional fields included and absent', async () => {
    const withReason: ApprovalState = newApprovalState({ ...request(), reason: 'monthly clean-up' });
    const without = newApprovalState(request());

    await store.create(withReason);
    await store.create(without);

    assert.deepEqual(await store.get(withReason.request.id), withReason);
    assert.deepEqual(await store.get(without.request.id), without);
    assert.equal(await store.get('apr-unknown' as ApprovalId), undefined);
  });

  test('creating the same id twice is refused and leaves the first state', async () => {
    const first = newApprovalState(request());
    await store.create(first);

    await assert.rejects(store.create({ ...first, request: { ...first.request, reason: 'other' } }), ApprovalAlreadyExistsError);

    assert.deepEqual(await store.get(first.request.id), first);
  });

  test('replace writes only over the revision it was derived from', async () => {
    const state = newApprovalState(request({ approvals: 2 }));
    await store.create(state);
    const r1 = castVote(state, approve(alice));
    assert.equal(r1.kind, 'accepted');
    const next = (r1 as { state: ApprovalState }).state;

    assert.equal(await store.replace(next), true);
    assert.equal(await store.replace(next), false, 'the same revision twice');
    assert.equal(await store.replace({ ...next, revision: 5 }), false, 'a revision from the future');
    assert.equal(await store.replace({ ...next, request: { ...next.request, id: 'apr-missing' as ApprovalId } }), false, 'an unknown id');

    assert.deepEqual(await store.get(state.request.id), next);
  });

  test('of two concurrent replaces of the same revision exactly one wins', async () => {
    const state = newApprovalState(request({ approvals: 2 }));
    await store.create(state);
    const byAlice = (castVote(state, approve(alice)) as { state: ApprovalState }).state;
    const byBob = (castVote(state, approve(bob)) as { state: ApprovalState }).state;
    const other = new DynamoDbApprovalStore({ client: db.newClient(), tableName: TABLE });

    const results = await Promise.all([store.replace(byAlice), other.replace(byBob)]);

    assert.deepEqual([...results].sort(), [false, true]);
    const stored = await store.get(state.request.id);
    assert.deepEqual(stored, results[0] ? byAlice : byBob);
    assert.equal(stored?.votes.length, 1);
  });

  test('recordVote: two approvers clicking at the same moment both count', async () => {
    const state = newApprovalState(request({ approvals: 2 }));
    await store.create(state);
    const other = new DynamoDbApprovalStore({ client: db.newClient(), tableName: TABLE });

    const [a, b] = await Promise.all([recordVote(store, state.request.id, approve(alice)), recordVote(other, state.request.id, approve(bob))]);

    assert.equal(a.kind, 'accepted');
    assert.equal(b.kind, 'accepted');
    const stored = await store.get(state.request.id);
    assert.equal(stored?.status, 'approved');
    assert.equal(stored?.revision, 2);
    assert.deepEqual(stored?.votes.map((v) => v.approverId).sort(), [alice.id, bob.id]);
  });

  test('recordVote: a concurrent double click counts once', async () => {
    const state = newApprovalState(request({ approvals: 2 }));
    await store.create(state);

    const results = await Promise.all([recordVote(store, state.request.id, approve(alice)), recordVote(store, state.request.id, approve(alice))]);

    assert.deepEqual(results.map((r) => r.kind).sort(), ['accepted', 'duplicate']);
    const stored = await store.get(state.request.id);
    assert.equal(stored?.status, 'pending');
    assert.equal(stored?.votes.length, 1);
    assert.equal(stored?.revision, 1);
  });

  test('listPending pages through the table: only pending requests, oldest first', async () => {
    const paged = new DynamoDbApprovalStore({ client: db.client, tableName: 'approvals-list', scanPageLimit: 2 });
    await db.createTable('approvals-list');
    const created = [3, 1, 4, 0, 2].map((minute) => newApprovalState(request({ createdAt: new Date(NOW.getTime() + minute * 60_000).toISOString() })));
    for (const s of created) await paged.create(s);
    const closed = newApprovalState(request({ createdAt: NOW.toISOString() }));
    await paged.create(closed);
    assert.equal(await paged.replace((castVote(closed, approve(alice)) as { state: ApprovalState }).state), true);

    const pending = await paged.listPending();

    const expected = [...created].sort((x, y) => Date.parse(x.request.createdAt) - Date.parse(y.request.createdAt));
    assert.deepEqual(pending.map((p) => p.request.id), expected.map((p) => p.request.id));
  });

  test('the task token and the Slack message are kept beside the state and survive a replace', async () => {
    const state = newApprovalState(request());
    await store.create(state);
    assert.equal(await store.getTaskToken(state.request.id), undefined);
    assert.equal(await store.getSlackMessage(state.request.id), undefined);

    await store.putTaskToken(state.request.id, 'TOKEN-secret-123');
    await store.setSlackMessage(state.request.id, { channel: 'C0APPROVE', ts: '1700000000.000100' });
    assert.equal(await store.replace((castVote(state, approve(alice)) as { state: ApprovalState }).state), true);

    assert.equal(await store.getTaskToken(state.request.id), 'TOKEN-secret-123');
    assert.deepEqual(await store.getSlackMessage(state.request.id), { channel: 'C0APPROVE', ts: '1700000000.000100' });
    const shown = await store.get(state.request.id);
    assert.doesNotMatch(JSON.stringify(shown), /TOKEN-secret/);
    assert.equal(shown?.status, 'approved');
  });

  test('a used task token is deleted only while it is still the stored one', async () => {
    const state = newApprovalState(request());
    await store.create(state);
    await store.putTaskToken(state.request.id, 'token-of-attempt-1');
    await store.putTaskToken(state.request.id, 'token-of-attempt-2');

    await store.deleteTaskToken(state.request.id, 'token-of-attempt-1');
    const afterStale = await store.getTaskToken(state.request.id);
    await store.deleteTaskToken(state.request.id, 'token-of-attempt-2');

    assert.equal(afterStale, 'token-of-attempt-2', 'a newer token stays');
    assert.equal(await store.getTaskToken(state.request.id), undefined);
    assert.equal(await store.get(state.request.id).then((s) => s?.revision), 0, 'the state is untouched');
  });

  test('a token or Slack message for an unknown request is refused', async () => {
    await assert.rejects(store.putTaskToken('apr-nowhere' as ApprovalId, 't'), ApprovalNotFoundError);
    await assert.rejects(store.setSlackMessage('apr-nowhere' as ApprovalId, { channel: 'C1', ts: '1.2' }), ApprovalNotFoundError);
    assert.equal(await store.getTaskToken('apr-nowhere' as ApprovalId), undefined);
  });

  test('the item carries status, revision and a TTL of expiry plus retention', async () => {
    const retained = new DynamoDbApprovalStore({ client: db.client, tableName: TABLE, retentionSeconds: 3600 });
    const state = newApprovalState(request());
    await retained.create(state);

    const raw = await db.client.send(new GetItemCommand({ TableName: TABLE, Key: { id: { S: state.request.id } }, ConsistentRead: true }));

    assert.equal(raw.Item?.status?.S, 'pending');
    assert.equal(raw.Item?.revision?.N, '0');
    assert.equal(Number(raw.Item?.expiresAtEpoch?.N), Date.parse(state.request.expiresAt) / 1000 + 3600);
    assert.ok(raw.Item?.state?.M, 'the state is a map');
  });
});
