/**
 * node-postgres (`pg`) through Warden returns exactly what it returns directly: simple and
 * multi-statement queries, parameters in text and binary format, binary results, named prepared
 * statements reused, queued (pipelined) queries, a failing transaction, a pg-cursor read in batches
 * (Execute with a row limit, PortalSuspended), a slowly consumed pg-query-stream, a large result with
 * the client's socket paused (backpressure), and a CancelRequest with the key the driver received.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import Cursor from 'pg-cursor';
import QueryStream from 'pg-query-stream';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  describeStatements,
  directEndpoint,
  findStatements,
  latestSession,
  unendedStatements,
  wardenEndpoint,
  type Endpoint,
  type SessionRecord,
} from '../../helpers/clients.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function connect(e: Endpoint, ssl = false): Promise<pg.Client> {
  const c = new pg.Client({
    host: e.host,
    port: e.port,
    user: e.user,
    password: e.password,
    database: e.database,
    application_name: 'e2e-node-postgres',
    ...(ssl ? { ssl: { rejectUnauthorized: false } } : {}),
  });
  return c.connect().then(() => c);
}

/** Plain data for deepEqual: Dates and Buffers as strings, no prototypes. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' ? `buf:${Buffer.from((x as { data: number[] }).data).toString('hex')}` : x)));
}

function rowsOf(r: pg.QueryResult): { command: string; rowCount: number | null; fields: string[]; rows: unknown } {
  return { command: r.command, rowCount: r.rowCount, fields: r.fields.map((f) => `${f.name}:${f.dataTypeID}`), rows: plain(r.rows) };
}

describe('node-postgres through Warden', { timeout: 120_000 }, () => {
  let w: TestWarden;

  before(async () => {
    w = await startTestWarden();
  });
  after(async () => {
    await w?.stop();
  });

  /** Runs `work` on a fresh connection to each side; asserts equal results; returns the Warden session. */
  async function same<T>(sub: string, work: (c: pg.Client, side: 'direct' | 'warden') => Promise<T>, opts: { reset?: string; ssl?: boolean } = {}): Promise<{ result: T; session: SessionRecord }> {
    const results: T[] = [];
    for (const e of [directEndpoint(w), await wardenEndpoint(w, sub)]) {
      if (opts.reset) await w.pg.psql(opts.reset, { database: 'appdb' });
      const c = await connect(e, e.label === 'warden' && opts.ssl);
      try {
        results.push(await work(c, e.label));
      } finally {
        await c.end();
      }
    }
    assert.deepEqual(plain(results[1]), plain(results[0]), 'through Warden = direct');
    const session = await latestSession(w, sub);
    assert.deepEqual(unendedStatements(session), [], describeStatements(session));
    return { result: results[1]!, session };
  }

  test('simple queries, multi-statement queries, types, notices', async () => {
    const { result, session } = await same('pg-simple', async (c) => {
      const notices: string[] = [];
      c.on('notice', (n) => notices.push(`${n.severity}: ${n.message}`));
      const out: unknown[] = [];
      out.push(rowsOf(await c.query("select 1 as one, 'two' as two, null::int as nothing, 3.5::numeric as num, true as yes, '2024-02-29 12:34:56.789+00'::timestamptz as ts, '{1,2,3}'::int[] as arr, '{\"a\": [1, null]}'::jsonb as j, '\\xdeadbeef'::bytea as b, interval '1 day 2 hours' as iv, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid as u")));
      const multi = (await c.query('create temp table s(a int, b text); insert into s select g, md5(g::text) from generate_series(1, 50) g; select count(*), max(b) from s; update s set b = null where a > 40')) as unknown as pg.QueryResult[];
      out.push(multi.map(rowsOf));
      await c.query("do $$ begin raise notice 'from do: %', 7; end $$");
      out.push(rowsOf(await c.query('')).command);
      out.push(notices);
      return out;
    });
    assert.deepEqual((result[3] as string[])[0], 'NOTICE: from do: 7');
    // The empty query holds no statement: nothing to record (the server answers EmptyQueryResponse).
    assert.equal(session.statements.length, 6, describeStatements(session));
    assert.equal(result[2], null);
    const insert = findStatements(session, 'insert into s select')[0]!;
    assert.equal(insert.statement.protocol, 'simple');
    assert.deepEqual([insert.end?.outcome, insert.end?.rows, insert.end?.command], ['ok', 50, 'INSERT 0 50']);
    assert.equal(findStatements(session, 'update s set b = null')[0]?.end?.rows, 10);
  });

  test('parameterized queries: text, NULL and binary (Buffer/bytea) parameters, binary results', async () => {
    const blob = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x27, 0x5c, 0x00, 0x41]);
    const { session } = await same('pg-params', async (c) => {
      const out: unknown[] = [];
      out.push(rowsOf(await c.query('select $1::int + $2::int as sum, $3::text as t, $4::text is null as isnull', [40, 2, "it's \\ 'quoted' ünïcödé", null])));
      out.push(rowsOf(await c.query('select $1::bytea as b, length($1::bytea) as n, md5($1::bytea) as h', [blob])));
      out.push(rowsOf(await c.query('select $1::jsonb as j, $2::int[] as a, $3::timestamptz as ts', [{ k: [1, 'x', null] }, [3, 1, 2], new Date('2020-01-02T03:04:05.678Z')])));
      // Results in binary format (pg supports `binary` per query; @types/pg only knows it per client).
      const binary: pg.QueryConfig & { binary: boolean } = { text: 'select $1::int4 as i, $2::text as t, $3::bytea as b, null::int8 as n', values: [7, 'bin', blob], binary: true };
      out.push(rowsOf(await c.query(binary)));
      await c.query('create temp table blobs (id int, data bytea)');
      await c.query('insert into blobs values ($1, $2), ($3, $4)', [1, blob, 2, Buffer.alloc(100_000, 0xab)]);
      out.push(rowsOf(await c.query('select id, length(data), md5(data) from blobs order by id')));
      return out;
    });
    const bytea = findStatements(session, 'select $1::bytea as b')[0]!;
    assert.equal(bytea.statement.protocol, 'extended');
    assert.deepEqual(bytea.statement.params, [`\\x${blob.toString('hex')}`], 'a binary parameter is recorded as \\x + hex');
    assert.deepEqual(findStatements(session, 'select $1::int + $2::int')[0]!.statement.params, ['40', '2', "it's \\ 'quoted' ünïcödé", null]);
    const ins = findStatements(session, 'insert into blobs')[0]!;
    assert.equal(ins.statement.params?.[0], '1');
    // Past the audited limit a parameter keeps a prefix, its full length and a hash of the whole.
    const hex = `\\x${'ab'.repeat(100_000)}`;
    assert.ok(hex.startsWith(ins.statement.params?.[3] ?? '-'));
    assert.deepEqual(ins.statement.truncated?.params, [{ index: 3, chars: hex.length, sha256: createHash('sha256').update(hex).digest('hex') }]);
    assert.deepEqual([ins.end?.outcome, ins.end?.rows], ['ok', 2]);
    assert.deepEqual(findStatements(session, 'select $1::int4 as i')[0]!.statement.params, ['7', 'bin', `\\x${blob.toString('hex')}`]);
  });

  test('named prepared statements reused, and queries queued without awaiting', async () => {
    const { session } = await same('pg-prepared', async (c) => {
      const out: unknown[] = [];
      for (let i = 0; i < 5; i++) {
        out.push(rowsOf(await c.query({ name: 'square', text: 'select $1::int * $1::int as sq, $2::text as tag', values: [i, `t${i}`] })));
      }
      // Fired together: the driver queues them and sends each when the previous one is answered.
      const batch = await Promise.allSettled([
        c.query('select 1 as a'),
        c.query({ name: 'square', text: 'select $1::int * $1::int as sq, $2::text as tag', values: [12, 'q'] }),
        c.query('select * from missing_table'),
        c.query('select $1::text as echo', ['after error']),
        c.query({ text: 'select generate_series(1, $1::int) as g', values: [1000] }),
      ]);
      out.push(batch.map((b) => (b.status === 'fulfilled' ? rowsOf(b.value) : { error: (b.reason as { code?: string; message: string }).code + ' ' + (b.reason as Error).message })));
      return out;
    });
    const squares = findStatements(session, 'select $1::int * $1::int as sq');
    assert.equal(squares.length, 6, describeStatements(session));
    assert.deepEqual(
      squares.map((r) => r.statement.params),
      [['0', 't0'], ['1', 't1'], ['2', 't2'], ['3', 't3'], ['4', 't4'], ['12', 'q']],
    );
    assert.ok(squares.every((r) => r.end?.outcome === 'ok' && r.end.rows === 1));
    assert.equal(findStatements(session, 'missing_table')[0]?.end?.sqlstate, '42P01');
    assert.equal(findStatements(session, 'select $1::text as echo')[0]?.end?.outcome, 'ok');
    assert.equal(findStatements(session, 'generate_series(1, $1::int)')[0]?.end?.rows, 1000);
  });

  test('a transaction with an error, rolled back; a savepoint recovers', async () => {
    const { session } = await same(
      'pg-tx',
      async (c) => {
        const out: unknown[] = [];
        await c.query('create table if not exists pg_tx (id int primary key, v text)');
        await c.query('begin');
        await c.query('insert into pg_tx values ($1, $2)', [1, 'a']);
        const err = await c.query('insert into pg_tx values ($1, $2)', [1, 'dup']).catch((e: { code: string; message: string; detail?: string }) => [e.code, e.message, e.detail]);
        out.push(err);
        out.push(await c.query('select 1').catch((e: { code: string; message: string }) => [e.code, e.message]));
        await c.query('rollback');
        out.push(rowsOf(await c.query('select count(*) from pg_tx')));
        await c.query('begin');
        await c.query('insert into pg_tx values (2, $1)', ['kept']);
        await c.query('savepoint sp');
        out.push(await c.query('insert into pg_tx values (2, $1)', ['dup']).catch((e: { code: string }) => e.code));
        await c.query('rollback to savepoint sp');
        await c.query('insert into pg_tx values (3, $1)', ['also kept']);
        await c.query('commit');
        out.push(rowsOf(await c.query('select * from pg_tx order by id')));
        return out;
      },
      { reset: 'drop table if exists pg_tx' },
    );
    const inserts = findStatements(session, 'insert into pg_tx values ($1, $2)');
    assert.deepEqual(
      inserts.map((r) => [r.end?.outcome, r.end?.sqlstate]),
      [['ok', undefined], ['error', '23505']],
    );
    assert.equal(findStatements(session, 'select 1')[0]?.end?.sqlstate, '25P02');
    assert.equal(findStatements(session, 'rollback')[0]?.end?.command, 'ROLLBACK');
    assert.equal(findStatements(session, 'commit')[0]?.end?.command, 'COMMIT');
  });

  test('pg-cursor reads 10 000 rows in batches of 100 (portal suspension)', async () => {
    const { result, session } = await same('pg-cursor', async (c) => {
      const cursor = c.query(new Cursor('select g, md5(g::text) as h, g % 7 = 0 as sevens from generate_series(1, $1::int) g', [10_000]));
      const hash = createHash('sha256');
      const sizes: number[] = [];
      for (;;) {
        const rows = await cursor.read(100);
        if (rows.length === 0) break;
        sizes.push(rows.length);
        for (const r of rows) hash.update(JSON.stringify(r));
      }
      await cursor.close();
      return { batches: sizes.length, allFull: sizes.every((n) => n === 100), total: sizes.reduce((a, b) => a + b, 0), sha: hash.digest('hex') };
    });
    assert.deepEqual({ ...result, sha: undefined }, { batches: 100, allFull: true, total: 10_000, sha: undefined });
    const executes = findStatements(session, 'from generate_series(1, $1::int) g');
    // One Execute per read: 100 suspended after 100 rows each, then the one that completes.
    assert.equal(executes.length, 101, describeStatements(session));
    assert.ok(executes.slice(0, 100).every((r) => r.end?.outcome === 'ok' && r.end.command === 'portal suspended' && r.end.rows === 100));
    assert.deepEqual([executes[100]!.end?.outcome, executes[100]!.end?.command], ['ok', 'SELECT 0']);
    assert.ok(executes.every((r) => JSON.stringify(r.statement.params) === '["10000"]'));
  });

  test('pg-query-stream of 50 000 rows consumed slowly (backpressure)', async () => {
    const { result } = await same('pg-stream', async (c) => {
      const stream = c.query(new QueryStream("select g, repeat(chr(65 + g % 26), 200) as pad from generate_series(1, 50000) g", [], { batchSize: 500, highWaterMark: 500 }));
      const hash = createHash('sha256');
      let n = 0;
      let last = 0;
      let ordered = true;
      for await (const row of stream as AsyncIterable<{ g: number; pad: string }>) {
        if (row.g !== last + 1) ordered = false;
        last = row.g;
        hash.update(`${row.g}:${row.pad}\n`);
        // A slow consumer: the stream stops pulling batches while we sleep.
        if (++n % 5000 === 0) await sleep(20);
      }
      return { n, ordered, sha: hash.digest('hex') };
    });
    assert.deepEqual({ n: result.n, ordered: result.ordered }, { n: 50_000, ordered: true });
  });

  test('a large result while the client socket is paused: nothing lost, nothing reordered', async () => {
    const { result } = await same('pg-backpressure', async (c) => {
      const stream = (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
      const q = c.query("select g, repeat(md5(g::text), 32) as pad from generate_series(1, 50000) g /* paused */");
      // Stop reading: Warden must pause its side instead of buffering 50 MB, so the target's backend
      // ends up blocked writing to its client (wait event ClientWrite), as it does with a direct client.
      stream.pause();
      let blocked = false;
      const deadline = Date.now() + 5000;
      while (!blocked && Date.now() < deadline) {
        await sleep(100);
        const ev = await w.pg.psql("select wait_event from pg_stat_activity where query like '%/* paused */' and state = 'active' and pid <> pg_backend_pid()", { database: 'appdb' });
        blocked = ev.trim() === 'ClientWrite';
      }
      stream.resume();
      const r = await q;
      const hash = createHash('sha256');
      for (const row of r.rows as { g: number; pad: string }[]) hash.update(`${row.g}:${row.pad}\n`);
      return { n: r.rowCount, blocked, sha: hash.digest('hex') };
    });
    assert.equal(result.n, 50_000);
    assert.equal(result.blocked, true, 'the target backend waited on ClientWrite while the client did not read');
  });

  test('notifications from another session arrive while the listener is idle', async () => {
    const { result, session } = await same('pg-listen', async (c) => {
      const got: { channel: string; payload: string | undefined }[] = [];
      c.on('notification', (n) => got.push({ channel: n.channel, payload: n.payload }));
      await c.query('listen e2e_events');
      // Sent by another connection (to the target directly) while this one waits without a query.
      await w.pg.psql("select pg_notify('e2e_events', 'one'); select pg_notify('e2e_events', repeat('x', 7000)); notify other_channel, 'ignored'", { database: 'appdb' });
      const deadline = Date.now() + 5000;
      while (got.length < 2 && Date.now() < deadline) await sleep(20);
      return got.map((n) => ({ channel: n.channel, payload: n.payload === 'one' ? 'one' : `${n.payload?.length} chars` }));
    });
    assert.deepEqual(result, [
      { channel: 'e2e_events', payload: 'one' },
      { channel: 'e2e_events', payload: '7000 chars' },
    ]);
    assert.equal(session.statements.length, 1);
  });

  test('large values both ways: a 12 MB bytea parameter and a 12 MB result row', async () => {
    const big = Buffer.alloc(12 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32BE((i * 2654435761) >>> 0, i);
    const { session } = await same('pg-large', async (c) => {
      await c.query('create temp table big (id int, data bytea)');
      const ins = await c.query('insert into big values (1, $1) returning id, length(data), md5(data)', [big]);
      const back = await c.query('select data from big where id = 1');
      const data = (back.rows[0] as { data: Buffer }).data;
      return { ins: rowsOf(ins), equal: data.equals(big), sha: createHash('sha256').update(data).digest('hex') };
    });
    const ins = findStatements(session, 'insert into big values (1, $1)')[0]!;
    const hex = `\\x${big.toString('hex')}`;
    assert.deepEqual(ins.statement.truncated?.params, [{ index: 0, chars: hex.length, sha256: createHash('sha256').update(hex).digest('hex') }], 'the parameter is recorded by length and hash');
    assert.equal(ins.end?.rows, 1);
  });

  test('TLS to Warden with node-postgres (ssl: rejectUnauthorized false)', async () => {
    const { session } = await same('pg-tls', async (c) => rowsOf(await c.query('select $1::text || current_user as who, current_database()', ['user: '])), { ssl: true });
    const startEv = session.events.find((e) => e.type === 'session.start');
    assert.equal(startEv?.type === 'session.start' && startEv.tls, true);
  });

  test('CancelRequest with the driver\'s process id and secret key cancels pg_sleep(30): 57014', async () => {
    async function cancelOnce(e: Endpoint, bystander: Endpoint): Promise<unknown> {
      const c = await connect(e);
      // Another session sleeping at the same time must not be touched by this session's cancel.
      const other = await connect(bystander);
      try {
        const key = c as unknown as { processID: number; secretKey: number };
        assert.equal(typeof key.processID, 'number');
        // A wrong key is ignored, like PostgreSQL does.
        const wrongKey = c.query('select pg_sleep(0.6) as slept');
        await sleep(150);
        await sendCancelRequest(e.port, key.processID, (key.secretKey ^ 0x5a5a5a5a) | 0);
        const slept = rowsOf(await wrongKey);
        const started = Date.now();
        const otherSleep = other.query('select pg_sleep(1.2) as other');
        const q = c.query('select pg_sleep(30)').then(
          () => assert.fail('pg_sleep(30) was not cancelled'),
          (x: unknown) => x as { code: string; message: string },
        );
        await sleep(300);
        await sendCancelRequest(e.port, key.processID, key.secretKey);
        const err = await q;
        const ms = Date.now() - started;
        assert.ok(ms < 10_000, `cancelled after ${ms} ms`);
        // The session is still usable.
        const after = rowsOf(await c.query('select 42 as answer'));
        return { slept, code: err.code, message: err.message, after, other: rowsOf(await otherSleep) };
      } finally {
        await c.end();
        await other.end();
      }
    }
    const direct = await cancelOnce(directEndpoint(w), directEndpoint(w));
    const warden = await cancelOnce(await wardenEndpoint(w, 'pg-cancel'), await wardenEndpoint(w, 'pg-cancel-bystander'));
    assert.deepEqual(plain(warden), plain(direct));
    assert.equal((warden as { code: string }).code, '57014');
    const s = await latestSession(w, 'pg-cancel');
    const sleeps = findStatements(s, 'select pg_sleep(');
    assert.deepEqual(
      sleeps.map((r) => [r.statement.text, r.end?.outcome, r.end?.sqlstate]),
      [
        ['select pg_sleep(0.6) as slept', 'ok', undefined],
        ['select pg_sleep(30)', 'cancelled', '57014'],
      ],
    );
    assert.equal(findStatements(s, 'select 42')[0]?.end?.outcome, 'ok');
    const bystander = await latestSession(w, 'pg-cancel-bystander');
    assert.deepEqual(findStatements(bystander, 'pg_sleep(1.2)').map((r) => r.end?.outcome), ['ok']);
  });
});

/** What libpq's PQcancel does: a new connection carrying only a CancelRequest, then close. */
function sendCancelRequest(port: number, processId: number, secretKey: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(processId, 8);
      b.writeInt32BE(secretKey, 12);
      sock.end(b);
    });
    sock.on('error', reject);
    // The server closes without answering once it has handled the request.
    sock.on('close', () => resolve());
    sock.resume();
  });
}
