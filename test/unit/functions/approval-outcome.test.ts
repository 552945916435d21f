/**
 * The approval outcome function: its logic (approval-outcome.ts) against the real approvals table code
 * (DynamoDbApprovalStore on dynalite) with Slack replaced by a recording object, and its handler
 * (handler.ts) as the Lambda runtime calls it, with its WebClient pointed at the local Slack Web API stand-in
 * (test/helpers/slack-api-server.ts) and its DynamoDB client at dynalite.
 *
 * Proves: `expired` closes a pending request as expired, even when this clock is a little behind
 * expiresAt, and leaves a request closed otherwise as it is; `failed` closes a pending request as denied
 * with 'approval workflow failed' (fail closed); an ABORTED execution closes it as withdrawn, with the
 * stop's cause or 'withdrawn by the client'; other execution statuses change nothing; `approved` and
 * `denied` are only read; a repeated event changes nothing twice; every closed request's Slack message is
 * rewritten at the stored channel and ts to the closed form, without buttons; a message Slack refuses to
 * update leaves the outcome recorded, while a network failure is thrown for a retry; a request that was
 * never created is reported, not an error; a malformed event names the bad field.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WebClient } from '@slack/web-api';
import { DynamoDbApprovalStore } from '../../../adapters/aws/dynamodb-approval-store.ts';
import { ApprovalStatus, newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver } from '../../../core/approval/approval-request.ts';
import { recordVote } from '../../../core/approval/approval-store.ts';
import {
  ApprovalOutcomeEventInvalidError,
  handleOutcomeEvent,
  parseOutcomeEvent,
  WITHDRAWN_REASON,
  WORKFLOW_FAILED_REASON,
  type ApprovalOutcomeDeps,
  type SlackChatUpdater,
} from '../../../functions/approval-outcome/approval-outcome.ts';
import { sampleApprovalRequest } from '../../helpers/approval-fixtures.ts';
import { lambdaContext } from '../../helpers/lambda-invoke-server.ts';
import { startDynalite, TEST_CREDENTIALS, TEST_REGION, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import { startSlackApiServer, type SlackApiServer } from '../../helpers/slack-api-server.ts';

process.env.POWERTOOLS_LOG_LEVEL ??= 'SILENT';

const TABLE = 'approvals';
const CHANNEL = 'C0APPROVALS';
const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:warden-approval';
const CREATED = Date.parse('2030-01-01T12:00:00.000Z');
const EXPIRES = CREATED + 15 * 60_000;
let sequence = 0;

function request(approvals = 1): ApprovalRequest {
  sequence += 1;
  return sampleApprovalRequest({ id: `apr-outcome-${process.pid}-${sequence}`, approvals, createdAt: CREATED, expiresAt: EXPIRES });
}

const alice: Approver = { id: 'alice@example.com', groups: ['db-approvers'], slackUserId: 'UALICE' };

type UpdateArgs = Parameters<SlackChatUpdater['chat']['update']>[0];

/** chat.update recorded; `answer` decides what each call does. */
function recordingSlack(answer: (args: UpdateArgs) => Promise<{ ok?: boolean; error?: string }> = async () => ({ ok: true })) {
  const updates: UpdateArgs[] = [];
  const slack: SlackChatUpdater = {
    chat: {
      update: (args) => {
        updates.push(args);
        return answer(args);
      },
    },
  };
  return { slack, updates };
}

function statusChange(name: string, status: string, cause: string | null) {
  return {
    version: '0',
    id: 'e0c4d4a9-0000-4000-8000-000000000000',
    'detail-type': 'Step Functions Execution Status Change',
    source: 'aws.states',
    account: '123456789012',
    time: '2030-01-01T12:01:00Z',
    region: 'us-east-1',
    resources: [`arn:aws:states:us-east-1:123456789012:execution:warden-approval:${name}`],
    detail: {
      executionArn: `arn:aws:states:us-east-1:123456789012:execution:warden-approval:${name}`,
      stateMachineArn: STATE_MACHINE_ARN,
      name,
      status,
      startDate: 1_893_499_200_000,
      stopDate: 1_893_499_260_000,
      input: '{}',
      output: null,
      error: status === 'ABORTED' && cause ? 'Warden.Withdrawn' : null,
      cause,
    },
  };
}

/** Texts of a Block Kit message, joined, to look for words in it. */
function textOf(args: UpdateArgs): string {
  return JSON.stringify(args.blocks);
}

describe('approval outcome function', { timeout: 20_000 }, () => {
  let db: LocalDynamoDb;
  let store: DynamoDbApprovalStore;

  before(async () => {
    db = await startDynalite();
    await db.createTable(TABLE);
    store = new DynamoDbApprovalStore({ client: db.client, tableName: TABLE });
  });
  after(async () => {
    await db?.close();
  });

  /** A pending request in the table with its Slack message posted. */
  async function pending(approvals = 1): Promise<{ id: ApprovalId; ts: string }> {
    const r = request(approvals);
    await store.create(newApprovalState(r));
    const ts = `1893499200.${String(sequence).padStart(6, '0')}`;
    await store.setSlackMessage(r.id, { channel: CHANNEL, ts });
    return { id: r.id, ts };
  }

  function deps(slack: SlackChatUpdater, nowMs: number): ApprovalOutcomeDeps {
    return { store, slack, now: () => new Date(nowMs) };
  }

  describe('logic', () => {
    let slack: ReturnType<typeof recordingSlack>;
    beforeEach(() => {
      slack = recordingSlack();
    });

    test('expired closes a pending request as expired and shows it in its Slack message', async () => {
      const { id, ts } = await pending();
      const now = EXPIRES + 2000;

      const result = await handleOutcomeEvent(deps(slack.slack, now), parseOutcomeEvent({ requestId: id, outcome: 'expired', error: 'States.Timeout', cause: 'no decision before the approval timeout' }));

      const state = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.expired);
      assert.equal(state?.decidedAt, new Date(now).toISOString());
      assert.equal(state?.revision, 1);
      assert.deepEqual(result, { requestId: id, status: 'expired', closedNow: true, slackMessageUpdated: true });
      assert.equal(slack.updates.length, 1);
      const update = slack.updates[0]!;
      assert.equal(update.channel, CHANNEL);
      assert.equal(update.ts, ts);
      assert.match(update.text, /^Expired: /);
      assert.match(textOf(update), /Expired/);
      assert.ok(!update.blocks.some((b) => b.type === 'actions'), 'a closed message has no buttons');
    });

    test('expired closes the request even when this clock is a little behind expiresAt', async () => {
      const { id } = await pending();

      await handleOutcomeEvent(deps(slack.slack, EXPIRES - 1500), parseOutcomeEvent({ requestId: id, outcome: 'expired' }));

      const state = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.expired);
      assert.equal(state?.decidedAt, new Date(EXPIRES).toISOString());
    });

    test('expired leaves a request approved just before the timeout approved, and its message shows the approval', async () => {
      const { id } = await pending();
      await recordVote(store, id, { approver: alice, choice: 'approve', channel: 'slack', now: new Date(EXPIRES - 1000) });

      const result = await handleOutcomeEvent(deps(slack.slack, EXPIRES + 1000), parseOutcomeEvent({ requestId: id, outcome: 'expired' }));

      assert.equal((await store.get(id))?.status, ApprovalStatus.approved);
      assert.equal(result.closedNow, false);
      assert.equal(result.status, 'approved');
      assert.match(slack.updates[0]!.text, /^Approved: /);
    });

    test('failed closes a pending request as denied (fail closed)', async () => {
      const { id, ts } = await pending();
      const now = CREATED + 5000;

      const result = await handleOutcomeEvent(
        deps(slack.slack, now),
        parseOutcomeEvent({ requestId: id, outcome: 'failed', error: 'Error', cause: '{"Error":"Error","Cause":"Slack answered channel_not_found"}' }),
      );

      const state = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.denied);
      assert.equal(state?.outcomeReason, WORKFLOW_FAILED_REASON);
      assert.equal(state?.decidedAt, new Date(now).toISOString());
      assert.equal(result.closedNow, true);
      assert.deepEqual([slack.updates[0]?.channel, slack.updates[0]?.ts], [CHANNEL, ts]);
      assert.match(slack.updates[0]!.text, /^Denied: /);
      assert.match(textOf(slack.updates[0]!), /approval workflow failed/);
    });

    test('failed for a request that was never created reports it and updates nothing', async () => {
      const result = await handleOutcomeEvent(deps(slack.slack, CREATED), parseOutcomeEvent({ requestId: 'apr-never-created', outcome: 'failed' }));

      assert.deepEqual(result, { requestId: 'apr-never-created', closedNow: false, slackMessageUpdated: false });
      assert.equal(await store.get('apr-never-created' as ApprovalId), undefined);
      assert.equal(slack.updates.length, 0);
    });

    test('an ABORTED execution closes the request as withdrawn with the stop cause', async () => {
      const { id, ts } = await pending();

      const result = await handleOutcomeEvent(deps(slack.slack, CREATED + 3000), parseOutcomeEvent(statusChange(id, 'ABORTED', 'the client cancelled the statement')));

      const state = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.withdrawn);
      assert.equal(state?.outcomeReason, 'the client cancelled the statement');
      assert.equal(result.closedNow, true);
      assert.deepEqual([slack.updates[0]?.channel, slack.updates[0]?.ts], [CHANNEL, ts]);
      assert.match(slack.updates[0]!.text, /^Withdrawn: /);
    });

    test('an ABORTED execution without a cause is withdrawn by the client', async () => {
      const { id } = await pending();

      await handleOutcomeEvent(deps(slack.slack, CREATED + 3000), parseOutcomeEvent(statusChange(id, 'ABORTED', null)));

      const state = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.withdrawn);
      assert.equal(state?.outcomeReason, WITHDRAWN_REASON);
    });

    test('other execution statuses change nothing', async () => {
      const { id } = await pending();

      const result = await handleOutcomeEvent(deps(slack.slack, CREATED + 3000), parseOutcomeEvent(statusChange(id, 'SUCCEEDED', null)));

      assert.equal(result.ignored, 'execution status SUCCEEDED');
      assert.equal((await store.get(id))?.revision, 0);
      assert.equal(slack.updates.length, 0);
    });

    test('approved and denied are only read, and the message shows them', async () => {
      const { id } = await pending();
      await recordVote(store, id, { approver: alice, choice: 'deny', reason: 'not during the quarter close', channel: 'slack', now: new Date(CREATED + 1000) });
      const denied = await store.get(id);

      const result = await handleOutcomeEvent(deps(slack.slack, CREATED + 2000), parseOutcomeEvent({ requestId: id, outcome: 'denied', error: 'Warden.Denied', cause: 'not during the quarter close' }));

      assert.deepEqual(await store.get(id), denied);
      assert.deepEqual(result, { requestId: id, status: 'denied', closedNow: false, slackMessageUpdated: true });
      assert.match(slack.updates[0]!.text, /^Denied: /);
      assert.match(textOf(slack.updates[0]!), /not during the quarter close/);
    });

    test('a repeated event changes nothing twice', async () => {
      const { id } = await pending();
      const event = parseOutcomeEvent({ requestId: id, outcome: 'expired' });

      const first = await handleOutcomeEvent(deps(slack.slack, EXPIRES + 1000), event);
      const state = await store.get(id);
      const second = await handleOutcomeEvent(deps(slack.slack, EXPIRES + 9000), event);

      assert.equal(first.closedNow, true);
      assert.equal(second.closedNow, false);
      assert.deepEqual(await store.get(id), state);
      assert.deepEqual(slack.updates[1], slack.updates[0], 'the same message, rewritten the same way');
    });

    test('a message Slack refuses to update leaves the outcome recorded; a network failure is thrown for a retry', async () => {
      const refused = recordingSlack(async () => {
        throw Object.assign(new Error('An API error occurred: message_not_found'), { code: 'slack_webapi_platform_error', data: { ok: false, error: 'message_not_found' } });
      });
      const { id: first } = await pending();

      const result = await handleOutcomeEvent(deps(refused.slack, CREATED + 1000), parseOutcomeEvent({ requestId: first, outcome: 'failed' }));

      assert.equal(result.slackMessageUpdated, false);
      assert.equal((await store.get(first))?.status, ApprovalStatus.denied);

      const unreachable = recordingSlack(async () => {
        throw Object.assign(new Error('A request error occurred: ECONNRESET'), { code: 'slack_webapi_request_error' });
      });
      const { id: second } = await pending();
      await assert.rejects(handleOutcomeEvent(deps(unreachable.slack, CREATED + 1000), parseOutcomeEvent({ requestId: second, outcome: 'failed' })), /ECONNRESET/);
      assert.equal((await store.get(second))?.status, ApprovalStatus.denied, 'recorded before the Slack update; the retry only updates Slack');
    });

    test('a malformed event names the bad field', () => {
      assert.throws(() => parseOutcomeEvent({ requestId: 'apr-1', outcome: 'maybe' }), (err: unknown) => err instanceof ApprovalOutcomeEventInvalidError && /outcome/.test(err.message));
      assert.throws(() => parseOutcomeEvent({ requestId: 'apr-1', outcome: 'expired', extra: 1 }), /extra/);
      assert.throws(() => parseOutcomeEvent({ ...statusChange('apr-1', 'ABORTED', null), source: 'aws.other' }), /source/);
      assert.throws(() => parseOutcomeEvent(null), ApprovalOutcomeEventInvalidError);
    });
  });

  describe('handler', () => {
    let slackApi: SlackApiServer;
    let poster: WebClient;
    let handler: (event: unknown, context: ReturnType<typeof lambdaContext>) => Promise<unknown>;

    before(async () => {
      slackApi = await startSlackApiServer({ token: 'xoxb-test-token' });
      poster = new WebClient('xoxb-test-token', { slackApiUrl: slackApi.url, retryConfig: { retries: 0 } });
      Object.assign(process.env, {
        APPROVALS_TABLE: TABLE,
        SLACK_BOT_TOKEN: 'xoxb-test-token',
        SLACK_API_URL: slackApi.url,
        AWS_REGION: TEST_REGION,
        AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
        AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
      });
      ({ handler } = (await import('../../../functions/approval-outcome/handler.ts')) as unknown as { handler: typeof handler });
    });
    after(async () => {
      await slackApi?.close();
    });

    /** A pending request whose message the approval request function posted. */
    async function posted(): Promise<{ id: ApprovalId; ts: string }> {
      const r = request();
      await store.create(newApprovalState(r));
      const answer = await poster.chat.postMessage({ channel: CHANNEL, text: 'Approval needed' });
      await store.setSlackMessage(r.id, { channel: CHANNEL, ts: answer.ts! });
      return { id: r.id, ts: answer.ts! };
    }

    test('a RecordOutcome event records the outcome and rewrites the message at the stored channel and ts', async () => {
      const { id, ts } = await posted();
      slackApi.clearCalls();

      const result = await handler({ requestId: id, outcome: 'failed', error: 'Error', cause: '{}' }, lambdaContext('warden-approval-outcome'));

      assert.deepEqual(result, { requestId: id, status: 'denied', closedNow: true, slackMessageUpdated: true });
      assert.equal((await store.get(id))?.outcomeReason, WORKFLOW_FAILED_REASON);
      const updates = slackApi.callsTo('chat.update');
      assert.equal(updates.length, 1);
      assert.equal(updates[0]!.token, 'xoxb-test-token');
      assert.equal(updates[0]!.args.channel, CHANNEL);
      assert.equal(updates[0]!.args.ts, ts);
      const message = slackApi.messages.get(`${CHANNEL}/${ts}`)!;
      assert.equal(message.updates, 1);
      assert.match(message.text, /^Denied: /);
      assert.ok(!(message.blocks as { type: string }[]).some((b) => b.type === 'actions'));
    });

    test('an ABORTED status change withdraws the request and updates its message', async () => {
      const { id, ts } = await posted();

      await handler(statusChange(id, 'ABORTED', null), lambdaContext('warden-approval-outcome'));

      const state: ApprovalState | undefined = await store.get(id);
      assert.equal(state?.status, ApprovalStatus.withdrawn);
      assert.equal(state?.outcomeReason, WITHDRAWN_REASON);
      assert.match(slackApi.messages.get(`${CHANNEL}/${ts}`)!.text, /^Withdrawn: /);
    });

    test('a message Slack no longer has leaves the outcome recorded', async () => {
      const r = request();
      await store.create(newApprovalState(r));
      await store.setSlackMessage(r.id, { channel: CHANNEL, ts: '1600000000.000001' });

      const result = await handler({ requestId: r.id, outcome: 'expired' }, lambdaContext('warden-approval-outcome'));

      assert.deepEqual(result, { requestId: r.id, status: 'expired', closedNow: true, slackMessageUpdated: false });
    });

    test('a malformed event fails the invocation with the problem', async () => {
      await assert.rejects(handler({ requestId: '', outcome: 'expired' }, lambdaContext('warden-approval-outcome')), ApprovalOutcomeEventInvalidError);
    });
  });
});
