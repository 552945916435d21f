/**
 * pgbench through Warden: initialisation (client-side COPY FROM STDIN of 100 000 rows), then TPC-B-like
 * and select-only runs with 4 clients in each query mode (simple, extended, prepared). Every run must
 * process every transaction without failure, report the same as against the target directly, keep
 * pgbench's balance invariant, and leave a trail whose recorded parameters add up to the table data.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  describeRun,
  describeStatements,
  directEndpoint,
  findStatements,
  libpq,
  pgbenchPath,
  run,
  sessionsOf,
  unendedStatements,
  wardenEndpoint,
  type Endpoint,
  type RunResult,
  type SessionRecord,
} from '../../helpers/clients.ts';

const PGBENCH = pgbenchPath();
const skip = PGBENCH ? false : 'pgbench is not installed (apt-get install postgresql-contrib)';

const CLIENTS = 4;
const TX_PER_CLIENT = 100;

describe('pgbench through Warden', { skip, timeout: 120_000 }, () => {
  let w: TestWarden;
  let db: pg.Client;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'warden-pgbench-'));
    w = await startTestWarden();
    const d = directEndpoint(w);
    db = new pg.Client({ host: d.host, port: d.port, user: d.user, password: d.password, database: d.database });
    await db.connect();
  });
  after(async () => {
    await db?.end();
    await w?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function pgbench(e: Endpoint, args: string[]): Promise<RunResult> {
    const c = libpq(e);
    return run(PGBENCH!, [...args, '-h', e.host, '-p', String(e.port), '-U', e.user, e.database], { env: c.env, timeoutMs: 60_000 });
  }

  /** Output without what depends on timing. */
  function stable(text: string): string {
    return text
      .split('\n')
      .filter((l) => !/^(latency average|latency stddev|initial connection time|tps) =/.test(l))
      .map((l) => l.replace(/\(elapsed [\d.]+ s, remaining [\d.]+ s\)/, '(elapsed)').replace(/^done in .*$/, 'done in <time>'))
      .join('\n');
  }

  async function one<T extends pg.QueryResultRow>(sql: string): Promise<T> {
    return (await db.query<T>(sql)).rows[0]!;
  }

  async function balances(): Promise<{ a: string; b: string; t: string; h: string; history: string }> {
    return one(
      'select (select sum(abalance) from pgbench_accounts)::text a, (select sum(bbalance) from pgbench_branches)::text b, ' +
        '(select sum(tbalance) from pgbench_tellers)::text t, (select coalesce(sum(delta), 0) from pgbench_history)::text h, (select count(*) from pgbench_history)::text history',
    );
  }

  test('pgbench -i -s 1 (COPY FROM STDIN) gives the same output and data as directly', async () => {
    const drop = 'drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers';
    await db.query(drop);
    const direct = await pgbench(directEndpoint(w), ['-i', '-s', '1']);
    assert.equal(direct.code, 0, describeRun(direct));
    await db.query(drop);
    const warden = await pgbench(await wardenEndpoint(w, 'pgbench-init'), ['-i', '-s', '1']);
    assert.equal(warden.code, 0, describeRun(warden));
    assert.equal(stable(warden.stderr), stable(direct.stderr));
    assert.equal(warden.stdout, direct.stdout);
    assert.match(warden.stderr, /100000 of 100000 tuples \(100%\) done/);

    const counts = await one('select (select count(*) from pgbench_accounts)::int a, (select count(*) from pgbench_branches)::int b, (select count(*) from pgbench_tellers)::int t, (select count(*) from pgbench_history)::int h, (select sum(aid)::text from pgbench_accounts) aids');
    assert.deepEqual(counts, { a: 100_000, b: 1, t: 10, h: 0, aids: '5000050000' });
    const pk = await one<{ n: number }>("select count(*)::int n from pg_constraint where conname in ('pgbench_accounts_pkey', 'pgbench_branches_pkey', 'pgbench_tellers_pkey')");
    assert.equal(pk.n, 3);

    const [s] = await sessionsOf(w, 'pgbench-init');
    assert.deepEqual(unendedStatements(s!), [], describeStatements(s!));
    const copy = findStatements(s!, /^copy pgbench_accounts from stdin/i);
    assert.equal(copy.length, 1, describeStatements(s!));
    assert.equal(copy[0]!.end?.outcome, 'ok');
    assert.equal(copy[0]!.end?.rows, 100_000);
    assert.equal(copy[0]!.end?.command, 'COPY 100000');
    assert.equal(findStatements(s!, /^vacuum analyze/).length, 4);
    assert.equal(findStatements(s!, /^alter table .* add primary key/).length, 3);
    assert.ok(s!.statements.every((r) => r.end?.outcome === 'ok'), describeStatements(s!));
  });

  interface Mode {
    mode: 'simple' | 'extended' | 'prepared';
    selectOnly: boolean;
  }
  const modes: Mode[] = [
    { mode: 'simple', selectOnly: false },
    { mode: 'extended', selectOnly: false },
    { mode: 'prepared', selectOnly: false },
    { mode: 'simple', selectOnly: true },
    { mode: 'prepared', selectOnly: true },
  ];

  for (const m of modes) {
    const name = `${m.selectOnly ? 'select-only' : 'tpcb-like'} -M ${m.mode}`;
    test(`${name}: -c ${CLIENTS} -j 2 -t ${TX_PER_CLIENT}, all transactions, invariant holds, trail adds up`, async () => {
      const args = ['-M', m.mode, '-c', String(CLIENTS), '-j', '2', '-t', String(TX_PER_CLIENT), ...(m.selectOnly ? ['-S'] : []), '-n'];
      const direct = await pgbench(directEndpoint(w), args);
      assert.equal(direct.code, 0, describeRun(direct));
      const before = await balances();
      const sub = `pgbench-${m.mode}${m.selectOnly ? '-s' : ''}`;
      const warden = await pgbench(await wardenEndpoint(w, sub), args);
      const afterRun = await balances();
      assert.equal(warden.code, 0, describeRun(warden));
      assert.equal(stable(warden.stdout), stable(direct.stdout));
      const total = CLIENTS * TX_PER_CLIENT;
      assert.match(warden.stdout, new RegExp(`^number of transactions actually processed: ${total}/${total}$`, 'm'));
      assert.match(warden.stdout, /^number of failed transactions: 0 \(0\.000%\)$/m);
      assert.match(warden.stdout, new RegExp(`^query mode: ${m.mode}$`, 'm'));

      // pgbench's invariant: every transaction adds the same delta to one account, teller and branch and logs it.
      assert.equal(afterRun.a, afterRun.h, 'sum(abalance) = sum(delta)');
      assert.equal(afterRun.b, afterRun.h, 'sum(bbalance) = sum(delta)');
      assert.equal(afterRun.t, afterRun.h, 'sum(tbalance) = sum(delta)');
      assert.equal(Number(afterRun.history) - Number(before.history), m.selectOnly ? 0 : total);

      // One connection that reads the scale (with -n it vacuums nothing), then one per client.
      const all = await sessionsOf(w, sub, { atLeast: CLIENTS + 1 });
      assert.equal(all.length, CLIENTS + 1);
      const setup = all.filter((s) => findStatements(s, 'select count(*) from pgbench_branches').length > 0);
      assert.equal(setup.length, 1);
      const sessions = all.filter((s) => s !== setup[0]);
      const statements = sessions.flatMap((s: SessionRecord) => s.statements);
      for (const s of sessions) {
        assert.deepEqual(unendedStatements(s), [], describeStatements(s));
        assert.equal(s.summary.reason, 'client_terminate');
      }
      const failed = statements.filter((r) => r.end?.outcome !== 'ok');
      assert.deepEqual(failed, [], 'every statement succeeded');
      const protocol = m.mode === 'simple' ? 'simple' : 'extended';
      assert.ok(statements.every((r) => r.statement.protocol === protocol));
      const selects = statements.filter((r) => /^SELECT abalance FROM pgbench_accounts WHERE aid = /.test(r.statement.text));
      assert.equal(selects.length, total);
      assert.ok(selects.every((r) => r.end?.rows === 1 && r.end.command === 'SELECT 1'));
      if (m.selectOnly) {
        assert.equal(statements.length, total);
        return;
      }
      assert.equal(statements.length, total * 7, 'BEGIN, 3 UPDATEs, SELECT, INSERT, END per transaction');
      // The deltas recorded in the trail add up to what the run added to the history.
      const inserts = statements.filter((r) => r.statement.text.startsWith('INSERT INTO pgbench_history'));
      assert.equal(inserts.length, total);
      let sum = 0n;
      for (const r of inserts) {
        let delta: string | null | undefined;
        if (protocol === 'extended') {
          assert.equal(r.statement.text, 'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);');
          assert.equal(r.statement.params?.length, 4);
          delta = r.statement.params![3];
        } else {
          delta = /VALUES \(\d+, \d+, \d+, (-?\d+), CURRENT_TIMESTAMP\)/.exec(r.statement.text)?.[1];
          assert.equal(r.statement.params, undefined);
        }
        assert.match(delta ?? '', /^-?\d+$/, r.statement.text);
        sum += BigInt(delta!);
        assert.equal(r.end?.command, 'INSERT 0 1');
      }
      assert.equal(sum.toString(), (BigInt(afterRun.h) - BigInt(before.h)).toString(), 'sum of recorded deltas = sum(delta) added by the run');
      const updates = statements.filter((r) => /^UPDATE pgbench_(accounts|tellers|branches) SET/.test(r.statement.text));
      assert.equal(updates.length, total * 3);
      assert.ok(updates.every((r) => r.end?.command === 'UPDATE 1' && r.end.rows === 1));
    });
  }

  test('a custom script with \\startpipeline/\\endpipeline: 7 statements (prepared) sent before one Sync', async () => {
    const script = join(dir, 'pipeline.sql');
    writeFileSync(
      script,
      [
        '\\set aid random(1, 100000)',
        '\\set tid random(1, 10)',
        '\\set delta random(-5000, 5000)',
        '\\startpipeline',
        'BEGIN;',
        'UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;',
        'SELECT abalance FROM pgbench_accounts WHERE aid = :aid;',
        'UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;',
        'UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = 1;',
        'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, 1, :aid, :delta, CURRENT_TIMESTAMP);',
        'END;',
        '\\endpipeline',
      ].join('\n') + '\n',
    );
    for (const mode of ['prepared'] as const) {
      const args = ['-M', mode, '-c', String(CLIENTS), '-j', '2', '-t', String(TX_PER_CLIENT), '-n', '-f', script];
      const direct = await pgbench(directEndpoint(w), args);
      assert.equal(direct.code, 0, describeRun(direct));
      const before = await balances();
      const sub = `pgbench-pipeline-${mode}`;
      const warden = await pgbench(await wardenEndpoint(w, sub), args);
      const afterRun = await balances();
      assert.equal(warden.code, 0, describeRun(warden));
      assert.equal(stable(warden.stdout), stable(direct.stdout));
      const total = CLIENTS * TX_PER_CLIENT;
      assert.match(warden.stdout, new RegExp(`^number of transactions actually processed: ${total}/${total}$`, 'm'));
      assert.match(warden.stdout, /^number of failed transactions: 0 \(0\.000%\)$/m);
      assert.equal(afterRun.a, afterRun.h);
      assert.equal(afterRun.b, afterRun.h);
      assert.equal(afterRun.t, afterRun.h);
      assert.equal(Number(afterRun.history) - Number(before.history), total);
      const sessions = (await sessionsOf(w, sub, { atLeast: CLIENTS + 1 })).filter((s) => findStatements(s, 'pgbench_history').length > 0);
      assert.equal(sessions.length, CLIENTS);
      const statements = sessions.flatMap((s) => s.statements);
      assert.equal(statements.length, total * 7);
      assert.deepEqual(statements.filter((r) => r.end?.outcome !== 'ok'), []);
      let sum = 0n;
      for (const r of statements.filter((x) => x.statement.text.startsWith('INSERT INTO pgbench_history'))) {
        // VALUES ($1 tid, 1, $2 aid, $3 delta, ...)
        assert.equal(r.statement.params?.length, 3, r.statement.text);
        sum += BigInt(r.statement.params[2]!);
      }
      assert.equal(sum.toString(), (BigInt(afterRun.h) - BigInt(before.h)).toString());
    }
  });
});
