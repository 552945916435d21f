// Runs in its own process (node --test), so the parser starts unloaded here.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classifySql, initSqlParser } from '../../../../core/sql/classify.ts';
import { isSqlParserReady } from '../../../../core/sql/parser.ts';

describe('initSqlParser', () => {
  it('classifySql refuses to run before the parser is loaded', () => {
    assert.equal(isSqlParserReady(), false);
    assert.throws(() => classifySql('select 1'), /initSqlParser/);
  });

  it('is idempotent and safe to call concurrently', async () => {
    await Promise.all([initSqlParser(), initSqlParser(), initSqlParser()]);
    await initSqlParser();
    assert.equal(isSqlParserReady(), true);
    assert.equal(classifySql('select 1').readOnly, true);
  });
});
