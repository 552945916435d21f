/**
 * The Slack side of an approval, end to end with real parts: the approval-request and slack-interactions
 * logic over the real DynamoDB store (dynalite on 127.0.0.1), the real Slack WebClient talking to a local
 * stand-in for Slack's Web API (test/helpers/slack-api-server.ts), and Slack's real signing algorithm.
 *
 * No Step Functions emulator exists here (and aws-local-stepfunctions has no SendTaskSuccess), so the
 * Step Functions client is faked at the SDK boundary: an object implementing `send` that records the
 * SendTaskSuccess / SendTaskFailure commands it gets, and answers a second completion of the same token
 * with the SDK's own TaskTimedOut error, as the service does.
 *
 * Proves: the request is posted to the first approver group's channel with the expected blocks (full
 * statement in the thread when truncated) and a retried task posts nothing twice; a mapped approver's
 * Approve completes a 1-of-1 task; 2-of-N needs two different approvers (a double click counts once);
 * Deny opens the modal and its submission fails the task with the reason; a forged or stale request is
 * 401 and changes nothing; an unknown Slack user, an approver outside the group, self-approval and a click
 * after expiry are refused with an ephemeral message and change nothing; a Slack retry of an accepted click
 * is a no-op, and a retry after a failed completion makes the completion up. Both handlers, as wired with
 * middy from the environment, post a request and answer a forged click with 401.
 */
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SendTaskFailureCommand, SendTaskSuccessCommand, TaskTimedOut } from '@aws-sdk/client-sfn';
import { WebClient } from '@slack/web-api';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { DynamoDbApprovalStore } from '../../../adapters/aws/dynamodb-approval-store.ts';
import type { ApprovalId, ApprovalRequest } from '../../../core/approval/approval-request.ts';
import { SlackActionId, DENY_MODAL_CALLBACK_ID, DENY_REASON_ACTION_ID, DENY_REASON_BLOCK_ID } from '../../../core/approval/slack-messages.ts';
import { signSlackRequest } from '../../../core/approval/slack-signature.ts';
import { ApprovalsSchema } from '../../../core/config/schema.ts';
import {
  ApprovalRoutingError,
  ApprovalTaskInvalidError,
  approversOf,
  requestApproval,
  type ApprovalRequestDependencies,
  type StructuredLog,
  type TaskCallbacks,
} from '../../../functions/approval-request/approval-request.ts';
import { handleSlackInteraction, type SlackInteractionDependencies } from '../../../functions/slack-interactions/slack-interactions.ts';
import { startDynalite, TEST_CREDENTIALS, TEST_REGION, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import { lambdaContext } from '../../helpers/lambda-invoke-server.ts';
import { startSlackApiServer, type SlackApiServer } from '../../helpers/slack-api-server.ts';

const BOT_TOKEN = 'xoxb-test-bot-token';
const SIGNING_SECRET = 'test-signing-secret-0123456789abcdef';
const TABLE = 'approvals';
const DB_CHANNEL = 'CDBAPPRV';

const config = ApprovalsSchema.parse({
  approvers: [
    { id: 'alice@example.com', groups: ['db-approvers'], slackUserId: 'UALICE01' },
    { id: 'bob@example.com', groups: ['db-approvers'], slackUserId: 'UBOB0001' },
    { id: 'carol@example.com', groups: ['db-approvers'], slackUserId: 'UCAROL01', identities: [{ issuer: 'https://issuer.example', subject: 'carol-bot' }] },
    { id: 'dave@example.com', groups: ['ssh-approvers'], slackUserId: 'UDAVE001' },
  ],
  // finance-approvers has no channel: requests go to the next group's.
  slack: { channels: { 'ssh-approvers': 'CSSH0001', 'db-approvers': DB_CHANNEL } },
});

/** Step Functions at the SDK boundary: records completions; a token completes once, then TaskTimedOut. */
class FakeStepFunctions implements TaskCallbacks {
  readonly successes: { taskToken: string; output: unknown }[] = [];
  readonly failures: { taskToken: string; error: string | undefined; cause: string | undefined }[] = [];
  private readonly done = new Set<string>();
  /** Errors to throw on the next calls (an outage). */
  readonly outage: Error[] = [];

  async send(command: SendTaskSuccessCommand | SendTaskFailureCommand): Promise<unknown> {
    const down = this.outage.shift();
    if (down) throw down;
    const token = command.input.taskToken ?? '';
    if (this.done.has(token)) throw new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} });
    this.done.add(token);
    if (command instanceof SendTaskSuccessCommand) this.successes.push({ taskToken: token, output: JSON.parse(command.input.output ?? 'null') });
    else this.failures.push({ taskToken: token, error: command.input.error, cause: command.input.cause });
    return { $metadata: {} };
  }
  get completions(): number {
    return this.successes.length + this.failures.length;
  }
}

class RecordingLog implements StructuredLog {
  readonly lines: { level: string; message: string; attributes: Record<string, unknown> }[] = [];
  info(message: string, attributes: Record<string, unknown>): void {
    this.lines.push({ level: 'info', message, attributes });
  }
  warn(message: string, attributes: Record<string, unknown>): void {
    this.lines.push({ level: 'warn', message, attributes });
  }
  error(message: string, attributes: Record<string, unknown>): void {
    this.lines.push({ level: 'error', message, attributes });
  }
  votes(): Record<string, unknown>[] {
    return this.lines.filter((l) => l.message === 'approval.vote').map((l) => l.attributes);
  }
}

let sequence = 0;
function approvalRequest(o: { approvals?: number; text?: string; subject?: string; expiresInMs?: number; now: number }): ApprovalRequest {
  sequence += 1;
  return {
    id: `apr-${process.pid}-${sequence}` as ApprovalId,
    requester: { issuer: 'https://issuer.example', subject: o.subject ?? 'etl-bot', groups: ['writers'] },
    target: { name: 'ledger', kind: 'postgres', environment: 'production' },
    sessionId: 'sess-42',
    statement: {
      text: o.text ?? 'DELETE FROM accounts WHERE closed_at < now() - interval \'7 years\'',
      fingerprint: 'fp-1',
      digest: 'ab'.repeat(32),
      command: 'DELETE',
      tables: ['public.accounts'],
      risks: ['write'],
    },
    reason: 'yearly retention clean-up <!channel>',
    policies: ['sql.write.production-approval'],
    policyReason: 'changes to production data need approval',
    requirement: { approvers: ['finance-approvers', 'db-approvers'], approvals: o.approvals ?? 1 },
    mode: 'wait',
    createdAt: new Date(o.now).toISOString(),
    expiresAt: new Date(o.now + (o.expiresInMs ?? 15 * 60_000)).toISOString(),
  };
}

describe('approvals in Slack', { timeout: 20_000 }, () => {
  let db: LocalDynamoDb;
  let slackApi: SlackApiServer;
  let store: DynamoDbApprovalStore;
  let slack: WebClient;
  let sfn: FakeStepFunctions;
  let log: RecordingLog;
  /** The interaction function's clock, and the clock Slack signs with. */
  let clock: number;

  before(async () => {
    db = await startDynalite();
    await db.createTable(TABLE);
    slackApi = await startSlackApiServer({ token: BOT_TOKEN });
    store = new DynamoDbApprovalStore({ client: db.client, tableName: TABLE });
    slack = new WebClient(undefined, { slackApiUrl: slackApi.url, retryConfig: { retries: 0 }, allowAbsoluteUrls: false });
  });
  after(async () => {
    await slackApi?.close();
    await db?.close();
  });
  beforeEach(() => {
    sfn = new FakeStepFunctions();
    log = new RecordingLog();
    clock = Date.now();
    slackApi.clearCalls();
  });

  const requestDeps = (): ApprovalRequestDependencies => ({ store, slack, slackToken: async () => BOT_TOKEN, sfn, config, log });
  const interactionDeps = (): SlackInteractionDependencies => ({
    store,
    slack,
    slackToken: async () => BOT_TOKEN,
    signingSecret: async () => SIGNING_SECRET,
    approvers: approversOf(config),
    sfn,
    log,
    now: () => new Date(clock),
  });

  /** Posts a new request as the state machine's task would; returns it and its task token. */
  async function posted(o: { approvals?: number; text?: string; subject?: string; expiresInMs?: number } = {}) {
    const request = approvalRequest({ ...o, now: Date.now() });
    const taskToken = `task-token-${request.id}`;
    await requestApproval({ request, taskToken }, requestDeps());
    slackApi.clearCalls();
    return { request, taskToken };
  }

  /** A function URL event as Slack sends it: form-encoded `payload`, signed over the raw body. */
  function slackEvent(payload: unknown, o: { secret?: string; timestamp?: number; retryNum?: number; base64?: boolean; signature?: string } = {}): APIGatewayProxyEventV2 {
    const body = `payload=${encodeURIComponent(JSON.stringify(payload))}`;
    const timestamp = String(o.timestamp ?? Math.floor(clock / 1000));
    const signature = o.signature ?? signSlackRequest({ rawBody: body, timestamp, signingSecret: o.secret ?? SIGNING_SECRET });
    return {
      version: '2.0',
      routeKey: '$default',
      rawPath: '/',
      rawQueryString: '',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-slack-request-timestamp': timestamp,
        'x-slack-signature': signature,
        ...(o.retryNum !== undefined ? { 'x-slack-retry-num': String(o.retryNum), 'x-slack-retry-reason': 'http_timeout' } : {}),
      },
      requestContext: {
        accountId: 'anonymous',
        apiId: 'url-id',
        domainName: 'url-id.lambda-url.us-east-1.on.aws',
        domainPrefix: 'url-id',
        http: { method: 'POST', path: '/', protocol: 'HTTP/1.1', sourceIp: '203.0.113.9', userAgent: 'Slackbot 1.0' },
        requestId: 'req-1',
        routeKey: '$default',
        stage: '$default',
        time: new Date(clock).toUTCString(),
        timeEpoch: clock,
      },
      body: o.base64 ? Buffer.from(body).toString('base64') : body,
      isBase64Encoded: o.base64 ?? false,
    };
  }

  const click = (request: ApprovalRequest, slackUserId: string, action: string = SlackActionId.approve) => ({
    type: 'block_actions',
    user: { id: slackUserId, username: 'display-name-is-never-used', name: 'alice' },
    trigger_id: `trigger-${Math.random()}`,
    channel: { id: DB_CHANNEL, name: 'db-approvals' },
    container: { type: 'message', channel_id: DB_CHANNEL, message_ts: 'ignored-when-stored' },
    response_url: 'https://hooks.slack.com/actions/T0/1/x',
    actions: [{ type: 'button', action_id: action, block_id: 'warden_decision', value: request.id, action_ts: '1' }],
  });

  const denySubmission = (request: ApprovalRequest, slackUserId: string, reason: string) => ({
    type: 'view_submission',
    user: { id: slackUserId },
    view: {
      id: 'V1',
      callback_id: DENY_MODAL_CALLBACK_ID,
      private_metadata: request.id,
      state: { values: { [DENY_REASON_BLOCK_ID]: { [DENY_REASON_ACTION_ID]: { type: 'plain_text_input', value: reason } } } },
    },
  });

  const interact = (event: APIGatewayProxyEventV2) => handleSlackInteraction(event, interactionDeps()) as Promise<APIGatewayProxyStructuredResultV2>;

  const ephemeralTo = (user: string) => slackApi.callsTo('chat.postEphemeral').filter((c) => c.args.user === user);

  describe('the request message', () => {
    test('is posted to the first approver group with a channel, with the request and the buttons', async () => {
      const request = approvalRequest({ now: Date.now() });

      const result = await requestApproval({ request, taskToken: 'tok-1' }, requestDeps());

      assert.equal(result.action, 'posted');
      const posts = slackApi.callsTo('chat.postMessage');
      assert.equal(posts.length, 1, 'no thread for a short statement');
      const post = posts[0]!;
      assert.equal(post.token, BOT_TOKEN);
      assert.equal(post.args.channel, DB_CHANNEL);
      const blocks = post.args.blocks as { type: string; text?: { text: string }; elements?: { action_id: string; value: string }[] }[];
      const actions = blocks.find((b) => b.type === 'actions');
      assert.deepEqual(actions?.elements?.map((e) => [e.action_id, e.value]), [['warden_approve', request.id], ['warden_deny', request.id]]);
      const all = JSON.stringify(blocks);
      assert.match(all, /DELETE FROM accounts/);
      assert.match(all, /sql\.write\.production-approval/);
      assert.match(all, /yearly retention clean-up &lt;!channel&gt;/, 'the agent reason is escaped');
      assert.doesNotMatch(all, /<!channel>/);
      assert.deepEqual(await store.getSlackMessage(request.id), { channel: DB_CHANNEL, ts: result.slackMessage?.ts });
      assert.equal(await store.getTaskToken(request.id), 'tok-1');
      assert.equal((await store.get(request.id))?.status, 'pending');
    });

    test('a long statement is truncated and posted in full in the thread', async () => {
      const text = `UPDATE accounts SET note = '${'x<y&z '.repeat(2000)}' WHERE id = 1`;
      const request = approvalRequest({ now: Date.now(), text });

      const result = await requestApproval({ request, taskToken: 'tok-2' }, requestDeps());

      const [main, ...thread] = slackApi.callsTo('chat.postMessage');
      assert.match(JSON.stringify(main?.args.blocks), /full statement is in the thread/);
      assert.ok(thread.length >= 1);
      for (const reply of thread) assert.equal(reply.args.thread_ts, result.slackMessage?.ts);
      const shown = thread
        .flatMap((r) => r.args.blocks as { type: string; text?: { text: string } }[])
        .filter((b) => b.type === 'section')
        .map((b) => b.text!.text.replace(/^```\n/, '').replace(/\n```$/, ''))
        .join('');
      assert.equal(shown.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&'), text);
    });

    test('a retried task posts nothing twice: it updates the message and keeps the newest token', async () => {
      const request = approvalRequest({ now: Date.now() });
      const first = await requestApproval({ request, taskToken: 'tok-first' }, requestDeps());

      const again = await requestApproval({ request, taskToken: 'tok-retry' }, requestDeps());

      assert.equal(again.action, 'updated');
      assert.deepEqual(again.slackMessage, first.slackMessage);
      assert.equal(slackApi.callsTo('chat.postMessage').length, 1);
      assert.equal(slackApi.callsTo('chat.update').length, 1);
      assert.equal(await store.getTaskToken(request.id), 'tok-retry');
    });

    test('a retried task of a request decided meanwhile completes the new token at once', async () => {
      const { request } = await posted();
      await interact(slackEvent(click(request, 'UALICE01')));
      assert.equal(sfn.successes.length, 1);

      const again = await requestApproval({ request, taskToken: 'tok-late' }, requestDeps());

      assert.equal(again.action, 'completed');
      assert.deepEqual(sfn.successes.map((s) => s.taskToken), [`task-token-${request.id}`, 'tok-late']);
      assert.equal(await store.getTaskToken(request.id), undefined);
    });

    test('the same id with another request, bad input and a request no channel serves all fail the task', async () => {
      const request = approvalRequest({ now: Date.now() });
      await requestApproval({ request, taskToken: 't' }, requestDeps());
      slackApi.clearCalls();

      await assert.rejects(requestApproval({ request: { ...request, reason: 'something else' }, taskToken: 't' }, requestDeps()), { name: 'ApprovalRequestConflictError' });
      await assert.rejects(requestApproval({ request: { ...request, id: 'bad id!' }, taskToken: 't' }, requestDeps()), ApprovalTaskInvalidError);
      await assert.rejects(requestApproval({ request }, requestDeps()), ApprovalTaskInvalidError);
      const unrouted = { ...approvalRequest({ now: Date.now() }), requirement: { approvers: ['finance-approvers'], approvals: 1 } };
      await assert.rejects(requestApproval({ request: unrouted, taskToken: 't' }, requestDeps()), ApprovalRoutingError);

      assert.equal(await store.get(unrouted.id), undefined);
      assert.equal(slackApi.callsTo('chat.postMessage').length, 0);
    });
  });

  describe('votes', () => {
    test('Approve by a mapped approver completes a 1-of-1 task and closes the message', async () => {
      const { request, taskToken } = await posted();

      const res = await interact(slackEvent(click(request, 'UALICE01'), { base64: true }));

      assert.equal(res.statusCode, 200);
      const state = await store.get(request.id);
      assert.equal(state?.status, 'approved');
      assert.deepEqual(state?.votes.map((v) => [v.approverId, v.choice, v.channel]), [['alice@example.com', 'approve', 'slack']]);
      assert.equal(sfn.successes.length, 1);
      assert.equal(sfn.successes[0]?.taskToken, taskToken);
      assert.deepEqual(sfn.successes[0]?.output, { status: 'approved', votes: state?.votes });
      assert.equal(await store.getTaskToken(request.id), undefined, 'a used token is forgotten');
      const update = slackApi.callsTo('chat.update');
      assert.equal(update.length, 1);
      const blocks = update[0]!.args.blocks as { type: string }[];
      assert.equal(blocks.some((b) => b.type === 'actions'), false, 'no buttons once closed');
      assert.match(JSON.stringify(blocks), /Approved by:\* alice@example\.com/);
      assert.deepEqual(log.votes().map((v) => [v.approverId, v.slackUserId, v.choice, v.outcome]), [['alice@example.com', 'UALICE01', 'approve', 'accepted']]);
    });

    test('2-of-N needs two different approvers; a double click of the first counts once', async () => {
      const { request, taskToken } = await posted({ approvals: 2 });

      await interact(slackEvent(click(request, 'UALICE01')));
      await interact(slackEvent(click(request, 'UALICE01')));
      const afterDouble = await store.get(request.id);
      await interact(slackEvent(click(request, 'UBOB0001')));

      assert.equal(afterDouble?.status, 'pending');
      assert.equal(afterDouble?.votes.length, 1);
      assert.equal(afterDouble?.revision, 1);
      assert.equal(ephemeralTo('UALICE01').length, 1, 'the double click is answered to the clicker');
      assert.match(String(ephemeralTo('UALICE01')[0]?.args.text), /already recorded/);
      const state = await store.get(request.id);
      assert.equal(state?.status, 'approved');
      assert.deepEqual(state?.votes.map((v) => v.approverId), ['alice@example.com', 'bob@example.com']);
      assert.deepEqual(sfn.successes.map((s) => s.taskToken), [taskToken]);
      assert.equal(slackApi.callsTo('chat.update').length, 2, 'updated after each accepted vote');
      assert.deepEqual(log.votes().map((v) => v.outcome), ['accepted', 'duplicate', 'accepted']);
    });

    test('Deny opens the modal; its submission fails the task with the reason', async () => {
      const { request, taskToken } = await posted();

      const opened = await interact(slackEvent(click(request, 'UBOB0001', SlackActionId.deny)));
      const views = slackApi.callsTo('views.open');
      const unchanged = await store.get(request.id);
      const submitted = await interact(slackEvent(denySubmission(request, 'UBOB0001', 'not during the audit freeze')));

      assert.equal(opened.statusCode, 200);
      assert.equal(views.length, 1);
      const view = views[0]!.args.view as { callback_id: string; private_metadata: string; blocks: { type: string; block_id?: string; optional?: boolean; element?: { multiline?: boolean } }[] };
      assert.equal(view.callback_id, 'warden_deny_reason');
      assert.equal(view.private_metadata, request.id);
      const input = view.blocks.find((b) => b.type === 'input');
      assert.equal(input?.element?.multiline, true);
      assert.notEqual(input?.optional, true);
      assert.equal(unchanged?.revision, 0, 'opening the modal is not a vote');
      assert.equal(submitted.statusCode, 200);
      assert.equal(submitted.body, '', 'an empty answer closes the modal');
      const state = await store.get(request.id);
      assert.equal(state?.status, 'denied');
      assert.equal(state?.outcomeReason, 'not during the audit freeze');
      assert.deepEqual(sfn.failures, [{ taskToken, error: 'Warden.Denied', cause: 'not during the audit freeze' }]);
      assert.equal(sfn.successes.length, 0);
      assert.match(JSON.stringify(slackApi.callsTo('chat.update')[0]?.args.blocks), /Denied by:\* bob@example\.com/);
    });

    test('a denial without a reason keeps the modal open with the error and changes nothing', async () => {
      const { request } = await posted();

      const res = await interact(slackEvent(denySubmission(request, 'UBOB0001', '   ')));

      assert.equal(res.statusCode, 200);
      const body = JSON.parse(String(res.body)) as { response_action: string; errors: Record<string, string> };
      assert.equal(body.response_action, 'errors');
      assert.match(body.errors[DENY_REASON_BLOCK_ID] ?? '', /needs a reason/);
      assert.equal((await store.get(request.id))?.revision, 0);
      assert.equal(sfn.completions, 0);
    });
  });

  describe('refused', () => {
    const refusedCases: { name: string; slackUser: string; subject?: string; expired?: boolean; refusal: string; message: RegExp }[] = [
      { name: 'an unknown Slack user', slackUser: 'UNOBODY1', refusal: 'unknown_approver', message: /not a configured approver/ },
      { name: 'an approver not in the group', slackUser: 'UDAVE001', refusal: 'not_in_group', message: /must be in finance-approvers or db-approvers/ },
      { name: 'self-approval (the approver is the requesting identity)', slackUser: 'UCAROL01', subject: 'carol-bot', refusal: 'self_approval', message: /own request/ },
      { name: 'a click after expiry', slackUser: 'UALICE01', expired: true, refusal: 'expired', message: /expired/ },
    ];
    for (const c of refusedCases) {
      test(`${c.name}: refused with an ephemeral message, nothing changes`, async () => {
        const { request } = await posted({ ...(c.subject ? { subject: c.subject } : {}) });
        if (c.expired) clock = Date.parse(request.expiresAt) + 1000;

        const res = await interact(slackEvent(click(request, c.slackUser)));

        assert.equal(res.statusCode, 200);
        const state = await store.get(request.id);
        assert.equal(state?.status, 'pending');
        assert.equal(state?.revision, 0);
        assert.equal(sfn.completions, 0);
        assert.equal(slackApi.callsTo('chat.update').length, 0);
        const answers = ephemeralTo(c.slackUser);
        assert.equal(answers.length, 1);
        assert.equal(answers[0]?.args.channel, DB_CHANNEL);
        assert.match(String(answers[0]?.args.text), c.message);
        assert.deepEqual(log.votes().map((v) => [v.slackUserId, v.outcome, v.refused]), [[c.slackUser, 'refused', c.refusal]]);
      });
    }

    test('a refused Deny click opens no modal', async () => {
      const { request } = await posted();

      await interact(slackEvent(click(request, 'UDAVE001', SlackActionId.deny)));

      assert.equal(slackApi.callsTo('views.open').length, 0);
      assert.equal(ephemeralTo('UDAVE001').length, 1);
    });

    const forged: { name: string; event: (p: unknown) => APIGatewayProxyEventV2; reason: string }[] = [
      { name: 'a forged signature', event: (p) => slackEvent(p, { signature: `v0=${'0'.repeat(64)}` }), reason: 'signature_mismatch' },
      { name: 'another signing secret', event: (p) => slackEvent(p, { secret: 'someone-elses-secret' }), reason: 'signature_mismatch' },
      { name: 'a stale timestamp (a replayed request)', event: (p) => slackEvent(p, { timestamp: Math.floor(clock / 1000) - 600 }), reason: 'stale_timestamp' },
    ];
    for (const f of forged) {
      test(`${f.name}: 401, nothing processed, the attempt logged`, async () => {
        const { request } = await posted();

        const res = await interact(f.event(click(request, 'UALICE01')));

        assert.equal(res.statusCode, 401);
        assert.equal(res.body, 'invalid request signature');
        assert.equal((await store.get(request.id))?.revision, 0);
        assert.equal(slackApi.calls.length, 0);
        assert.equal(sfn.completions, 0);
        assert.deepEqual(log.votes().map((v) => [v.outcome, v.refused, v.detail]), [['rejected', 'bad_signature', f.reason]]);
      });
    }
  });

  test('a body over the size limit is refused with 413 before its signature is even computed', async () => {
    const { request } = await posted();
    const event = slackEvent({ ...click(request, 'UALICE01'), padding: 'x'.repeat(300 * 1024) });

    const res = await interact(event);

    assert.equal(res.statusCode, 413);
    assert.equal((await store.get(request.id))?.revision, 0);
    assert.equal(slackApi.calls.length, 0);
    assert.deepEqual(log.votes().map((v) => [v.outcome, v.refused]), [['rejected', 'body_too_large']]);
  });

  describe('Slack retries', () => {
    test('a retry of an accepted click is a no-op', async () => {
      const { request } = await posted();
      const event = click(request, 'UALICE01');
      await interact(slackEvent(event));
      const before = await store.get(request.id);
      slackApi.clearCalls();

      const res = await interact(slackEvent(event, { retryNum: 1 }));

      assert.equal(res.statusCode, 200);
      assert.deepEqual(await store.get(request.id), before);
      assert.equal(sfn.completions, 1);
      assert.equal(slackApi.calls.length, 0, 'no update and no ephemeral message');
      assert.deepEqual(log.votes().map((v) => [v.outcome, v.retryNum ?? null]), [['accepted', null], ['duplicate', '1']]);
    });

    test('a retry after a failed completion completes the task', async () => {
      const { request, taskToken } = await posted();
      sfn.outage.push(Object.assign(new Error('service unavailable'), { name: 'ServiceUnavailable' }));

      await assert.rejects(interact(slackEvent(click(request, 'UALICE01'))), { name: 'ApprovalTaskCallbackError' });
      assert.equal((await store.get(request.id))?.status, 'approved');
      await interact(slackEvent(click(request, 'UALICE01'), { retryNum: 1 }));

      assert.deepEqual(sfn.successes.map((s) => s.taskToken), [taskToken]);
      assert.equal(await store.getTaskToken(request.id), undefined);
    });
  });

  test('no log line holds a task token or the bot token', async () => {
    const { request } = await posted({ approvals: 1 });
    await interact(slackEvent(click(request, 'UALICE01')));
    await interact(slackEvent(click(request, 'UNOBODY1')));

    const all = JSON.stringify(log.lines);
    assert.doesNotMatch(all, /task-token-/);
    assert.doesNotMatch(all, new RegExp(BOT_TOKEN));
  });

  describe('the handlers as deployed', () => {
    type RequestHandler = typeof import('../../../functions/approval-request/handler.ts');
    type InteractionHandler = typeof import('../../../functions/slack-interactions/handler.ts');
    let requestHandler: RequestHandler['handler'];
    let interactionHandler: InteractionHandler['handler'];

    before(async () => {
      Object.assign(process.env, {
        APPROVALS_TABLE: TABLE,
        APPROVALS_CONFIG: JSON.stringify(config),
        SLACK_BOT_TOKEN: BOT_TOKEN,
        SLACK_SIGNING_SECRET: SIGNING_SECRET,
        SLACK_API_URL: slackApi.url,
        AWS_ENDPOINT_URL_DYNAMODB: db.endpoint,
        // Step Functions is never reached by these cases; nothing listens here.
        AWS_ENDPOINT_URL_SFN: 'http://127.0.0.1:9',
        AWS_REGION: TEST_REGION,
        AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
        POWERTOOLS_LOG_LEVEL: process.env.POWERTOOLS_LOG_LEVEL ?? 'SILENT',
      });
      requestHandler = ((await import('../../../functions/approval-request/handler.ts')) as RequestHandler).handler;
      interactionHandler = ((await import('../../../functions/slack-interactions/handler.ts')) as InteractionHandler).handler;
    });

    test('the task function posts the request; the interaction function counts a vote and refuses a forged one', async () => {
      const request = approvalRequest({ now: Date.now(), approvals: 2 });

      const result = await requestHandler({ request, taskToken: 'tok-handler' }, lambdaContext('approval-request'));
      const forgedRes = await interactionHandler(slackEvent(click(request, 'UALICE01'), { secret: 'wrong' }), lambdaContext('slack-interactions'));
      const clicked = await interactionHandler(slackEvent(click(request, 'UALICE01')), lambdaContext('slack-interactions'));

      assert.equal(result.action, 'posted');
      assert.equal(slackApi.callsTo('chat.postMessage')[0]?.args.channel, DB_CHANNEL);
      assert.equal((forgedRes as APIGatewayProxyStructuredResultV2).statusCode, 401);
      assert.equal((clicked as APIGatewayProxyStructuredResultV2).statusCode, 200);
      const state = await store.get(request.id);
      assert.deepEqual(state?.votes.map((v) => v.approverId), ['alice@example.com']);
      assert.equal(slackApi.callsTo('chat.update').length, 1);
    });

    test('bad task input fails the task with ApprovalTaskInvalidError', async () => {
      await assert.rejects(requestHandler({ request: { id: 'x' }, taskToken: 'secret-token' }, lambdaContext('approval-request')), (err: Error) => {
        assert.equal(err.name, 'ApprovalTaskInvalidError');
        assert.doesNotMatch(err.message, /secret-token/);
        return true;
      });
    });
  });
});
