import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { boundStatementForAudit, classificationForAudit, MAX_AUDITED_PARAM_CHARS, MAX_AUDITED_TEXT_CHARS } from '../../../../core/audit/statement-record.ts';
import { classifySql, initSqlParser } from '../../../../core/sql/classify.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

test('short text and parameters are recorded whole, with no truncation note', () => {
  const r = boundStatementForAudit('select $1', ['a', null]);
  assert.deepEqual(r, { text: 'select $1', params: ['a', null] });
});

test('an oversized text keeps a prefix, its length and a hash of the whole', () => {
  const text = 'insert into t values ' + "('x'),".repeat(100_000);
  const r = boundStatementForAudit(text, undefined);
  assert.equal(r.text.length, MAX_AUDITED_TEXT_CHARS);
  assert.ok(text.startsWith(r.text));
  assert.deepEqual(r.truncated, { text: { chars: text.length, sha256: sha(text) } });
});

test('only the oversized parameters are cut, each with its index, length and hash', () => {
  const big = '\\x' + 'ab'.repeat(10_000);
  const r = boundStatementForAudit('select $1, $2, $3', ['small', big, null]);
  assert.equal(r.params?.[0], 'small');
  assert.equal(r.params?.[1]?.length, MAX_AUDITED_PARAM_CHARS);
  assert.equal(r.params?.[2], null);
  assert.deepEqual(r.truncated, { params: [{ index: 1, chars: big.length, sha256: sha(big) }] });
});

test('the audited classification leaves out the statement text but keeps nested statements', async () => {
  await initSqlParser();
  const c = classifySql('with d as (delete from t returning *) select * from d').statements[0]!;
  const a = classificationForAudit(c);
  assert.equal(a.operation, 'write');
  assert.ok(!('text' in a) && !('location' in a));
  assert.ok(a.nested && a.nested.length > 0 && !('text' in a.nested[0]!));
  assert.equal(classificationForAudit(c), a, 'projections are cached per classification');
});
