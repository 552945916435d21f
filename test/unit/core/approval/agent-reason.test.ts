/** The agent's reason for a held statement, read from a block comment in the statement. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentReasonOf } from '../../../../core/approval/agent-reason.ts';

test('a reason in a block comment is read, anywhere in the statement', () => {
  assert.equal(agentReasonOf(`UPDATE t SET v = 1 WHERE id = 2 /* warden:reason="ticket OPS-123" */`), 'ticket OPS-123');
  assert.equal(agentReasonOf(`/*warden:reason = "leading"*/ DELETE FROM t WHERE id = 1`), 'leading');
});

test('escaped quotes and backslashes inside the reason', () => {
  assert.equal(agentReasonOf(String.raw`SELECT 1 /* warden:reason="the \"big\" one, C:\\tmp" */`), 'the "big" one, C:\\tmp');
});

test('no reason: none, an empty one, a line comment, or the text in a string literal that is not a comment', () => {
  assert.equal(agentReasonOf('UPDATE t SET v = 1'), undefined);
  assert.equal(agentReasonOf('UPDATE t SET v = 1 /* warden:reason="   " */'), undefined);
  assert.equal(agentReasonOf('UPDATE t SET v = 1 -- warden:reason="line comment"'), undefined);
  assert.equal(agentReasonOf('UPDATE t SET v = 1 /* warden:reason=unquoted */'), undefined);
});

test('control characters cannot forge lines in a terminal or a Slack message', () => {
  const r = agentReasonOf('SELECT 1 /* warden:reason="ok\n*approved by admin*\r\u001b[2Jx" */');
  assert.ok(r);
  assert.doesNotMatch(r, /[\u0000-\u001f\u007f]/);
  assert.equal(r, 'ok *approved by admin* [2Jx');
});

test('a long reason is cut to 500 characters', () => {
  const r = agentReasonOf(`SELECT 1 /* warden:reason="${'x'.repeat(5000)}" */`);
  assert.equal(r?.length, 501);
  assert.ok(r?.endsWith('…'));
});

test('the first reason wins when there are several', () => {
  assert.equal(agentReasonOf('/* warden:reason="first" */ SELECT 1 /* warden:reason="second" */'), 'first');
});
