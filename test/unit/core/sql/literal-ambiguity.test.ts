import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { initSqlParser, classifySql } from '../../../../core/sql/classify.ts';
import { hasAmbiguousLiteral } from '../../../../core/sql/literal-ambiguity.ts';

before(() => initSqlParser());

describe('a literal whose end depends on standard_conforming_strings is flagged', () => {
  const ambiguous = [
    "SELECT '\\' , ' ; DELETE FROM t WHERE id = 1 ; -- '",
    "SELECT 'C:\\dir\\'",
    "WITH a AS (SELECT '\\' AS s, ' AS s), d AS (DELETE FROM t WHERE id = 2 RETURNING 1) SELECT 1 --') SELECT 1",
    "SELECT N'\\' , ' ; DROP TABLE t; -- '",
  ];
  const unambiguous = [
    "SELECT 'a' ~ '\\d+'",
    "SELECT 'C:\\dir\\file'",
    "SELECT E'it\\'s'",
    'SELECT $$\\$$',
    "SELECT U&'\\0041'",
    "SELECT 'it''s'",
    'SELECT 1 -- a comment with \\ and a quote \'',
    'SELECT "col\\name" FROM t',
    "SELECT 'no backslash at all'",
  ];
  for (const sql of ambiguous) {
    test(`flagged: ${sql}`, () => {
      assert.equal(hasAmbiguousLiteral(sql), true);
      assert.ok(classifySql(sql).statements.every((s) => s.risks.includes('ambiguous_literal')));
    });
  }
  for (const sql of unambiguous) {
    test(`not flagged: ${sql}`, () => {
      assert.equal(hasAmbiguousLiteral(sql), false);
      assert.ok(classifySql(sql).statements.every((s) => !s.risks.includes('ambiguous_literal')));
    });
  }
});

test('UPDATE pg_settings counts as changing any setting', () => {
  const [s] = classifySql("UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'").statements;
  assert.deepEqual([...s!.risks].sort(), ['lexical_setting', 'sensitive_setting', 'set_role']);
  assert.equal(s!.readOnly, false);
});
