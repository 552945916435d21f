/**
 * Statements written to slip a write, a privilege change or a data export past the readers' permit.
 * Each is decided by the shipped policies with the real classifier, as the gateway would decide it for
 * an agent in `readers`: it must come out deny (or held for approval), never allow.
 *
 * A case marked `todo` is a known way through that the classifier or the policies do not close yet;
 * the reason says what is missing.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadPolicyDirectory } from '../../../../adapters/local/policy-files.ts';
import type { Principal } from '../../../../core/identity/principal.ts';
import { CedarDecider } from '../../../../core/policy/cedar-decider.ts';
import { Effect, type Decision, type TargetRef } from '../../../../core/policy/decision.ts';
import { classifySql, initSqlParser, type SqlClassification } from '../../../../core/sql/classify.ts';

const POLICY_DIR = fileURLToPath(new URL('../../../../policies/', import.meta.url));
const READER: Principal = { issuer: 'https://issuer.example', subject: 'reader-bot', groups: ['readers'], username: 'reader-bot', claims: {} };
const TARGETS: TargetRef[] = [
  { name: 'shop', kind: 'postgres', environment: 'development' },
  { name: 'shop-prod', kind: 'postgres', environment: 'production' },
];

let decider: CedarDecider;
before(async () => {
  await initSqlParser();
  decider = new CedarDecider(loadPolicyDirectory(POLICY_DIR), { validateRequests: true });
});

/** The decisions of every statement of the text; the gateway stops at the first that is not allowed. */
function decide(sql: string, t: TargetRef): { classification: SqlClassification; decisions: Decision[] } {
  const classification = classifySql(sql);
  return { classification, decisions: classification.statements.map((s) => decider.decideStatement(READER, t, s)) };
}

function describeClassification(c: SqlClassification): string {
  return JSON.stringify(c.statements.map((s) => ({ operation: s.operation, command: s.command, readOnly: s.readOnly, risks: s.risks, functions: s.functions, tables: s.tables })));
}

interface Attempt {
  sql: string;
  /** What the statement would really do on the server. */
  does: string;
  todo?: string;
}

const ATTEMPTS: Record<string, Attempt[]> = {
  'comments, case and quoting': [
    { sql: '/* just a read */ DELETE /* x */ FROM orders WHERE id = 1', does: 'deletes' },
    { sql: '-- SELECT\nuPdAtE orders SeT total = 0 WhErE id = 1', does: 'updates' },
    { sql: 'INSERT INTO "Orders" VALUES (1)', does: 'inserts into a quoted table' },
    { sql: 'INSERT INTO U&"\\006Frders" VALUES (1)', does: 'inserts into a table named with a Unicode escape' },
    { sql: 'SELECT U&"\\0070g_read_file"(\'/etc/passwd\')', does: 'reads a server file through a Unicode-escaped function name' },
    { sql: 'SELECT "PG_READ_FILE"(\'/etc/passwd\')', does: 'quoted upper case (PostgreSQL folds it only when unquoted, so this is another function)' },
    { sql: 'SELECT "pg_catalog"."pg_read_file"(\'/etc/passwd\')', does: 'reads a server file, schema-qualified and quoted' },
    { sql: 'SELECT NEXTVAL(\'orders_id_seq\')', does: 'advances a sequence' },
    { sql: 'SELECT U&"\\006Eextval"(\'orders_id_seq\')', does: 'advances a sequence (Unicode escape)' },
  ],
  'several statements in one Query': [
    { sql: 'SELECT 1 /* ; */ ; DELETE FROM orders WHERE id = 1', does: 'deletes after a read' },
    { sql: "SELECT ';' ; DELETE FROM orders WHERE id = 1", does: 'deletes after a string holding a semicolon' },
    { sql: 'SELECT 1; -- ;\nDELETE FROM orders WHERE id = 1', does: 'deletes on the line after a comment' },
    { sql: "SELECT E'\\';' ; DELETE FROM orders WHERE id = 1", does: 'deletes after an escape string holding a quote' },
    { sql: "SELECT $q$ ' $q$; DELETE FROM orders WHERE id = 1", does: 'deletes after a dollar-quoted quote' },
    { sql: 'COPY (SELECT * FROM orders) TO STDOUT; DELETE FROM orders WHERE id = 1', does: 'deletes after an export' },
    { sql: 'PREPARE p AS SELECT 1; EXECUTE p', does: 'runs a prepared statement the classifier cannot see' },
    { sql: 'SELECT 1 \\; DELETE FROM orders', does: "psql's \\; is not SQL: refused as unparseable" },
  ],
  'writes hidden inside a read': [
    { sql: 'WITH x AS (INSERT INTO orders VALUES (1) RETURNING *) SELECT * FROM x', does: 'inserts in a CTE' },
    { sql: 'WITH a AS (SELECT 1), b AS (UPDATE orders SET total = 0 WHERE id = 1 RETURNING *) SELECT * FROM a', does: 'updates in an unused CTE (it still runs)' },
    { sql: 'SELECT * FROM (WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d) s', does: 'deletes in a nested CTE' },
    { sql: 'SELECT * INTO stolen FROM customers', does: 'creates a table (SELECT ... INTO)' },
    { sql: 'SELECT * INTO TEMP stolen FROM customers', does: 'creates a temporary table' },
    { sql: 'CREATE TABLE stolen AS SELECT * FROM customers', does: 'creates a table (CREATE TABLE AS)' },
    { sql: 'CREATE UNLOGGED TABLE stolen AS SELECT * FROM customers', does: 'creates an unlogged table' },
    { sql: 'EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1', does: 'EXPLAIN ANALYZE runs the DELETE' },
    { sql: 'EXPLAIN ANALYSE DELETE FROM orders WHERE id = 1', does: 'British spelling, same thing' },
    { sql: 'EXPLAIN (ANALYZE true, FORMAT json) UPDATE orders SET total = 0 WHERE id = 1', does: 'EXPLAIN (ANALYZE true) runs the UPDATE' },
    { sql: 'EXPLAIN (ANALYZE 1) DELETE FROM orders WHERE id = 1', does: 'ANALYZE 1 is true' },
    { sql: 'EXPLAIN ANALYZE CREATE TABLE stolen AS SELECT * FROM customers', does: 'creates a table under EXPLAIN ANALYZE' },
    { sql: 'PREPARE del AS DELETE FROM orders WHERE id = $1', does: 'prepares a DELETE to EXECUTE later' },
    { sql: 'PREPARE ins (int) AS INSERT INTO orders VALUES ($1)', does: 'prepares an INSERT' },
    { sql: 'DECLARE c CURSOR FOR WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d', does: 'a cursor over a deleting CTE' },
    { sql: 'DECLARE c CURSOR FOR DELETE FROM orders WHERE id = 1 RETURNING *', does: 'not valid SQL; refused as unparseable' },
    { sql: 'COPY (DELETE FROM orders WHERE id = 1 RETURNING *) TO STDOUT', does: 'deletes and exports the rows' },
    { sql: 'COPY (UPDATE orders SET total = 0 WHERE id = 1 RETURNING *) TO STDOUT', does: 'updates and exports the rows' },
    { sql: 'COPY (MERGE INTO orders o USING returns r ON o.id = r.id WHEN MATCHED THEN DELETE RETURNING *) TO STDOUT', does: 'merges and exports the rows' },
    { sql: 'MERGE INTO orders o USING returns r ON o.id = r.id WHEN MATCHED THEN DELETE', does: 'MERGE deletes' },
    { sql: "CREATE RULE r AS ON SELECT TO orders DO INSTEAD DELETE FROM customers", does: 'a rule that deletes' },
    { sql: 'REFRESH MATERIALIZED VIEW order_totals', does: 'rewrites a materialized view' },
  ],
  'functions that run SQL text or reach outside': [
    { sql: "SELECT query_to_xml('DELETE FROM orders WHERE id = 1 RETURNING *', true, true, '')", does: 'runs the DELETE given as text' },
    { sql: "SELECT query_to_xml('SELECT * FROM customers', true, true, '')", does: 'runs SQL text Warden only sees as a string' },
    { sql: "SELECT query_to_xml_and_xmlschema('SELECT 1', true, true, '')", does: 'runs SQL text' },
    { sql: "SELECT query_to_xmlschema('SELECT 1', true, true, '')", does: 'runs SQL text' },
    { sql: "SELECT pg_catalog.query_to_xml('dele' || 'te from orders', true, true, '')", does: 'runs SQL text built at run time' },
    { sql: "SELECT xmlserialize(content query_to_xml('SELECT 1', true, true, '') AS text)", does: 'runs SQL text, nested in another call' },
    { sql: "SELECT table_to_xml('customers', true, true, '')", does: 'reads a table named only in a string' },
    { sql: "SELECT database_to_xml(true, true, '')", does: 'exports the whole database' },
    { sql: "SELECT * FROM ts_stat('DELETE FROM orders')", does: 'runs SQL text' },
    { sql: "SELECT * FROM crosstab('DELETE FROM orders RETURNING *') AS ct(a int)", does: 'runs SQL text' },
    { sql: "SELECT dblink_exec('dbname=shop', 'DELETE FROM orders WHERE id = 1')", does: 'runs a DELETE over a loopback connection' },
    { sql: "SELECT public.dblink_exec('dbname=shop', 'DELETE FROM orders')", does: 'schema-qualified dblink' },
    { sql: "SELECT * FROM dblink('dbname=shop', 'SELECT * FROM customers') AS t(a text)", does: 'reads through another connection, outside the audit trail' },
    { sql: "SELECT dblink_connect('c', 'host=10.0.0.9 dbname=x')", does: 'opens a connection to another server' },
    { sql: "DO $$ BEGIN DELETE FROM orders WHERE id = 1; END $$", does: 'a DO block' },
    { sql: "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE format('DELETE FROM %I', 'orders'); END $$", does: 'dynamic SQL in a function body' },
    { sql: 'CALL archive_orders()', does: 'a procedure' },
  ],
  'side effects dressed as reads': [
    { sql: "SELECT nextval('orders_id_seq')", does: 'advances a sequence' },
    { sql: "SELECT pg_catalog.nextval('orders_id_seq')", does: 'advances a sequence, qualified' },
    { sql: "SELECT setval('orders_id_seq', 1)", does: 'resets a sequence' },
    { sql: "SELECT pg_catalog.setval('orders_id_seq', 1, true)", does: 'resets a sequence, qualified' },
    { sql: "VALUES (nextval('orders_id_seq'))", does: 'advances a sequence in VALUES' },
    { sql: "SELECT 1 UNION ALL SELECT nextval('orders_id_seq')", does: 'advances a sequence in a UNION' },
    { sql: "SELECT * FROM orders WHERE id IN (SELECT setval('orders_id_seq', 1))", does: 'resets a sequence in a subquery' },
    { sql: "WITH RECURSIVE x AS (SELECT 1) SELECT * FROM x, LATERAL (SELECT nextval('s')) n", does: 'advances a sequence in a LATERAL join' },
    { sql: "EXPLAIN ANALYZE SELECT nextval('orders_id_seq')", does: 'advances a sequence under EXPLAIN ANALYZE' },
    { sql: "DECLARE c CURSOR FOR SELECT nextval('orders_id_seq')", does: 'advances a sequence when fetched' },
    { sql: 'SELECT pg_advisory_lock(1)', does: 'takes a session lock other sessions wait on' },
    { sql: 'SELECT pg_catalog.pg_advisory_lock(1)', does: 'advisory lock, qualified' },
    { sql: 'SELECT pg_try_advisory_xact_lock(1)', does: 'advisory lock' },
    { sql: 'SELECT * FROM pg_catalog.pg_advisory_lock_shared(1)', does: 'advisory lock in FROM' },
    { sql: 'SELECT * FROM orders FOR UPDATE', does: 'locks rows' },
    { sql: 'SELECT * FROM orders FOR SHARE', does: 'locks rows' },
    { sql: 'SELECT * FROM orders FOR NO KEY UPDATE SKIP LOCKED', does: 'locks rows' },
    { sql: 'WITH x AS (SELECT * FROM orders FOR UPDATE) SELECT * FROM x', does: 'locks rows in a CTE' },
    { sql: 'SELECT * FROM (SELECT * FROM orders FOR KEY SHARE) s', does: 'locks rows in a subquery' },
    { sql: 'DECLARE c CURSOR WITH HOLD FOR SELECT * FROM orders FOR UPDATE', does: 'locks rows through a cursor' },
    { sql: "SELECT pg_notify('jobs', 'run')", does: 'signals other sessions' },
    { sql: 'NOTIFY jobs', does: 'signals other sessions' },
    { sql: 'LOCK TABLE orders IN ACCESS EXCLUSIVE MODE', does: 'blocks every other session' },
  ],
  'large objects and server files': [
    { sql: 'SELECT lo_create(0)', does: 'creates a large object' },
    { sql: 'SELECT lo_unlink(16385)', does: 'deletes a large object' },
    { sql: "SELECT lo_from_bytea(0, 'x')", does: 'creates a large object' },
    { sql: "SELECT lo_put(16385, 0, 'x')", does: 'writes a large object' },
    { sql: "SELECT lowrite(lo_open(16385, 131072), 'x')", does: 'writes a large object' },
    { sql: "SELECT lo_import('/etc/passwd')", does: 'reads a server file into the database' },
    { sql: "SELECT pg_catalog.lo_import('/etc/passwd', 1234)", does: 'reads a server file, qualified' },
    { sql: "SELECT pg_catalog.\"lo_export\"(16385, '/tmp/x')", does: 'writes a server file' },
    { sql: "SELECT * FROM pg_read_file('/etc/passwd')", does: 'reads a server file in FROM' },
    { sql: "SELECT convert_from(pg_read_binary_file('/etc/passwd'), 'utf8')", does: 'reads a server file' },
    { sql: "SELECT * FROM ROWS FROM (pg_ls_dir('.'))", does: 'lists a server directory' },
    { sql: 'SELECT pg_catalog.pg_ls_waldir()', does: 'lists the WAL directory' },
    { sql: "SELECT * FROM pg_stat_file('/etc/passwd')", does: 'stats a server file' },
    { sql: "SELECT pg_catalog.pg_file_write('x', 'y', false)", does: 'writes a server file (adminpack)' },
    { sql: "COPY orders TO '/tmp/orders.csv'", does: 'writes a server file' },
    { sql: "COPY orders FROM PROGRAM 'id'", does: 'runs a program on the server' },
    { sql: "COPY (SELECT 1) TO PROGRAM 'cat > /tmp/x'", does: 'runs a program on the server' },
    { sql: "COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT", does: 'exports a server file' },
    { sql: "LOAD 'plpgsql'", does: 'loads a shared library' },
  ],
  'privilege, role and session guards': [
    { sql: 'SET ROLE postgres', does: 'acts as another role' },
    { sql: 'SET LOCAL ROLE postgres', does: 'acts as another role' },
    { sql: 'SET "ROLE" = \'postgres\'', does: 'setting names are case-insensitive' },
    { sql: 'SET SESSION "session_authorization" = \'postgres\'', does: 'acts as another user' },
    { sql: 'RESET ROLE', does: 'changes the current role' },
    { sql: 'DISCARD ALL', does: 'resets the session authorization' },
    { sql: "SELECT set_config('ROLE', 'postgres', false)", does: 'sets the role through set_config' },
    { sql: "SELECT pg_catalog.set_config(U&'\\0072ole', 'postgres', false)", does: 'the setting name with a Unicode escape' },
    { sql: "SELECT set_config('ro' || 'le', 'postgres', false)", does: 'the setting name computed at run time' },
    { sql: "SELECT set_config(setting_name => 'role', new_value => 'postgres', is_local => false)", does: 'named arguments' },
    { sql: "SELECT set_config('session_authorization', 'postgres', false)", does: 'acts as another user' },
    { sql: 'SET default_transaction_read_only = off', does: 'lifts a read-only guard' },
    { sql: 'SET "DEFAULT_TRANSACTION_READ_ONLY" TO off', does: 'lifts a read-only guard (quoted upper case)' },
    { sql: 'RESET default_transaction_read_only', does: 'lifts a read-only guard' },
    { sql: 'SET default_transaction_read_only TO DEFAULT', does: 'lifts a read-only guard' },
    { sql: 'SET TRANSACTION READ WRITE', does: 'lifts a read-only guard' },
    { sql: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', does: 'lifts a read-only guard' },
    { sql: 'BEGIN READ WRITE', does: 'lifts a read-only guard' },
    { sql: 'START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE', does: 'lifts a read-only guard' },
    { sql: "SELECT set_config('transaction_read_only', 'off', true)", does: 'lifts a read-only guard' },
    { sql: 'SET session_replication_role = replica', does: 'turns triggers (and foreign keys) off' },
    { sql: 'GRANT SELECT ON customers TO PUBLIC', does: 'grants' },
    { sql: 'ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC', does: 'grants' },
    { sql: 'ALTER TABLE orders OWNER TO mallory', does: 'changes ownership' },
    { sql: 'CREATE ROLE mallory SUPERUSER', does: 'creates a role' },
    { sql: 'ALTER SYSTEM RESET ALL', does: 'changes the server configuration' },
    { sql: 'SELECT pg_catalog.pg_terminate_backend(1)', does: 'kills another session' },
    { sql: 'SELECT pg_reload_conf()', does: 'reloads the server configuration' },
    { sql: 'SELECT pg_stat_statements_reset()', does: 'erases statistics other teams rely on' },
    { sql: 'CREATE EXTENSION dblink', does: 'installs an extension' },
    // The classifier reads text the way the server does by default: standard_conforming_strings on, UTF-8.
    // A session that turns either off makes later text mean something else to the server than to Warden:
    //   SET standard_conforming_strings = off;  then  SELECT '\' , ' ; DELETE FROM orders WHERE id = 1 ; -- '
    //   SET client_encoding = 'SJIS';  then  SELECT E'<0x95>\' ; DELETE FROM orders WHERE id = 1 ; -- '
    // Warden sees one string literal each time; the server would run the DELETE. So the settings themselves
    // are refused (risk lexical_setting, guard.lexical-settings), and a session whose server reports them
    // anyway is ended (proxy-task/src/postgres/lexical-settings.ts).
    {
      sql: 'SET standard_conforming_strings = off',
      does: 'makes the server read backslashes in later string literals differently from the classifier',
    },
    {
      sql: "SET client_encoding = 'SJIS'",
      does: 'makes the server decode later text differently from the classifier',
    },
    {
      sql: "SET NAMES 'GBK'",
      does: 'the same as SET client_encoding',
    },
  ],
};

describe('a reader cannot slip a write, a privilege change or an export past the policy', () => {
  for (const [group, attempts] of Object.entries(ATTEMPTS)) {
    describe(group, () => {
      for (const a of attempts) {
        it(`${a.sql}  (${a.does})`, a.todo ? { todo: a.todo } : {}, () => {
          for (const t of TARGETS) {
            const { classification, decisions } = decide(a.sql, t);
            assert.ok(decisions.length > 0, `no statement: ${a.sql}`);
            const verdict = decisions.find((d) => d.effect !== Effect.allow);
            assert.ok(verdict, `ALLOWED on ${t.environment}: ${a.sql}\n  classification ${describeClassification(classification)}`);
            assert.notEqual(verdict.effect, Effect.allow);
          }
        });
      }
    });
  }
});

describe('look-alikes that are rightly allowed (the real parser is not fooled the other way either)', () => {
  const harmless: Attempt[] = [
    { sql: 'SELECT $$; DELETE FROM orders WHERE id = 1; $$', does: 'a string that mentions a DELETE' },
    { sql: "SELECT $a$ $$ ; DELETE FROM orders WHERE id = 1 $$ $a$", does: 'a dollar-quoted string holding $$' },
    { sql: 'SELECT 1 /* ; DELETE FROM orders WHERE id = 1 */', does: 'a comment that mentions a DELETE' },
    { sql: 'EXPLAIN DELETE FROM orders WHERE id = 1', does: 'EXPLAIN without ANALYZE plans but does not run' },
    { sql: 'EXPLAIN (ANALYZE false) DELETE FROM orders WHERE id = 1', does: 'ANALYZE false does not run' },
    { sql: 'COPY (SELECT * FROM orders) TO STDOUT', does: 'an export to the client is a read' },
    { sql: "SELECT cursor_to_xml('c', 10, true, true, '')", does: 'reads from a cursor, like FETCH; the cursor was decided when it was declared' },
  ];
  for (const a of harmless) {
    it(`${a.sql}  (${a.does})`, () => {
      for (const t of TARGETS) {
        const { classification, decisions } = decide(a.sql, t);
        assert.ok(decisions.length > 0);
        for (const d of decisions) assert.equal(d.effect, Effect.allow, `${a.sql}: ${describeClassification(classification)}`);
      }
    });
  }

  it('a Query that is only a comment holds no statement to decide', () => {
    assert.equal(classifySql('/* /* */ SELECT 1; DELETE FROM orders WHERE id = 1 -- */').statements.length, 0);
  });
});

describe('documented limit: functions are judged by name', () => {
  it('a user-defined function is allowed to a reader, but named in the context so a policy can forbid it', () => {
    // Its body is not visible to Warden (it may write): see policies/README.md, "Known limits".
    const { classification, decisions } = decide('SELECT archive_old_orders()', TARGETS[0]!);
    assert.equal(decisions[0]!.effect, Effect.allow);
    assert.deepEqual(classification.statements[0]!.functions, ['archive_old_orders']);
  });
});
