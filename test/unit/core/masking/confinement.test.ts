/**
 * Strict masking's check, statement by statement: what may run on a target with column rules, and the
 * ways around it someone would try. The rules mask people.ssn, people.email and people.salary.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MaskingConfinement } from '../../../../core/masking/confinement.ts';
import { classifySql, initSqlParser } from '../../../../core/sql/classify.ts';

const RULES = ['ssn', 'email', 'salary'].map((column) => ({ table: 'people', column }));

function check(sql: string, c = new MaskingConfinement(RULES)): ReturnType<MaskingConfinement['check']> {
  const s = classifySql(sql).statements[0]!;
  const procedural = s.operation === 'procedural' || s.risks.includes('do_block');
  return c.check(s.text, s.tables.map((t) => t.slice(t.lastIndexOf('.') + 1)), procedural);
}

const RUNS: readonly string[] = [
  'SELECT ssn, email AS e, salary pay FROM people',
  'SELECT * FROM people ORDER BY id',
  'SELECT p.*, q.ssn FROM people p JOIN people q ON q.id = p.id',
  'SELECT public.people.ssn FROM public.people',
  'SELECT s FROM (SELECT ssn AS s FROM people) t',
  'WITH x AS (SELECT * FROM people) SELECT ssn, email FROM x',
  'SELECT x.* FROM orders o, LATERAL (SELECT ssn FROM people p WHERE p.id = o.person) x',
  'SELECT id FROM people WHERE ssn = $1',
  "SELECT id FROM people WHERE email IN ('a@b.co', 'c@d.co') AND salary IS NOT NULL",
  'SELECT id FROM people WHERE ssn = ANY($1)',
  "SELECT id FROM people WHERE NOT (ssn <> 'x') OR id > 3",
  'SELECT count(*), max(id) FROM people',
  'SELECT ssn FROM people GROUP BY ssn ORDER BY ssn',
  "SELECT id FROM people WHERE id IN (SELECT id FROM people WHERE ssn = 'x')",
  'SELECT id FROM people p WHERE EXISTS (SELECT 1 FROM people q WHERE q.ssn = p.ssn AND q.id <> p.id)',
  "UPDATE people SET ssn = '000-00-0000' WHERE id = 1",
  'DELETE FROM people WHERE id = 1',
  'INSERT INTO people (id, ssn) VALUES (3, $1)',
  'COPY people TO STDOUT',
  'DECLARE c CURSOR FOR SELECT ssn FROM people',
  'PREPARE q AS SELECT ssn, email FROM people WHERE id = $1',
  'SELECT name FROM other o WHERE o.ssn > 3',
  'SELECT ssn || salary FROM other',
  'CREATE INDEX ON people (ssn)',
];

const REFUSED: readonly (readonly [sql: string, column: RegExp])[] = [
  ['SELECT salary + 0 FROM people', /^salary$/],
  ['SELECT md5(ssn) FROM people', /^ssn$/],
  ['SELECT ssn::varchar FROM people', /^ssn$/],
  ["SELECT email->>'x' FROM people", /^email$/],
  ['SELECT "ssn" || \'\' FROM people', /^ssn$/],
  ['SELECT SSN || \'\' FROM PEOPLE', /^ssn$/],
  ['SELECT people.ssn || \'\' FROM public.people', /people\.ssn/],
  ['SELECT p FROM people p', /^p$/],
  ['SELECT row_to_json(p) FROM people p', /^p$/],
  ['SELECT (p).salary FROM people p', /^p$/],
  ['SELECT to_jsonb(people.*) FROM people', /people\.\*/],
  ['SELECT json_agg(x) FROM (SELECT * FROM people) x', /^x$/],
  ["SELECT ssn FROM people UNION SELECT 'x'", /^ssn$/],
  ['SELECT * FROM people INTERSECT SELECT * FROM people', /\*/],
  ['SELECT (SELECT salary FROM people LIMIT 1)', /^salary$/],
  ['WITH x(a) AS (SELECT ssn FROM people) SELECT a || \'\' FROM x', /^a$/],
  ['WITH x AS (SELECT ssn AS s FROM people), y AS (SELECT s AS t FROM x) SELECT upper(t) FROM y', /^t$/],
  ['SELECT upper(t.a) FROM (SELECT ssn FROM people) t(a)', /t\.a/],
  ["SELECT q.z FROM people p, LATERAL (SELECT p.ssn || 'x' AS z) q", /p\.ssn/],
  ['SELECT max(salary) OVER () FROM people', /^salary$/],
  ['SELECT count(DISTINCT ssn) FROM people', /^ssn$/],
  ['SELECT id FROM people WHERE salary > 100000', /^salary$/],
  ['SELECT id FROM people WHERE salary BETWEEN 1 AND 2', /^salary$/],
  ["SELECT id FROM people WHERE ssn LIKE '1%'", /^ssn$/],
  ["SELECT id FROM people WHERE ssn ~ '^1'", /^ssn$/],
  ["SELECT id FROM people WHERE substr(ssn, 1, 1) = '1'", /^ssn$/],
  ["SELECT id FROM people WHERE (salary::text || 'x')::int = 1", /^salary$/],
  ["SELECT id FROM people WHERE pg_notify('c', ssn) IS NOT NULL", /^ssn$/],
  ['SELECT id FROM people ORDER BY salary / 0', /^salary$/],
  ['SELECT id FROM people GROUP BY id HAVING max(salary) > 5', /^salary$/],
  ['SELECT id FROM people WHERE salary > ALL (SELECT 1)', /^salary$/],
  ["UPDATE people SET name = ssn WHERE id = 1", /^ssn$/],
  ["UPDATE people SET name = 'x' WHERE ssn LIKE '1%'", /^ssn$/],
  ['DELETE FROM people WHERE salary > 10', /^salary$/],
  ['UPDATE people SET name = name RETURNING upper(ssn)', /^ssn$/],
  ['INSERT INTO stash SELECT ssn FROM people', /^ssn$/],
  ['CREATE TABLE stash AS SELECT * FROM people', /\*/],
  ['SELECT * INTO stash FROM people', /\*/],
  ['CREATE VIEW v AS SELECT ssn FROM people', /^ssn$/],
  ['CREATE MATERIALIZED VIEW v AS SELECT * FROM people', /\*/],
  ['COPY (SELECT ssn FROM people) TO STDOUT', /^ssn$/],
  ['DECLARE c CURSOR FOR SELECT md5(ssn) FROM people', /^ssn$/],
  ["PREPARE q AS SELECT ssn || '' FROM people", /^ssn$/],
  ["EXPLAIN ANALYZE SELECT ssn || '' FROM people", /^ssn$/],
  ['WITH d AS (DELETE FROM people WHERE id = 1 RETURNING ssn) SELECT * FROM d', /^ssn$/],
  ['ALTER TABLE people RENAME TO people2', /people\.\*/],
  ['ALTER TABLE people RENAME COLUMN ssn TO x', /people\.\*/],
  ['ALTER TABLE people ALTER COLUMN ssn TYPE bytea USING ssn::bytea', /people\.\*/],
  ['SELECT most_common_vals FROM pg_stats', /pg_stats/],
  ['SELECT * FROM pg_catalog.pg_statistic', /pg_statistic/],
  ["DO $$ BEGIN RAISE NOTICE '%', (SELECT salary FROM people LIMIT 1); END $$", /any/],
  ["DO $$ BEGIN EXECUTE 'SELECT 1 FROM peo' || 'ple'; END $$", /any/],
];

describe('strict masking: where a ruled column may go', () => {
  before(() => initSqlParser());

  for (const sql of RUNS) {
    test(`runs: ${sql}`, () => {
      assert.equal(check(sql), undefined);
    });
  }

  for (const [sql, column] of REFUSED) {
    test(`refused: ${sql}`, () => {
      const breach = check(sql);
      assert.ok(breach, 'expected a refusal');
      assert.match(breach.column, column);
      assert.ok(breach.use.length > 10);
    });
  }

  test('statements over tables without rules are not parsed again (and never refused)', () => {
    const c = new MaskingConfinement(RULES);
    assert.equal(c.check('SELECT md5(secret) FROM vault_items', ['vault_items']), undefined);
  });

  test('an unreadable statement over a ruled table is refused (fail closed)', () => {
    const c = new MaskingConfinement(RULES);
    const breach = c.check('SELECT ssn FROM people WHERE (', ['people']);
    assert.ok(breach);
    assert.match(breach.use, /could not be read/);
  });

  test('the answer for a text is cached, and the same for every caller', () => {
    const c = new MaskingConfinement(RULES);
    const a = c.check('SELECT md5(ssn) FROM people', ['people']);
    const b = c.check('SELECT md5(ssn) FROM people', ['people']);
    assert.deepEqual(a, b);
  });
});
