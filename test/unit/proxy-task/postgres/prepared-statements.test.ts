import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PreparedStatements, type Prepared } from '../../../../proxy-task/src/postgres/prepared-statements.ts';
import type { Decision } from '../../../../core/policy/decision.ts';

const allow: Decision = { effect: 'allow', policies: ['p'] };
const def = (text: string): Prepared => ({ text, statement: undefined, readOnly: false, decision: allow });

describe('prepared statements follow what the server confirmed', () => {
  test('a Parse is visible to a pipelined Bind at once, and kept once ParseComplete confirms it', () => {
    const p = new PreparedStatements();
    p.parseSent('a', def('SELECT 1'), 1);
    assert.equal(p.lookup('a')?.text, 'SELECT 1');
    p.parseComplete();
    p.syncAnswered(1);
    assert.equal(p.lookup('a')?.text, 'SELECT 1');
  });

  test('a Parse the server did not confirm (it failed, or was skipped after an error) is forgotten at ReadyForQuery', () => {
    const p = new PreparedStatements();
    p.parseSent('a', def('SELECT * FROM no_such_table'), 1);
    p.syncAnswered(1);
    assert.equal(p.lookup('a'), undefined);
    p.parseSent('a', def('DELETE FROM t WHERE id = 4'), 2);
    assert.equal(p.lookup('a')?.text, 'DELETE FROM t WHERE id = 4');
  });

  test('redefining a named statement fails at the server, so the first definition stays; the unnamed one is replaced', () => {
    const p = new PreparedStatements();
    p.parseSent('a', def('SELECT 1'), 1);
    p.parseSent('', def('SELECT 2'), 1);
    p.parseComplete();
    p.parseComplete();
    p.syncAnswered(1);
    p.parseSent('a', def('DELETE FROM t'), 2);
    p.parseSent('', def('SELECT 3'), 2);
    assert.equal(p.lookup('a')?.text, 'SELECT 1');
    assert.equal(p.lookup('')?.text, 'SELECT 3');
  });

  test('a Close takes effect in order, and only once the server confirms it', () => {
    const p = new PreparedStatements();
    p.parseSent('a', def('SELECT 1'), 1);
    p.parseComplete();
    p.closeSent('a', 2);
    assert.equal(p.lookup('a'), undefined, 'a Bind after the Close does not see it');
    p.syncAnswered(2); // the Close was skipped (an earlier error in its pipeline): the statement is still there
    assert.equal(p.lookup('a')?.text, 'SELECT 1');
    p.closeSent('a', 3);
    p.closeComplete();
    p.syncAnswered(3);
    assert.equal(p.lookup('a'), undefined);
  });

  test('SQL PREPARE, DEALLOCATE and DISCARD ALL count when their statement succeeds', () => {
    const p = new PreparedStatements();
    p.sqlSent(1, 'q', def('PREPARE q AS SELECT 1'), 1);
    assert.equal(p.lookup('q')?.text, 'PREPARE q AS SELECT 1');
    p.statementSucceeded(1);
    p.syncAnswered(1);
    assert.equal(p.lookup('q')?.text, 'PREPARE q AS SELECT 1');
    p.sqlSent(2, 'q', undefined, 2); // DEALLOCATE q that fails (in an aborted transaction)
    p.syncAnswered(2);
    assert.equal(p.lookup('q')?.text, 'PREPARE q AS SELECT 1');
    p.sqlSent(3, undefined, undefined, 3); // DISCARD ALL
    assert.equal(p.lookup('q'), undefined);
    p.statementSucceeded(3);
    p.syncAnswered(3);
    assert.equal(p.lookup('q'), undefined);
  });
});
