/**
 * The Block Kit that approvers see. Proves: text from agents and configuration is escaped so mentions
 * and links cannot be injected, and a statement cannot close its code block; a long statement is cut in
 * the message (never inside an escape or a character) and given whole in thread replies; every text stays
 * within Slack's limits; the buttons carry the request id while pending and are gone once the request is
 * closed, whichever way it closed, with who decided, when and why; the deny modal asks for a required reason.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState } from '../../../../core/approval/approval-request.ts';
import { castVote, expire, withdraw } from '../../../../core/approval/approval-rules.ts';
import {
  MAX_THREAD_MESSAGES,
  STATEMENT_PREVIEW_CHARS,
  escapeMrkdwn,
  renderApprovalMessage,
  renderClosedMessage,
  renderDenyModal,
  renderRequestMessage,
  renderStatementThread,
  statementIsTruncated,
  type SlackBlock,
  type SlackMessage,
} from '../../../../core/approval/slack-messages.ts';

const NOW = new Date('2030-01-01T12:00:00.000Z');
const INJECTION = '<!channel> <@U0BOSS> <https://evil.example|click me> & co';

function request(o: Partial<ApprovalRequest> & { text?: string } = {}): ApprovalRequest {
  const { text, ...rest } = o;
  return {
    id: 'apr-1' as ApprovalId,
    requester: { issuer: 'https://issuer.example', subject: 'etl-bot', groups: ['writers'] },
    target: { name: 'ledger', kind: 'postgres', environment: 'production' },
    sessionId: 'sess-1',
    statement: { text: text ?? 'DELETE FROM accounts WHERE id = 7', fingerprint: 'fp', digest: 'c0ffee'.repeat(10), command: 'DELETE', tables: ['public.accounts'], risks: ['write'] },
    reason: 'monthly clean-up',
    policies: ['sql.write.production-approval'],
    policyReason: 'changes to production data need approval',
    requirement: { approvers: ['db-approvers'], approvals: 2 },
    mode: 'wait',
    createdAt: NOW.toISOString(),
    expiresAt: new Date(NOW.getTime() + 15 * 60_000).toISOString(),
    ...rest,
  };
}

const alice = { id: 'alice@example.com', groups: ['db-approvers'] };
const bob = { id: 'bob@example.com', groups: ['db-approvers'] };

function accepted(state: ApprovalState, approver: { id: string; groups: string[] }, choice: 'approve' | 'deny', reason?: string): ApprovalState {
  const r = castVote(state, { approver, choice, ...(reason ? { reason } : {}), channel: 'slack', now: NOW });
  assert.equal(r.kind, 'accepted');
  return r.state;
}

/** Every mrkdwn / plain text string of a message, with its kind. */
function texts(blocks: readonly SlackBlock[]): string[] {
  const out: string[] = [];
  for (const b of blocks) {
    if (b.type === 'section') {
      if (b.text) out.push(b.text.text);
      for (const f of b.fields ?? []) out.push(f.text);
    } else if (b.type === 'context') out.push(...b.elements.map((e) => e.text));
  }
  return out;
}

function assertWithinSlackLimits(m: SlackMessage): void {
  assert.ok(m.blocks.length <= 50, 'at most 50 blocks');
  for (const b of m.blocks) {
    if (b.type === 'section') {
      assert.ok((b.text?.text.length ?? 0) <= 3000, `section text of ${b.text?.text.length}`);
      assert.ok((b.fields?.length ?? 0) <= 10);
      for (const f of b.fields ?? []) assert.ok(f.text.length <= 2000, `field of ${f.text.length}`);
    }
  }
}

/** Our own markup: Slack date tokens. Everything else in angle brackets would be an injected control sequence. */
const stripDates = (s: string) => s.replace(/<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[0-9T:.Z-]+>/g, '');

describe('Slack messages', () => {
  test('escapeMrkdwn escapes exactly &, < and >', () => {
    assert.equal(escapeMrkdwn('a & b <c> *d* `e`'), 'a &amp; b &lt;c&gt; *d* `e`');
  });

  test('text from the agent and the configuration cannot inject mentions or links', () => {
    const hostile = request({
      id: 'apr-1' as ApprovalId,
      requester: { issuer: INJECTION, subject: INJECTION, groups: [INJECTION] },
      target: { name: INJECTION, kind: 'postgres', environment: INJECTION },
      text: `SELECT '${INJECTION}'`,
      reason: `${INJECTION}\n:white_check_mark: *Approved by security*`,
      policies: [INJECTION],
      policyReason: INJECTION,
    });
    let state = newApprovalState(hostile);
    state = accepted(state, { id: `approver ${INJECTION}`, groups: ['db-approvers'] }, 'deny', INJECTION);

    for (const m of [renderRequestMessage(newApprovalState(hostile)), renderClosedMessage(state), renderDenyModal(hostile, 't').view]) {
      const all = [('text' in m ? m.text : ''), ...texts(m.blocks)].map(stripDates).join('\n');
      assert.doesNotMatch(all, /<[!@#]|<https?:/, 'no control sequence survives');
      assert.doesNotMatch(all, /[<]/, 'no raw < at all');
      assert.match(all, /&lt;!channel&gt;/);
      assert.match(all, /&amp; co/);
    }
  });

  test("the agent's reason is quoted and labelled as the agent's", () => {
    const m = renderRequestMessage(newApprovalState(request({ reason: 'line one\n*Approved*' })));

    const reason = texts(m.blocks).find((t) => t.startsWith('*Reason given by the agent:*'));
    assert.equal(reason, '*Reason given by the agent:*\n>line one\n>*Approved*');
  });

  test('a statement cannot close its code block', () => {
    const m = renderRequestMessage(newApprovalState(request({ text: "SELECT 1 ``` *bold* ```` x `y`" })));

    const statement = texts(m.blocks).find((t) => t.startsWith('*Statement*'))!;
    assert.equal(statement.match(/```/g)?.length, 2, 'only the fences');
    assert.equal(statement.replaceAll('\u200b', '').includes('SELECT 1 ``` *bold* ```` x `y`'), true, 'the text reads the same');
  });

  test('a short statement is shown whole, with no thread', () => {
    const r = request();

    assert.equal(statementIsTruncated(r), false);
    assert.deepEqual(renderStatementThread(r), []);
    assert.doesNotMatch(JSON.stringify(renderRequestMessage(newApprovalState(r))), /Truncated/);
  });

  test('a long statement is truncated in the message and given whole in the thread', () => {
    const text = Array.from({ length: 400 }, (_, i) => `UPDATE t SET v = '<${i}> & 😀' WHERE id = ${i};`).join('\n');
    const r = request({ text });

    const m = renderRequestMessage(newApprovalState(r));
    const thread = renderStatementThread(r);

    assert.equal(statementIsTruncated(r), true);
    assertWithinSlackLimits(m);
    const statement = texts(m.blocks).find((t) => t.startsWith('*Statement*'))!;
    const preview = statement.split('\n```\n')[0]!.replace(/^.*```\n/s, '');
    assert.ok(preview.length <= STATEMENT_PREVIEW_CHARS);
    assert.doesNotMatch(preview, /&(a|am|l|lt|g|gt)?$/, 'not cut inside an escape');
    assert.doesNotMatch(preview, /[\ud800-\udbff]$/, 'not cut inside a character');
    assert.match(texts(m.blocks).join('\n'), /Truncated: the first [\d,]+ of [\d,]+ characters are shown\. The full statement is in the thread\./);
    assert.ok(thread.length >= 1);
    for (const reply of thread) assertWithinSlackLimits(reply);
    const whole = thread
      .flatMap((reply) => reply.blocks)
      .filter((b) => b.type === 'section')
      .map((b) => (b.type === 'section' ? b.text!.text.replace(/^```\n/, '').replace(/\n```$/, '') : ''))
      .join('');
    assert.equal(whole.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&'), text);
  });

  test('a statement of characters that all need escaping stays within the limits', () => {
    const r = request({ text: '<&>'.repeat(5000) });

    const m = renderRequestMessage(newApprovalState(r));

    assertWithinSlackLimits(m);
    for (const reply of renderStatementThread(r)) assertWithinSlackLimits(reply);
  });

  test('a statement too long even for the thread ends with its length and digest', () => {
    const r = request({ text: 'x'.repeat(1024 * 1024) });

    const thread = renderStatementThread(r);

    assert.equal(thread.length, MAX_THREAD_MESSAGES);
    assert.match(texts(thread.at(-1)!.blocks).join('\n'), /1,048,576 characters long; Slack shows the first [\d,]+\. SHA-256 of the statement: (c0ffee){10}/);
  });

  test('over-long names are cut to fit Slack fields', () => {
    const r = request({ requester: { issuer: '&'.repeat(5000), subject: '>'.repeat(5000), groups: Array.from({ length: 500 }, (_, i) => `g${i}`) } });

    const m = renderRequestMessage(newApprovalState(r));

    assertWithinSlackLimits(m);
    assert.match(JSON.stringify(m.blocks), /and 480 more/);
  });

  test('while pending: Approve and Deny carry the request id, with the approvals needed and missing', () => {
    let state = newApprovalState(request());
    state = accepted(state, alice, 'approve');

    const m = renderApprovalMessage(state);

    const actions = m.blocks.find((b) => b.type === 'actions');
    assert.ok(actions && actions.type === 'actions');
    assert.deepEqual(actions.elements.map((e) => [e.action_id, e.value, e.style]), [['warden_approve', 'apr-1', 'primary'], ['warden_deny', 'apr-1', 'danger']]);
    const all = texts(m.blocks).join('\n');
    assert.match(all, /\*Approvals:\* 2 needed from db-approvers; 1 missing/);
    assert.match(all, /alice@example\.com approved/);
    assert.match(all, /expires <!date\^\d+\^/);
    assert.match(m.text, /^Approval needed: DELETE on ledger \(production\) requested by etl-bot$/);
  });

  const closedCases: { status: string; close: (s: ApprovalState) => ApprovalState; expect: RegExp[] }[] = [
    { status: 'approved', close: (s) => accepted(accepted(s, alice, 'approve'), bob, 'approve'), expect: [/Approved\*/, /Approved by:\* alice@example\.com, bob@example\.com/, /Decided:\* <!date/] },
    { status: 'denied', close: (s) => accepted(s, bob, 'deny', 'not during the freeze'), expect: [/Denied\*/, /Denied by:\* bob@example\.com/, /Why:\*\n>not during the freeze/] },
    { status: 'expired', close: (s) => expire(s, new Date(NOW.getTime() + 3600_000)), expect: [/Expired\*/, /no decision before the request expired/] },
    { status: 'withdrawn', close: (s) => withdraw(s, NOW, 'the client disconnected'), expect: [/Withdrawn\*/, /the client disconnected/] },
  ];
  for (const c of closedCases) {
    test(`once ${c.status}: no buttons, and who decided, when and why`, () => {
      const state = c.close(newApprovalState(request()));
      assert.equal(state.status, c.status);

      for (const m of [renderApprovalMessage(state), renderClosedMessage(state)]) {
        assert.equal(m.blocks.some((b) => b.type === 'actions'), false);
        const all = texts(m.blocks).join('\n');
        for (const e of c.expect) assert.match(all, e);
        assert.match(all, /DELETE FROM accounts WHERE id = 7/, 'the request stays on record');
        assert.match(m.text, new RegExp(`^${c.status[0]!.toUpperCase()}${c.status.slice(1)}: DELETE on ledger`));
        assertWithinSlackLimits(m);
      }
    });
  }

  test('the deny modal asks for a required, multiline reason and carries the request id', () => {
    const { trigger_id, view } = renderDenyModal(request(), 'trigger-123');

    assert.equal(trigger_id, 'trigger-123');
    assert.equal(view.type, 'modal');
    assert.equal(view.callback_id, 'warden_deny_reason');
    assert.equal(view.private_metadata, 'apr-1');
    assert.ok(view.title.text.length <= 24, 'Slack limits modal titles to 24 characters');
    const input = view.blocks.find((b) => b.type === 'input');
    assert.ok(input && input.type === 'input');
    assert.equal(input.optional, undefined, 'input blocks are required unless optional');
    assert.equal(input.element.type, 'plain_text_input');
    assert.equal(input.element.multiline, true);
    assert.equal(input.element.min_length, 1);
  });
});
