/**
 * Statements written to slip a write, a privilege change or a data export past the readers' permit,
 * sent end to end through real clients (psql for the simple protocol, node-postgres for the extended
 * one, a raw client for what no driver sends) to a real server that logs every statement it receives
 * (`log_statement = all`). After each attempt:
 *   (a) the client got SQLSTATE 42501 (or, where the server itself changed how it reads SQL text, a FATAL
 *       end of the session),
 *   (b) the target is unchanged, as seen directly: rows, sequence, advisory locks, relations, roles,
 *       large objects,
 *   (c) the server log holds no trace of the attack text, and the stand-in Warden sends in a refused
 *       statement's place is there instead.
 *
 * An attempt marked `todo` got through: the server ran it (or, for the audit cases, ran it while the
 * trail names another statement). The assertion is left as it should be; the todo text says what got
 * through.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { CLEAN_PG_ENV, describeRun, describeStatements, latestSession, psqlPath, run, type RunResult } from '../../helpers/clients.ts';
import { decodeErrorFields, describeMsg, RawClient, typedMessage, type ServerMsg } from '../../helpers/raw-client.ts';
import { DEFAULT_POLICY_DIR, startTestWarden, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

/** A large object that exists on the target (lo_export / lo_unlink aim at it). */
const LO_OID = 424_242;
const EXPORT_PATH = `/tmp/warden-adversarial-export-${process.pid}`;
/** The text Warden sends instead of a refused statement (stand-in.ts). */
const STAND_IN = /warden_refused_[0-9a-f]{24}/;
/** Under standard_conforming_strings = on a SELECT of two strings; under off a SELECT, then a DELETE. */
const BACKSLASH_SMUGGLE = "SELECT '\\' , ' ; DELETE FROM t WHERE id = 1 ; -- '";

interface Attack {
  name: string;
  sql: string;
  /** The refusal's message; default: any `denied by policy: ...`. */
  message?: RegExp;
  todo?: string;
}

/** One simple-protocol Query each, through psql, as a reader. */
const SIMPLE_ATTACKS: Attack[] = [
  { name: 'comments and mixed case', sql: '/* x */ dElEtE FROM t WHERE id=1', message: /no policy permits sql\.write/ },
  { name: 'a line comment that says SELECT', sql: '-- SELECT\nuPdAtE t SeT v = $$x$$ WhErE id = 1', message: /no policy permits sql\.write/ },
  { name: 'quoted identifiers', sql: 'DELETE FROM "public"."t" WHERE "id" = 1', message: /no policy permits sql\.write/ },
  { name: 'a Unicode-escaped table name', sql: 'DELETE FROM U&"\\0074" WHERE id = 1', message: /no policy permits sql\.write/ },
  { name: 'a Unicode-escaped nextval', sql: "SELECT U&\"\\006Eextval\"('s')", message: /no policy permits sql\.read/ },
  { name: 'a DELETE in a CTE', sql: 'WITH d AS (DELETE FROM t WHERE id=1 RETURNING *) SELECT * FROM d', message: /no policy permits sql\.write/ },
  { name: 'a DELETE in a CTE nobody reads', sql: 'WITH a AS (SELECT 1), d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM a' },
  { name: '; inside a block comment', sql: 'SELECT 1 /* ; */ ; DELETE FROM t WHERE id = 1' },
  { name: '; inside a string', sql: "SELECT ';' ; DELETE FROM t WHERE id = 1" },
  { name: '; after a line comment', sql: 'SELECT 1; -- ;\nDELETE FROM t WHERE id = 1' },
  { name: 'a quote inside a dollar-quoted string', sql: "SELECT $q$ ' $q$; DELETE FROM t WHERE id = 1" },
  { name: 'an escaped quote in an E string', sql: "SELECT E'\\';' ; DELETE FROM t WHERE id = 1" },
  { name: 'a write after an export in the same Query', sql: 'COPY (SELECT * FROM t) TO STDOUT; DELETE FROM t WHERE id = 1' },
  { name: 'SELECT ... INTO', sql: 'SELECT * INTO stolen FROM t' },
  { name: 'SELECT ... INTO TEMP', sql: 'SELECT * INTO TEMP stolen FROM t' },
  { name: 'CREATE TABLE AS', sql: 'CREATE TABLE stolen AS SELECT * FROM t' },
  { name: 'EXPLAIN ANALYZE of a DELETE', sql: 'EXPLAIN ANALYZE DELETE FROM t WHERE id = 1' },
  { name: 'EXPLAIN (ANALYZE 1) of an UPDATE', sql: "EXPLAIN (ANALYZE 1, FORMAT json) UPDATE t SET v = 'x' WHERE id = 1" },
  { name: 'COPY (DELETE ... RETURNING) TO STDOUT', sql: 'COPY (DELETE FROM t WHERE id = 1 RETURNING *) TO STDOUT' },
  { name: 'query_to_xml running a DELETE', sql: "SELECT query_to_xml('delete from t where id = 1 returning *', true, true, '')", message: /DO blocks, dynamic SQL/ },
  { name: 'query_to_xml with SQL built at run time', sql: "SELECT query_to_xml('dele' || 'te from t where id = 1 returning *', true, true, '')", message: /DO blocks, dynamic SQL/ },
  { name: 'a DO block', sql: 'DO $$ BEGIN DELETE FROM t WHERE id = 1; END $$', message: /DO blocks, dynamic SQL/ },
  { name: 'nextval', sql: "SELECT nextval('s')", message: /no policy permits sql\.read/ },
  { name: 'setval, schema-qualified', sql: "SELECT pg_catalog.setval('s', 1000)", message: /no policy permits sql\.read/ },
  { name: 'nextval in a subquery of a read', sql: "SELECT * FROM t WHERE id = (SELECT nextval('s'))", message: /no policy permits sql\.read/ },
  { name: 'set_config of role', sql: "SELECT set_config('role', 'mallory', false)", message: /SET ROLE and SET SESSION AUTHORIZATION/ },
  { name: 'set_config of a name built at run time', sql: "SELECT set_config('ro' || 'le', 'mallory', false)" },
  { name: 'SET ROLE', sql: 'SET ROLE mallory', message: /SET ROLE and SET SESSION AUTHORIZATION/ },
  { name: 'SET SESSION AUTHORIZATION', sql: 'SET SESSION AUTHORIZATION mallory', message: /SET ROLE and SET SESSION AUTHORIZATION/ },
  { name: 'GRANT', sql: 'GRANT mallory TO CURRENT_USER', message: /role and privilege changes/ },
  { name: 'ALTER ROLE', sql: 'ALTER ROLE mallory LOGIN', message: /role and privilege changes/ },
  { name: 'SELECT ... FOR UPDATE (row locks are not read-only)', sql: 'SELECT * FROM t WHERE id = 1 FOR UPDATE', message: /no policy permits sql\.read/ },
  { name: 'FOR UPDATE in a CTE', sql: 'WITH x AS (SELECT * FROM t FOR UPDATE) SELECT count(*) FROM x', message: /no policy permits sql\.read/ },
  { name: 'lo_export to a server file', sql: `SELECT lo_export(${LO_OID}, '${EXPORT_PATH}')`, message: /reach outside the database/ },
  { name: 'lo_import of a server file', sql: "SELECT lo_import('/etc/hostname')", message: /reach outside the database/ },
  { name: 'lo_unlink', sql: `SELECT lo_unlink(${LO_OID})`, message: /no policy permits sql\.read/ },
  { name: 'lo_put', sql: `SELECT lo_put(${LO_OID}, 0, 'x')`, message: /no policy permits sql\.read/ },
  { name: 'pg_read_file', sql: "SELECT pg_read_file('/etc/hostname')", message: /reach outside the database/ },
  { name: 'pg_read_file, quoted and qualified, in FROM', sql: "SELECT * FROM \"pg_catalog\".\"pg_read_file\"('/etc/hostname')", message: /reach outside the database/ },
  { name: 'COPY to a server file', sql: `COPY t TO '${EXPORT_PATH}'`, message: /reach outside the database/ },
  { name: 'COPY FROM PROGRAM', sql: "COPY t FROM PROGRAM 'id'", message: /reach outside the database/ },
  { name: 'pg_advisory_lock in FROM', sql: 'SELECT * FROM pg_catalog.pg_advisory_lock_shared(7)', message: /no policy permits sql\.read/ },
  { name: 'lifting the read-only guard', sql: 'SET default_transaction_read_only = off' },
  { name: 'TRUNCATE', sql: 'TRUNCATE t', message: /TRUNCATE is not allowed/ },
  { name: 'DROP', sql: 'DROP TABLE t', message: /DROP is not allowed/ },
  { name: 'ALTER SYSTEM', sql: "ALTER SYSTEM SET log_statement = 'none'", message: /ALTER SYSTEM/ },
  { name: 'text the parser rejects', sql: 'SELECT 1 \\; DELETE FROM t WHERE id = 1', message: /could not be parsed/ },
];

describe('attacks on the readers\' permit, end to end', { skip, timeout: 120_000 }, () => {
  let w: TestWarden;

  before(async () => {
    w = await startTestWarden({ policyDir: DEFAULT_POLICY_DIR, pgSettings: { log_statement: 'all' } });
    // A role the target credential may become: SET ROLE mallory would succeed if it reached the server.
    await w.pg.psql('CREATE ROLE mallory NOLOGIN; GRANT mallory TO app_owner', { database: 'appdb' });
    await direct(
      [
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g",
        "CREATE SEQUENCE s; SELECT nextval('s')",
        `SELECT lo_from_bytea(${LO_OID}, 'a large object')`,
        // A function that changes how the server reads SQL text: the second line of defence must notice.
        "CREATE FUNCTION relax() RETURNS text LANGUAGE sql AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$",
      ].join(';\n'),
    );
  });
  after(async () => {
    await w?.stop();
  });

  /** SQL on the target itself, as the role Warden logs in with. */
  function direct(sql: string): Promise<string> {
    return w.pg.psql(sql, { database: 'appdb', user: TARGET_USER });
  }

  /** Everything an attack could have changed, read on the target directly (as the superuser). */
  async function snapshot(): Promise<Record<string, unknown>> {
    const json = await w.pg.psql(
      `SELECT json_build_object(
         'rows', (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t),
         'sequence', (SELECT last_value || '/' || is_called FROM s),
         'advisoryLocks', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'),
         'relations', (SELECT string_agg(n.nspname || '.' || c.relname, ',' ORDER BY n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')),
         'roles', (SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'),
         'memberships', (SELECT count(*) FROM pg_auth_members),
         'tableAcl', (SELECT coalesce(relacl::text, '') FROM pg_class WHERE oid = 'public.t'::regclass),
         'largeObjects', (SELECT string_agg(oid::text, ',' ORDER BY oid) FROM pg_largeobject_metadata),
         'exported', ${existsSync(EXPORT_PATH)}
       )`,
      { database: 'appdb' },
    );
    return JSON.parse(json) as Record<string, unknown>;
  }

  const logOffset = (): number => statSync(w.pg.logFile).size;
  const logSince = (offset: number): string => readFileSync(w.pg.logFile).subarray(offset).toString('utf8');

  /** What the server logged since `offset` must not contain the attack text, and must show the stand-in. */
  function assertNeverReached(offset: number, text: string | readonly string[], standIns = 1): void {
    const log = logSince(offset);
    for (const t of typeof text === 'string' ? [text] : text) assert.ok(!log.includes(t), `the server received ${JSON.stringify(t)}:\n${log}`);
    const seen = new Set(log.match(new RegExp(STAND_IN, 'g')) ?? []);
    assert.equal(seen.size > 0, standIns > 0, `stand-in statements in the server log:\n${log}`);
  }

  /** One psql run through Warden: each command its own Query, going on after errors, SQLSTATEs printed. */
  async function psql(sub: string, groups: string[], commands: readonly string[], extra = ''): Promise<RunResult> {
    const conninfo = `host=127.0.0.1 port=${w.port} user=${sub} dbname=appdb sslmode=require ${extra}`.trim();
    return run(PSQL!, ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-v', 'VERBOSITY=verbose', '-d', conninfo, ...commands.flatMap((c) => ['-c', c])], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token(sub, { groups }) },
      timeoutMs: 20_000,
    });
  }

  /** The `ERROR:  <sqlstate>: <message>` lines of a psql run, in order. */
  function errorsOf(r: RunResult): string[] {
    return [...r.stderr.matchAll(/^(?:psql:[^\n]*?)?(ERROR|FATAL): {2}(?:([0-9A-Z]{5}): )?([^\n]*)$/gm)].map((m) => `${m[1]} ${m[2] ?? '?'} ${m[3]}`);
  }

  async function reader(sub: string): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database: 'appdb', password: await w.token(sub, { groups: ['readers'] }), ssl: { rejectUnauthorized: false } });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  }

  async function rawLogin(sub: string, groups: string[]): Promise<RawClient> {
    const c = await RawClient.connect(w.port);
    const login = await c.login({ user: sub, database: 'appdb', password: await w.token(sub, { groups }), ssl: true });
    assert.equal(login.ok, true, JSON.stringify(login.error));
    return c;
  }

  describe('simple protocol (psql, reader)', () => {
    for (const a of SIMPLE_ATTACKS) {
      test(a.name, a.todo ? { todo: a.todo } : {}, async () => {
        const before = await snapshot();
        const offset = logOffset();
        const r = await psql('adv-simple', ['readers'], [a.sql]);
        const errors = errorsOf(r);
        assert.equal(errors.length, 1, describeRun(r));
        assert.match(errors[0]!, /^ERROR 42501 denied by policy: /, describeRun(r));
        if (a.message) assert.match(errors[0]!, a.message);
        assert.equal(r.stdout, '', describeRun(r));
        assert.deepEqual(await snapshot(), before);
        assertNeverReached(offset, a.sql);
      });
    }

    test('PREPARE of a read, then EXECUTE smuggling nextval() in its argument', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-prepare', ['readers'], ['PREPARE p(bigint) AS SELECT $1', "EXECUTE p(nextval('s'))", 'EXECUTE p(7)']);
      assert.deepEqual(errorsOf(r), ['ERROR 42501 denied by policy: no policy permits sql.read on target "appdb" for this agent (the statement is not read-only: it locks rows, calls a function with side effects, or changes a guarded setting)'], describeRun(r));
      assert.equal(r.stdout, 'PREPARE\n7\n', describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, "EXECUTE p(nextval('s'))");
    });

    test('PREPARE of a write, then EXECUTE of it', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-prepare-write', ['readers'], ['PREPARE w AS DELETE FROM t WHERE id = $1', 'EXECUTE w(1)']);
      assert.deepEqual(
        errorsOf(r),
        ['ERROR 42501 denied by policy: no policy permits sql.write on target "appdb" for this agent', 'ERROR 42501 denied by policy: the statement could not be parsed, or what it does cannot be known'],
        describeRun(r),
      );
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, ['PREPARE w', 'EXECUTE w']);
    });

    test('DECLARE CURSOR over a deleting CTE, then FETCH and COMMIT', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const declare = 'DECLARE c CURSOR FOR WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d';
      const r = await psql('adv-cursor', ['readers'], ['BEGIN', declare, 'FETCH ALL FROM c', 'COMMIT']);
      assert.deepEqual(
        errorsOf(r).map((e) => e.slice(0, 16)),
        ['ERROR 42501 deni', 'ERROR 25P02 curr'],
        describeRun(r),
      );
      assert.equal(r.stdout, 'BEGIN\nROLLBACK\n', describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, 'DECLARE c');
    });

    test('SET ROLE and set_config(role): the session still runs as the target credential', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-role', ['readers'], ['SET ROLE mallory', "SELECT set_config('role', 'mallory', false)", 'SET LOCAL ROLE mallory', 'SELECT current_user, session_user']);
      assert.deepEqual(errorsOf(r).map((e) => e.slice(0, 16)), ['ERROR 42501 deni', 'ERROR 42501 deni', 'ERROR 42501 deni'], describeRun(r));
      assert.equal(r.stdout, 'app_owner|app_owner\n', describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, ['mallory']);
    });

    test('pg_advisory_lock: refused, and no lock is held while the session lives', async () => {
      const offset = logOffset();
      const r = await psql('adv-lock', ['readers'], ['SELECT pg_advisory_lock(42)', 'SELECT pg_try_advisory_xact_lock(43)', "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"]);
      assert.deepEqual(errorsOf(r).map((e) => e.slice(0, 16)), ['ERROR 42501 deni', 'ERROR 42501 deni'], describeRun(r));
      assert.equal(r.stdout, '0\n', describeRun(r));
      assertNeverReached(offset, 'advisory_lock(4', 2);
    });

    test('SET standard_conforming_strings = off is refused, so the backslash text stays a harmless SELECT', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-scs', ['readers'], ['SET standard_conforming_strings = off', BACKSLASH_SMUGGLE, 'SHOW standard_conforming_strings']);
      // The SET is refused, and so is the text itself: its first literal would end elsewhere with the setting off.
      assert.deepEqual(errorsOf(r).map((e) => e.slice(0, 16)), ['ERROR 42501 deni', 'ERROR 42501 deni'], describeRun(r));
      for (const e of errorsOf(r)) assert.match(e, /settings that change how the server reads SQL text/);
      assert.equal(r.stdout, 'on\n', describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, 'standard_conforming_strings = off');
    });

    test('SET client_encoding / SET NAMES to SJIS are refused', async () => {
      const offset = logOffset();
      const r = await psql('adv-encoding', ['readers'], ["SET client_encoding = 'SJIS'", "SET NAMES 'SJIS'", "SELECT set_config('client_encoding', 'SJIS', false)", 'SHOW client_encoding']);
      assert.deepEqual(errorsOf(r).map((e) => e.slice(0, 16)), ['ERROR 42501 deni', 'ERROR 42501 deni', 'ERROR 42501 deni'], describeRun(r));
      assert.equal(r.stdout, 'UTF8\n', describeRun(r));
      assertNeverReached(offset, 'SJIS', 3);
    });

    test('a login with options=-c standard_conforming_strings=off is ended before anything runs', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-options', ['readers'], [BACKSLASH_SMUGGLE], "options='-c standard_conforming_strings=off'");
      assert.notEqual(r.code, 0, describeRun(r));
      assert.equal(r.stdout, '', describeRun(r));
      assert.match(r.stderr, /standard_conforming_strings is off/, describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, "SELECT '\\'", 0);
    });

    test('a login with client_encoding=SJIS is ended before anything runs', async () => {
      const offset = logOffset();
      const r = await psql('adv-sjis-login', ['readers'], ['SELECT 1'], 'client_encoding=SJIS');
      assert.notEqual(r.code, 0, describeRun(r));
      assert.equal(r.stdout, '', describeRun(r));
      assert.match(r.stderr, /client_encoding SJIS is not supported/, describeRun(r));
      assertNeverReached(offset, 'SELECT 1', 0);
    });

    test('second line: a function that turns standard_conforming_strings off ends the session before the next Query', async () => {
      const before = await snapshot();
      const offset = logOffset();
      const r = await psql('adv-relax', ['readers'], ['SELECT relax()', BACKSLASH_SMUGGLE]);
      assert.match(r.stderr, /FATAL: {2}42501: session ended by Warden: standard_conforming_strings is off/, describeRun(r));
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, "SELECT '\\'", 0);
    });

    test('psql \\lo_unlink (a fast-path FunctionCall) is refused and the large object survives', async () => {
      const before = await snapshot();
      const r = await psql('adv-lo-unlink', ['readers'], [`\\lo_unlink ${LO_OID}`]);
      assert.notEqual(r.code, 0, describeRun(r));
      assert.match(r.stderr, /denied by policy: the statement could not be parsed, or what it does cannot be known/, describeRun(r));
      assert.deepEqual(await snapshot(), before);
    });
  });

  describe('extended protocol (node-postgres, reader)', () => {
    let c: pg.Client;
    before(async () => {
      c = await reader('adv-extended');
    });
    after(async () => {
      await c?.end();
    });

    interface ExtendedAttack {
      name: string;
      query: pg.QueryConfig;
      todo?: string;
    }
    const attacks: ExtendedAttack[] = [
      { name: 'parameterized DELETE', query: { text: 'DELETE FROM t WHERE id = $1', values: [1] } },
      { name: 'DELETE in a CTE', query: { text: 'WITH d AS (DELETE FROM t WHERE id = $1 RETURNING *) SELECT * FROM d', values: [1] } },
      { name: 'nextval of a parameter', query: { text: 'SELECT nextval($1)', values: ['s'] } },
      { name: 'setval', query: { text: 'SELECT setval($1, $2)', values: ['s', 1000] } },
      { name: 'pg_advisory_lock', query: { text: 'SELECT pg_advisory_lock($1)', values: [42] } },
      { name: 'set_config of a setting named by a parameter', query: { text: 'SELECT set_config($1, $2, false)', values: ['role', 'mallory'] } },
      { name: 'SELECT ... FOR UPDATE', query: { text: 'SELECT * FROM t WHERE id = $1 FOR UPDATE', values: [1] } },
      { name: 'SELECT ... INTO', query: { text: 'SELECT * INTO stolen FROM t WHERE id > $1', values: [0] } },
      { name: 'EXPLAIN ANALYZE DELETE', query: { text: 'EXPLAIN ANALYZE DELETE FROM t WHERE id = $1', values: [1] } },
      { name: 'query_to_xml of a DELETE given as a parameter', query: { text: "SELECT query_to_xml($1, true, true, '')", values: ['DELETE FROM t WHERE id = 1 RETURNING *'] } },
      { name: 'pg_read_file', query: { text: 'SELECT pg_read_file($1)', values: ['/etc/hostname'] } },
      { name: 'lo_export', query: { text: 'SELECT lo_export($1, $2)', values: [LO_OID, EXPORT_PATH] } },
      { name: 'lo_unlink', query: { text: 'SELECT lo_unlink($1)', values: [LO_OID] } },
      { name: 'named: a DELETE', query: { name: 'adv_del', text: 'DELETE FROM t WHERE id = $1', values: [1] } },
      { name: 'named: a CTE write', query: { name: 'adv_cte', text: 'WITH u AS (UPDATE t SET v = $1 WHERE id = 1 RETURNING *) SELECT * FROM u', values: ['x'] } },
      { name: 'named: SET ROLE', query: { name: 'adv_role', text: 'SET ROLE mallory' } },
      { name: 'named: COPY (DELETE ...) TO STDOUT', query: { name: 'adv_copy', text: 'COPY (DELETE FROM t WHERE id = 1 RETURNING *) TO STDOUT' } },
      { name: 'named: SET standard_conforming_strings', query: { name: 'adv_scs', text: 'SET standard_conforming_strings = off' } },
      { name: 'named: a multi-statement text', query: { name: 'adv_multi', text: 'SELECT 1; DELETE FROM t WHERE id = 1' } },
    ];
    for (const a of attacks) {
      test(a.name, a.todo ? { todo: a.todo } : {}, async () => {
        const before = await snapshot();
        const offset = logOffset();
        const err = await c.query(a.query).then(
          (r) => assert.fail(`not refused: ${JSON.stringify(r.rows)}`),
          (e: unknown) => e as Error & { code?: string },
        );
        assert.equal(err.code, '42501', err.message);
        assert.match(err.message, /^denied by policy: /);
        // While the session is still open: no lock, no role, nothing written.
        assert.deepEqual(await snapshot(), before);
        assert.deepEqual((await c.query('SELECT current_user AS u, current_setting($1) AS scs', ['standard_conforming_strings'])).rows, [{ u: 'app_owner', scs: 'on' }]);
        assertNeverReached(offset, a.query.text);
      });
    }

    test('EXECUTE of a prepared read with nextval() in the argument, as an extended-protocol statement', async () => {
      await c.query('PREPARE adv_p(bigint) AS SELECT $1 AS v');
      const before = await snapshot();
      const offset = logOffset();
      const err = await c.query({ name: 'adv_exec', text: "EXECUTE adv_p(nextval('s'))" }).then(
        () => assert.fail('not refused'),
        (e: unknown) => e as Error & { code?: string },
      );
      assert.equal(err.code, '42501');
      assert.deepEqual((await c.query({ name: 'adv_exec_ok', text: 'EXECUTE adv_p(9)' })).rows, [{ v: '9' }]);
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, 'nextval');
    });
  });

  describe('raw protocol', () => {
    test('a fast-path FunctionCall of lo_unlink is refused with 42501; the large object survives', async () => {
      const oid = Number((await direct("SELECT 'pg_catalog.lo_unlink'::regproc::oid")).trim());
      const before = await snapshot();
      const offset = logOffset();
      const c = await rawLogin('adv-fastpath', ['readers']);
      try {
        c.write(functionCall(oid, [Buffer.from(String(LO_OID))]));
        const answer = await c.until((m) => m.type === 'Z');
        assert.deepEqual(answer.map((m) => describeMsg(m)), ['E 42501 denied by policy: the statement could not be parsed, or what it does cannot be known', 'Z I']);
        const next = await c.query('SELECT 1');
        assert.deepEqual([next.rows, next.status], [[['1']], 'I']);
      } finally {
        c.destroy();
      }
      assert.deepEqual(await snapshot(), before);
      assertNeverReached(offset, 'lo_unlink');
    });

    test('a function turns standard_conforming_strings off, and the next Query in the same write is refused as ambiguous', async () => {
      const before = await snapshot();
      const c = await rawLogin('adv-relax-pipelined', ['readers']);
      try {
        c.write(Buffer.concat([serialize.query('SELECT relax()'), serialize.query(BACKSLASH_SMUGGLE)]));
        const { messages } = await c.drain(3000);
        assert.ok(messages.some((m) => m.type === 'E' && /standard_conforming_strings is off/.test(decodeErrorFields(m.body).M ?? '')), messages.map((m) => describeMsg(m)).join('\n'));
        assert.deepEqual(await snapshot(), before);
      } finally {
        c.destroy();
        await restoreRows();
      }
    });

    test('a function turns standard_conforming_strings off inside one pipeline: the statement the server would read as a deleting CTE is refused as ambiguous', async () => {
      // Read with standard_conforming_strings on: a CTE selecting two strings. Off: a CTE that deletes.
      const cte = "WITH a AS (SELECT '\\' AS s, ' AS s), d AS (DELETE FROM t WHERE id = 2 RETURNING 1) SELECT 1 --') SELECT 1";
      const before = await snapshot();
      const c = await rawLogin('adv-relax-extended', ['readers']);
      try {
        c.write(
          Buffer.concat([
            serialize.parse({ text: 'SELECT relax()' }),
            serialize.bind({}),
            serialize.execute({}),
            serialize.parse({ text: cte }),
            serialize.bind({}),
            serialize.execute({}),
            serialize.sync(),
          ]),
        );
        await c.drain(3000);
        assert.deepEqual(await snapshot(), before);
      } finally {
        c.destroy();
        await restoreRows();
      }
    });
  });

  describe('beyond readers: writers, and what the audit trail says ran', () => {
    test('writer: UPDATE pg_settings (standard_conforming_strings off) is refused, and the pipelined DROP text with it', async () => {
      await direct('CREATE TABLE victim (id int)');
      const c = await rawLogin('adv-pg-settings', ['writers']);
      try {
        c.write(
          Buffer.concat([
            serialize.query("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'"),
            serialize.query("SELECT '\\' , ' ; DROP TABLE victim ; -- '"),
          ]),
        );
        const { messages } = await c.drain(3000);
        assert.ok(messages.some((m) => m.type === 'E' && decodeErrorFields(m.body).C === '42501'), messages.map((m) => describeMsg(m)).join('\n'));
        assert.equal((await direct("SELECT count(*) FROM pg_tables WHERE tablename = 'victim'")).trim(), '1', 'the table was dropped');
      } finally {
        c.destroy();
        await direct('DROP TABLE IF EXISTS victim');
      }
    });
  });

  describe('the audit trail names the statement the server ran', () => {
    /** The session's recorded statements as [text, command tag], once it has ended. */
    async function recorded(c: RawClient, sub: string): Promise<{ list: [string, string | undefined][]; describe: string }> {
      c.end(serialize.end());
      await c.waitClosed();
      const s = await latestSession(w, sub);
      return { list: s.statements.map((r) => [r.statement.text, r.end?.command]), describe: describeStatements(s) };
    }

    test('a portal bound before the unnamed statement is parsed again runs the first text', async () => {
      const c = await rawLogin('adv-portal', ['writers']);
      try {
        c.write(
          Buffer.concat([
            serialize.parse({ text: 'DELETE FROM t WHERE id = 3' }),
            serialize.bind({ portal: 'P' }),
            serialize.parse({ text: "SELECT 'harmless'" }),
            serialize.execute({ portal: 'P' }),
            serialize.sync(),
          ]),
        );
        const answer = await c.until((m) => m.type === 'Z');
        assert.deepEqual(answer.map((m) => describeMsg(m)), ['1', '2', '1', 'C DELETE 1', 'Z I'], 'the server ran the DELETE');
        const { list, describe } = await recorded(c, 'adv-portal');
        assert.deepEqual(list, [['DELETE FROM t WHERE id = 3', 'DELETE 1']], describe);
      } finally {
        c.destroy();
        await restoreRows();
      }
    });

    test('a statement name whose first Parse failed at the server is recorded as what it runs', async () => {
      const c = await rawLogin('adv-named-reuse', ['writers']);
      try {
        c.write(Buffer.concat([serialize.parse({ name: 'a', text: 'SELECT * FROM no_such_table' }), serialize.sync()]));
        assert.deepEqual((await c.until((m) => m.type === 'Z')).map((m) => m.type), ['E', 'Z']);
        c.write(Buffer.concat([serialize.parse({ name: 'a', text: 'DELETE FROM t WHERE id = 4' }), serialize.bind({ statement: 'a' }), serialize.execute({}), serialize.sync()]));
        const answer = await c.until((m) => m.type === 'Z');
        assert.deepEqual(answer.map((m) => describeMsg(m)), ['1', '2', 'C DELETE 1', 'Z I'], 'the server ran the DELETE');
        const { list, describe } = await recorded(c, 'adv-named-reuse');
        assert.deepEqual(list, [['DELETE FROM t WHERE id = 4', 'DELETE 1']], describe);
      } finally {
        c.destroy();
        await restoreRows();
      }
    });
  });

  /** Puts back the rows an attack that got through may have deleted. */
  async function restoreRows(): Promise<void> {
    await direct("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g ON CONFLICT (id) DO UPDATE SET v = excluded.v");
  }
});

/** FunctionCall: function OID, argument format codes (all text), arguments, result format (text). */
function functionCall(oid: number, args: Buffer[]): Buffer {
  const head = Buffer.alloc(10);
  head.writeUInt32BE(oid, 0);
  head.writeInt16BE(1, 4);
  head.writeInt16BE(0, 6);
  head.writeInt16BE(args.length, 8);
  const parts = args.map((a) => {
    const len = Buffer.alloc(4);
    len.writeInt32BE(a.length, 0);
    return Buffer.concat([len, a]);
  });
  return typedMessage('F', Buffer.concat([head, ...parts, Buffer.from([0, 0])]));
}

