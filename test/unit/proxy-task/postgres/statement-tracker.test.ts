import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StatementTracker, type StatementResult } from '../../../../proxy-task/src/postgres/statement-tracker.ts';

function tracker(): [StatementTracker, StatementResult[]] {
  const results: StatementResult[] = [];
  return [new StatementTracker((r) => results.push(r)), results];
}

test('a multi-statement Query closes each statement with its own tag', () => {
  const [t, r] = tracker();
  t.beginQuery();
  t.open(1, false);
  t.open(2, false);
  t.dataRow();
  t.commandComplete('SELECT 1');
  t.commandComplete('UPDATE 3');
  t.readyForQuery();
  assert.deepEqual(r.map((x) => [x.statementId, x.outcome, x.rows, x.command]), [
    [1, 'ok', 1, 'SELECT 1'],
    [2, 'ok', 3, 'UPDATE 3'],
  ]);
  assert.equal(t.outstanding, 0);
});

test('after an error the rest of the Query is reported as not executed', () => {
  const [t, r] = tracker();
  t.beginQuery();
  t.open(1, false);
  t.open(2, false);
  t.open(3, false);
  t.commandComplete('INSERT 0 1');
  t.error({ C: '23505', M: 'duplicate key' });
  t.readyForQuery();
  assert.deepEqual(r.map((x) => [x.statementId, x.outcome, x.sqlstate ?? null]), [
    [1, 'ok', null],
    [2, 'error', '23505'],
    [3, 'error', null],
  ]);
});

test('pipelined extended-protocol batches pair each Execute with its answer', () => {
  const [t, r] = tracker();
  t.open(1, true); // Execute
  t.sync();
  t.open(2, true);
  t.open(3, true);
  t.sync();
  assert.equal(t.outstanding, 2);
  t.commandComplete('SELECT 5');
  t.readyForQuery();
  t.error({ C: '57014', M: 'canceling statement due to user request' });
  t.readyForQuery();
  assert.deepEqual(r.map((x) => [x.statementId, x.outcome]), [
    [1, 'ok'],
    [2, 'cancelled'],
    [3, 'error'],
  ]);
  assert.equal(t.outstanding, 0);
});

test('a Parse error before any Execute of the batch closes no earlier statement', () => {
  const [t, r] = tracker();
  t.open(1, true);
  t.sync();
  t.commandComplete('SELECT 1');
  t.readyForQuery();
  t.error({ C: '42601', M: 'syntax error' }); // Parse of the next batch failed
  t.sync();
  t.readyForQuery();
  assert.equal(r.length, 1);
});

test('abandon closes everything still open', () => {
  const [t, r] = tracker();
  t.beginQuery();
  t.open(1, false);
  t.abandon('connection closed');
  assert.equal(r[0]?.error, 'connection closed');
});
