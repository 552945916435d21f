/**
 * psycopg2 (libpq underneath) through Warden prints exactly what it prints directly: executemany,
 * a bytea parameter, COPY FROM STDIN / TO STDOUT via copy_expert, a server-side named cursor fetched
 * in itersize batches, commits, rollbacks, an error with its SQLSTATE, many types and notices.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  CLEAN_PG_ENV,
  describeRun,
  describeStatements,
  directEndpoint,
  findStatements,
  latestSession,
  pythonWithPsycopg2,
  run,
  unendedStatements,
  wardenEndpoint,
  type Endpoint,
  type RunResult,
} from '../../helpers/clients.ts';

const PYTHON = pythonWithPsycopg2();
const skip = PYTHON ? false : 'psycopg2 is not installed for /usr/bin/python3 (apt-get install python3-psycopg2)';
const PROBE = fileURLToPath(new URL('./psycopg-probe.py', import.meta.url));

describe('psycopg2 through Warden', { skip, timeout: 120_000 }, () => {
  let w: TestWarden;

  before(async () => {
    w = await startTestWarden();
  });
  after(async () => {
    await w?.stop();
  });

  function probe(e: Endpoint, sslmode: string): Promise<RunResult> {
    return run(PYTHON!, [PROBE], {
      env: { ...CLEAN_PG_ENV, PGHOST: e.host, PGPORT: String(e.port), PGUSER: e.user, PGPASSWORD: e.password, PGDATABASE: e.database, PGSSLMODE: sslmode, PYTHONDONTWRITEBYTECODE: '1' },
      timeoutMs: 30_000,
    });
  }

  test('the same workload gives the same JSON directly and through Warden (sslmode disable and require)', async () => {
    const direct = await probe(directEndpoint(w), 'prefer');
    assert.equal(direct.code, 0, describeRun(direct));
    const expected = JSON.parse(direct.stdout) as Record<string, unknown>;
    // Sanity of the workload itself.
    assert.equal(expected.executemany_rowcount, 20);
    assert.equal(expected.copy_in_rowcount, 1000);
    assert.equal(expected.bytea_roundtrip, true);
    assert.deepEqual(expected.named_cursor && (expected.named_cursor as { rows: number }).rows, 3000);
    assert.deepEqual(expected.tx_delete, 1015);
    assert.equal((expected.dup as string[])[0], '23505');
    assert.deepEqual(expected.notices, ['NOTICE:  psycopg notice 1']);

    for (const sslmode of ['disable', 'require']) {
      const sub = `psycopg-${sslmode}`;
      const warden = await probe(await wardenEndpoint(w, sub), sslmode);
      assert.equal(warden.code, 0, describeRun(warden));
      assert.equal(warden.stderr, direct.stderr);
      assert.deepEqual(JSON.parse(warden.stdout), expected, `sslmode=${sslmode}`);

      const s = await latestSession(w, sub);
      assert.deepEqual(unendedStatements(s), [], describeStatements(s));
      const startEv = s.events.find((e) => e.type === 'session.start');
      assert.equal(startEv?.type === 'session.start' && startEv.tls, sslmode === 'require');
      // psycopg2 interpolates parameters itself and uses the simple protocol only.
      assert.ok(s.statements.every((r) => r.statement.protocol === 'simple' && r.statement.params === undefined));
      const inserts = findStatements(s, /^insert into py_items \(id, name, price, tags, data\) values \(\d+, 'item \d+'/);
      assert.equal(inserts.length, 20, describeStatements(s));
      assert.ok(inserts.every((r) => r.end?.outcome === 'ok' && r.end.rows === 1));
      assert.match(inserts[3]!.statement.text, /values \(4, 'item 4', 1(\.0+)?, ARRAY\['t1','x'\], NULL\)$/);
      const upd = findStatements(s, 'update py_items set data = ')[0]!;
      assert.match(upd.statement.text, /set data = '\\x000102.*'::bytea where id = 7 returning/, 'the bytea literal is recorded');
      assert.equal(upd.end?.rows, 1);
      assert.deepEqual(
        findStatements(s, /^copy py_items/).map((r) => [r.end?.outcome, r.end?.command]),
        [['ok', 'COPY 1000']],
      );
      assert.equal(findStatements(s, /^copy \(select id, name, price, tags from py_items/)[0]?.end?.command, 'COPY 10');
      const declare = findStatements(s, /^DECLARE "py_big" CURSOR WITHOUT HOLD FOR select g, md5/);
      assert.equal(declare.length, 1, describeStatements(s));
      const fetches = findStatements(s, 'FETCH FORWARD 250 FROM "py_big"');
      assert.equal(fetches.length, 13, 'twelve batches of 250 and the empty one');
      assert.deepEqual(fetches.map((r) => r.end?.rows), [...Array(12).fill(250), 0]);
      const dup = findStatements(s, "values (1, 'duplicate')")[0]!;
      assert.deepEqual([dup.end?.outcome, dup.end?.sqlstate], ['error', '23505']);
      assert.equal(findStatements(s, 'delete from py_items where id > 5')[0]?.end?.rows, 1015);
      assert.ok(findStatements(s, /^ROLLBACK$/).length >= 2);
      assert.ok(findStatements(s, /^COMMIT$/).length >= 5);
    }
  });
});
