/**
 * pgjdbc through Warden prints exactly what it prints directly (test/fixtures/jdbc/Probe.java): a
 * PreparedStatement run 10 times (named server statement after prepareThreshold), setFetchSize with
 * autocommit off (PortalSuspended), batch inserts (many Bind/Execute before one Sync), a
 * CallableStatement, many types, binary transfer with prepareThreshold=1, TLS with
 * NonValidatingFactory, errors and a query timeout that the driver enforces with a CancelRequest.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  describeRun,
  describeStatements,
  directEndpoint,
  findStatements,
  latestSession,
  PGJDBC_JAR,
  run,
  unendedStatements,
  wardenEndpoint,
  which,
  type Endpoint,
  type RunResult,
  type SessionRecord,
} from '../../helpers/clients.ts';

const JAVA = which('java');
const JAVAC = which('javac');
const PROBE = fileURLToPath(new URL('../../fixtures/jdbc/Probe.java', import.meta.url));
const skip = !JAVA ? 'java is not installed (apt-get install default-jdk-headless)' : !existsSync(PGJDBC_JAR) ? `pgjdbc is not installed (${PGJDBC_JAR}; apt-get install libpostgresql-jdbc-java)` : false;

describe('pgjdbc through Warden', { skip, timeout: 120_000 }, () => {
  let w: TestWarden;
  let classes: string | undefined;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'warden-jdbc-'));
    // Compile once (faster than a source launch per run); fall back to the source launcher without javac.
    const compiling = JAVAC ? run(JAVAC, ['-d', dir, '-cp', PGJDBC_JAR, PROBE], { timeoutMs: 60_000 }) : undefined;
    w = await startTestWarden();
    if (compiling) {
      const r = await compiling;
      assert.equal(r.code, 0, describeRun(r));
      classes = dir;
    }
  });
  after(async () => {
    await w?.stop();
    if (classes) rmSync(classes, { recursive: true, force: true });
  });

  function probe(e: Endpoint, query: string, timeout: boolean): Promise<RunResult> {
    const url = `jdbc:postgresql://${e.host}:${e.port}/${e.database}?${query}`;
    const cp = classes ? `${PGJDBC_JAR}:${classes}` : PGJDBC_JAR;
    return run(JAVA!, ['-Duser.timezone=UTC', '-Duser.language=en', '-Xshare:auto', '-XX:TieredStopAtLevel=1', '-cp', cp, classes ? 'Probe' : PROBE, url, e.user, e.password, ...(timeout ? ['timeout'] : [])], { timeoutMs: 60_000 });
  }

  const directRuns = new Map<string, Promise<RunResult>>();

  /** Runs the probe directly (once per URL query) and through Warden, side by side; asserts equal output. */
  async function same(sub: string, query: string, o: { wardenQuery?: string; timeout?: boolean } = {}): Promise<{ out: string; session: SessionRecord }> {
    const key = `${query} ${o.timeout ?? false}`;
    if (!directRuns.has(key)) directRuns.set(key, probe(directEndpoint(w), query, o.timeout ?? false));
    const [direct, warden] = await Promise.all([directRuns.get(key)!, probe(await wardenEndpoint(w, sub), o.wardenQuery ?? query, o.timeout ?? false)]);
    assert.equal(direct.code, 0, describeRun(direct));
    assert.equal(warden.code, 0, describeRun(warden));
    assert.equal(warden.stdout, direct.stdout);
    assert.equal(warden.stderr, direct.stderr);
    const session = await latestSession(w, sub);
    assert.deepEqual(unendedStatements(session), [], describeStatements(session));
    return { out: warden.stdout, session };
  }

  function checkTrail(s: SessionRecord): void {
    const prepared = findStatements(s, "select $1::int * 2 as doubled, $2::text || '!' as shout, $3::numeric / 3 as third");
    assert.equal(prepared.length, 10, describeStatements(s));
    assert.ok(prepared.every((r, k) => r.statement.protocol === 'extended' && r.statement.params?.[1] === `run ${k + 1}` && r.end?.outcome === 'ok' && r.end.rows === 1));

    const fetches = findStatements(s, 'select g, md5(g::text) as h from generate_series(1, $1) g');
    assert.equal(fetches.length, 26, 'one Execute per fetch of 100 rows, then the completing one');
    assert.ok(fetches.slice(0, 25).every((r) => r.end?.command === 'portal suspended' && r.end.rows === 100));
    assert.deepEqual([fetches[25]!.end?.command, fetches[25]!.end?.rows], ['SELECT 0', 0]);

    const inserts = findStatements(s, 'insert into jdbc_items (id, name, amount, payload, created) values ($1, $2, $3, $4, $5)');
    assert.equal(inserts.length, 100);
    assert.ok(inserts.every((r, k) => r.statement.params?.[1] === `item-${k + 1}` && r.end?.command === 'INSERT 0 1'));
    assert.equal(inserts[9]!.statement.params?.[3], '\\x0a00ff275c', 'a bytea parameter, binary');
    assert.equal(inserts[8]!.statement.params?.[3], null);

    assert.deepEqual(findStatements(s, 'no_such_table_jdbc').map((r) => [r.end?.outcome, r.end?.sqlstate]), [['error', '42P01']]);
    assert.deepEqual(findStatements(s, 'insert into jdbc_items (id, name) values').map((r) => [r.end?.outcome, r.end?.sqlstate]), [['error', '23505']]);
    assert.equal(findStatements(s, 'delete from jdbc_items where id > 50')[0]?.end?.rows, 50);
    assert.equal(findStatements(s, /^ROLLBACK$/).length, 1);
  }

  test('default settings (sslmode=disable): identical dump, complete trail', async () => {
    const { out, session } = await same('jdbc-default', 'sslmode=disable', { timeout: true });
    assert.match(out, /^prepared 10: 20 \| run 10! \| 3\.5/m);
    assert.match(out, /^fetchSize rows 2500 sum 3126250 /m);
    assert.match(out, /^batch counts 100 all one true$/m);
    assert.match(out, /^callable CALLED THROUGH JDBC$/m);
    assert.match(out, /^types 3: i4\(int4\)=42 .* bparam\(bytea\)=0x01020303$/m);
    assert.match(out, /^error 42P01 /m);
    assert.match(out, /^dup 23505 /m);
    assert.match(out, /^timeout 57014 ERROR: canceling statement due to user request$/m);
    assert.match(out, /^after errors still usable$/m);
    checkTrail(session);
    assert.deepEqual(findStatements(session, 'select pg_sleep(30)').map((r) => [r.end?.outcome, r.end?.sqlstate]), [['cancelled', '57014']]);
    const startEv = session.events.find((e) => e.type === 'session.start');
    assert.equal(startEv?.type === 'session.start' && startEv.tls, false);
  });

  test('binary transfer with prepareThreshold=1 (named statements from the first execution)', async () => {
    const { out, session } = await same('jdbc-binary', 'sslmode=disable&prepareThreshold=1&binaryTransfer=true');
    assert.match(out, /^types 1: i4\(int4\)=42 .*tstz\(timestamptz\)=2024-02-29 13:14:15\.123456\+00 /m);
    checkTrail(session);
  });

  test('TLS: sslmode=require with NonValidatingFactory to Warden gives the same dump', async () => {
    const { session } = await same('jdbc-tls', 'sslmode=disable', { wardenQuery: 'sslmode=require&sslfactory=org.postgresql.ssl.NonValidatingFactory' });
    checkTrail(session);
    const startEv = session.events.find((e) => e.type === 'session.start');
    assert.equal(startEv?.type === 'session.start' && startEv.tls, true);
  });
});
