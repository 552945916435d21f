/**
 * The shipped policy set enforced end to end, through real clients against a real server: a refused
 * statement is answered with SQLSTATE 42501, the policy's reason and the deciding policies, and the
 * session goes on; a refusal inside a transaction aborts it (COMMIT answers ROLLBACK); a refused
 * statement in a multi-statement Query or an extended-protocol pipeline stops the whole Query / the
 * pipeline up to Sync, so nothing of it runs; a write on production is held for approval; an agent in no
 * group cannot log in; every decision is in the audit trail with the policy version that made it.
 *
 * What really happened is always checked on the target directly, bypassing Warden.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { CedarDecider } from '../../../core/policy/cedar-decider.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { CLEAN_PG_ENV, describeRun, describeStatements, findStatements, latestSession, psqlPath, run, type RunResult } from '../../helpers/clients.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { decodeErrorFields, describeMsg, RawClient, type ServerMsg } from '../../helpers/raw-client.ts';
import { DEFAULT_POLICY_DIR, startTestWarden, TARGET_PASSWORD, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

/** Two targets on one server and database: `appdb` is development, `appdb-prod` is production. */
const DEV = 'appdb';
const PROD = 'appdb-prod';
const POLICY_VERSION = /^cedar:[0-9a-f]{16}$/;

describe('the default policy set, enforced through real clients', { skip, timeout: 90_000 }, () => {
  let server: PostgresServer;
  let w: TestWarden;

  before(async () => {
    server = await startTestPostgres({ authMethod: 'scram-sha-256' });
    await server.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await server.createDatabase('appdb', TARGET_USER);
    const target = { kind: 'postgres', host: '127.0.0.1', port: server.port, database: 'appdb', credential: 'appdb-cred' };
    w = await startTestWarden({
      pg: server,
      policyDir: DEFAULT_POLICY_DIR,
      // Held statements answer at once on production (async mode); test/e2e/approvals holds them (wait mode).
      config: { targets: [{ name: DEV, environment: 'development', ...target }, { name: PROD, environment: 'production', approvalMode: 'async', ...target }] },
    });
    await direct("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g");
  });
  after(async () => {
    await w?.stop();
    await server?.stop();
  });

  /** SQL on the target itself, as the role Warden logs in with (unaligned, tuples only). */
  function direct(sql: string): Promise<string> {
    return w.pg.psql(sql, { database: 'appdb', user: TARGET_USER });
  }

  const rowsOfT = (): Promise<string> => direct('SELECT id, v FROM t ORDER BY id');

  /** One psql run through Warden, each command its own Query (`-c`), going on after errors, with SQLSTATEs printed. */
  async function psql(sub: string, groups: string[], commands: string[], o: { database?: string } = {}): Promise<RunResult> {
    const conninfo = `host=127.0.0.1 port=${w.port} user=${sub} dbname=${o.database ?? DEV} sslmode=require`;
    return run(PSQL!, ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-v', 'VERBOSITY=verbose', '-d', conninfo, ...commands.flatMap((c) => ['-c', c])], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token(sub, { groups }) },
      timeoutMs: 20_000,
    });
  }

  async function connect(sub: string, groups: string[], database = DEV): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database, password: await w.token(sub, { groups }), ssl: { rejectUnauthorized: false } });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  }

  type PgError = Error & { code?: string; detail?: string; hint?: string; severity?: string };
  const failure = (p: Promise<unknown>): Promise<PgError> =>
    p.then(
      () => assert.fail('the statement was not refused'),
      (e: unknown) => e as PgError,
    );

  test('psql, reader: SELECT runs, DELETE is refused with 42501, reason and policies, and the session goes on', async () => {
    const before = await rowsOfT();
    const r = await psql('enf-reader', ['readers'], [
      'SELECT id, v FROM t WHERE id <= 2 ORDER BY id',
      'DELETE FROM t WHERE id = 1',
      'DELETE FROM t',
      'SELECT count(*) FROM t',
    ]);
    assert.equal(r.stdout, '1|v1\n2|v2\n5\n', describeRun(r));
    // A DELETE no permit covers: the reason says so, and no policy decided (default deny).
    assert.match(r.stderr, /ERROR: {2}42501: denied by policy: no policy permits sql\.write on target "appdb" for this agent\nDETAIL: {2}policies: \(none\)\n/, describeRun(r));
    // A DELETE a guardrail forbids: the policy's own reason and id.
    assert.match(
      r.stderr,
      /ERROR: {2}42501: denied by policy: UPDATE or DELETE without a WHERE clause changes every row; add a WHERE clause\nDETAIL: {2}policies: guard\.unbounded-change\n/,
      describeRun(r),
    );
    assert.equal((r.stderr.match(/ERROR:/g) ?? []).length, 2, describeRun(r));
    assert.equal(await rowsOfT(), before);
  });

  test('transaction, writer on development: a refused DELETE aborts it, COMMIT answers ROLLBACK, nothing is kept', async () => {
    const before = await rowsOfT();
    const r = await psql('enf-tx', ['writers'], ['BEGIN', "INSERT INTO t VALUES (10, 'in tx')", 'DELETE FROM t', 'SELECT 1', 'COMMIT']);
    assert.equal(r.stdout, 'BEGIN\nINSERT 0 1\nROLLBACK\n', describeRun(r));
    assert.match(r.stderr, /ERROR: {2}42501: denied by policy: UPDATE or DELETE without a WHERE clause[^\n]*\nDETAIL: {2}policies: guard\.unbounded-change\n/, describeRun(r));
    // The statement after the refusal meets an aborted transaction, exactly as after a real permission error.
    assert.match(r.stderr, /ERROR: {2}25P02: current transaction is aborted/, describeRun(r));
    assert.equal(await rowsOfT(), before, 'neither the INSERT nor any deletion was kept');
  });

  test('multi-statement Query: one refused statement stops all of it', async () => {
    const before = await rowsOfT();
    const r = await psql('enf-multi', ['writers'], ["INSERT INTO t VALUES (20, 'multi'); DROP TABLE t", 'SELECT 1; DROP TABLE t; SELECT 2', 'SELECT count(*) FROM t']);
    assert.equal(r.stdout, '5\n', describeRun(r));
    assert.equal((r.stderr.match(/ERROR: {2}42501: denied by policy: DROP is not allowed through Warden\nDETAIL: {2}policies: guard\.drop\n/g) ?? []).length, 2, describeRun(r));
    assert.equal(await rowsOfT(), before, 'the INSERT before the DROP did not run');
    assert.equal((await direct("SELECT count(*) FROM pg_tables WHERE tablename = 't'")).trim(), '1');

    const s = await latestSession(w, 'enf-multi');
    const outcome = (text: string): unknown[] => findStatements(s, text).map((x) => [x.statement.text, x.statement.decision.effect, x.end?.outcome, x.end?.sqlstate]);
    // Each statement of a refused Query is recorded: the refused one 'denied', the others 'error' (not executed).
    assert.deepEqual(outcome('multi'), [["INSERT INTO t VALUES (20, 'multi')", 'allow', 'error', undefined]], describeStatements(s));
    assert.deepEqual(
      s.statements.slice(2, 5).map((x) => [x.statement.text, x.statement.decision.effect, x.end?.outcome, x.end?.sqlstate]),
      [
        ['SELECT 1', 'allow', 'error', undefined],
        ['DROP TABLE t', 'deny', 'denied', '42501'],
        ['SELECT 2', 'allow', 'error', undefined],
      ],
      describeStatements(s),
    );
  });

  test('extended protocol, node-postgres: a refused parameterized statement gives 42501 and the connection goes on', async () => {
    const c = await connect('enf-pg', ['readers']);
    try {
      const err = await failure(c.query('DELETE FROM t WHERE id = $1', [1]));
      assert.equal(err.code, '42501');
      assert.equal(err.message, 'denied by policy: no policy permits sql.write on target "appdb" for this agent');
      assert.equal(err.detail, 'policies: (none)');
      const ok = await c.query('SELECT v FROM t WHERE id = $1', [2]);
      assert.deepEqual(ok.rows, [{ v: 'v2' }]);
      // Named prepared statements too: a refused one leaves no trace the driver or the server trips over.
      const named = await failure(c.query({ name: 'del', text: 'DELETE FROM t WHERE id = $1', values: [1] }));
      assert.equal(named.code, '42501');
      assert.deepEqual((await c.query({ name: 'sel', text: 'SELECT count(*)::int AS n FROM t WHERE id > $1', values: [0] })).rows, [{ n: 5 }]);
    } finally {
      await c.end();
    }
    assert.equal((await direct('SELECT count(*) FROM t')).trim(), '5');
  });

  test('extended protocol, node-postgres: queries issued without awaiting keep their order and their own answers', async () => {
    const c = await connect('enf-pipe', ['readers']);
    const order: string[] = [];
    try {
      const settled = await Promise.allSettled([
        c.query('SELECT $1::int AS a', [1]).finally(() => order.push('a')),
        c.query('UPDATE t SET v = $1 WHERE id = $2', ['x', 1]).finally(() => order.push('update')),
        c.query('SELECT $1::int AS b', [2]).finally(() => order.push('b')),
        c.query('DROP TABLE t').finally(() => order.push('drop')),
        c.query('SELECT count(*)::int AS n FROM t').finally(() => order.push('count')),
      ]);
      const summary = settled.map((s) => (s.status === 'fulfilled' ? s.value.rows : (s.reason as PgError).code));
      assert.deepEqual(summary, [[{ a: 1 }], '42501', [{ b: 2 }], '42501', [{ n: 5 }]]);
      assert.deepEqual(order, ['a', 'update', 'b', 'drop', 'count']);
    } finally {
      await c.end();
    }
    assert.equal(await rowsOfT(), '1|v1\n2|v2\n3|v3\n4|v4\n5|v5\n');
  });

  test('raw pipeline Parse/Bind/Execute(INSERT) Parse/Bind/Execute(DROP) Sync: the INSERT is rolled back, one 42501, then ReadyForQuery', async () => {
    const c = await RawClient.connect(w.port);
    try {
      const login = await c.login({ user: 'enf-raw', database: DEV, password: await w.token('enf-raw', { groups: ['writers'] }), ssl: true });
      assert.equal(login.ok, true, JSON.stringify(login.error));
      c.write(
        Buffer.concat([
          serialize.parse({ text: "INSERT INTO t VALUES (30, 'pipeline')" }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.parse({ text: 'DROP TABLE t' }),
          serialize.bind({}),
          serialize.execute({}),
          serialize.sync(),
        ]),
      );
      const answer = await c.until((m) => m.type === 'Z');
      assert.deepEqual(answer.map((m) => describeMsg(m, true)), [
        '1',
        '2',
        'C INSERT 0 1',
        'E 42501 denied by policy: DROP is not allowed through Warden | policies: guard.drop',
        'Z I',
      ]);
      // Nothing else for the discarded Bind and Execute: the next answer is the next Query's.
      const next = await c.query('SELECT count(*) FROM t');
      assert.deepEqual([next.rows, next.error, next.status], [[['5']], undefined, 'I']);
      assert.equal(c.buffered, 0);
    } finally {
      c.destroy();
    }
    assert.equal((await direct('SELECT count(*) FROM t WHERE id = 30')).trim(), '0', 'the INSERT of the failed pipeline was rolled back');
    assert.equal((await direct("SELECT count(*) FROM pg_tables WHERE tablename = 't'")).trim(), '1');
  });

  test('held for approval: a writer\'s UPDATE on production is refused as "approval required", naming the request, and not run', async () => {
    const before = await rowsOfT();
    const c = await connect('enf-prod', ['writers'], PROD);
    try {
      const err = await failure(c.query("UPDATE t SET v = 'x' WHERE id = 1"));
      assert.equal(err.code, '42501');
      assert.match(err.message, /^approval required: changes to production data need a database approver's approval; request apr-[a-z0-9]{10} waits for 1 approval from db-approvers$/);
      assert.equal(err.detail, 'policies: sql.write.production-approval');
      assert.match(err.hint ?? '', /run exactly the same statement again within 60 minutes: it runs once/);
      // Reads on production need no approval.
      assert.deepEqual((await c.query('SELECT v FROM t WHERE id = 1')).rows, [{ v: 'v1' }]);
    } finally {
      await c.end();
    }
    assert.equal(await rowsOfT(), before);
    const s = await latestSession(w, 'enf-prod');
    const [held] = findStatements(s, 'UPDATE t');
    assert.equal(held?.statement.decision.effect, 'approval', describeStatements(s));
    assert.deepEqual(held.statement.decision.approval, { approvers: ['db-approvers'], approvals: 1 });
    assert.deepEqual([held.end?.outcome, held.end?.sqlstate], ['denied', '42501']);
  });

  test('connect: an agent in no group is refused at login (psql and node-postgres)', async () => {
    const r = await psql('enf-nogroup', [], ['SELECT 1']);
    assert.notEqual(r.code, 0, describeRun(r));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /not permitted to connect to target "appdb"/, describeRun(r));

    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'enf-nogroup', database: DEV, password: await w.token('enf-nogroup', { groups: [] }), ssl: { rejectUnauthorized: false } });
    c.on('error', () => undefined);
    const err = await failure(c.connect());
    assert.equal(err.code, '42501');
    assert.match(err.message, /not permitted to connect/);
  });

  test('audit: every decision is recorded with its effect, policies and policy version', async () => {
    const c = await connect('enf-audit', ['readers']);
    try {
      await c.query('SELECT count(*) FROM t /* audited read */');
      await failure(c.query('TRUNCATE t'));
      await failure(c.query('SELECT * FROM t WHERE id = $1 FOR UPDATE', [1]));
    } finally {
      await c.end();
    }
    const s = await latestSession(w, 'enf-audit');
    const [read] = findStatements(s, 'audited read');
    assert.equal(read?.statement.decision.effect, 'allow', describeStatements(s));
    assert.deepEqual(read.statement.decision.policies, ['sql.read.readers']);
    assert.match(read.statement.decision.policyVersion ?? '', POLICY_VERSION);
    assert.equal(read.end?.outcome, 'ok');

    const [truncate] = findStatements(s, 'TRUNCATE t');
    assert.deepEqual(
      [truncate?.statement.decision.effect, truncate?.statement.decision.policies, truncate?.statement.decision.reason],
      ['deny', ['guard.truncate'], 'TRUNCATE is not allowed through Warden'],
      describeStatements(s),
    );
    assert.match(truncate!.statement.decision.policyVersion ?? '', POLICY_VERSION);
    assert.equal(truncate!.statement.decision.policyVersion, read.statement.decision.policyVersion);
    assert.equal(truncate!.statement.decision.policyVersion, w.gw.policyVersion);
    assert.deepEqual([truncate!.end?.outcome, truncate!.end?.sqlstate], ['denied', '42501']);

    const [locking] = findStatements(s, 'FOR UPDATE');
    assert.deepEqual([locking?.statement.protocol, locking?.statement.decision.effect, locking?.end?.outcome, locking?.end?.sqlstate], ['extended', 'deny', 'denied', '42501'], describeStatements(s));
    assert.deepEqual(locking!.statement.decision.policies, []);
  });

  test('a repeated refused statement is refused again from the decision cache', async () => {
    const decider = w.gw.decider;
    assert.ok(decider instanceof CedarDecider, 'the gateway decides with the Cedar policies');
    const c = await connect('enf-cache', ['readers']);
    try {
      const start = decider.evaluationCount;
      const first = await failure(c.query('DELETE FROM t WHERE id = 4242'));
      const afterFirst = decider.evaluationCount;
      const second = await failure(c.query('DELETE FROM t WHERE id = 4242'));
      assert.deepEqual([first.code, second.code, second.message], ['42501', '42501', first.message]);
      assert.ok(afterFirst > start, 'the first refusal was evaluated');
      assert.equal(decider.evaluationCount, afterFirst, 'the second came from the cache');
    } finally {
      await c.end();
    }
  });
});

