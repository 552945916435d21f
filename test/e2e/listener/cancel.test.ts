/**
 * Query cancellation through Warden: the client gets Warden's own BackendKeyData (never the target's
 * process id), a CancelRequest with that key reaches the right target backend, and a wrong or unknown
 * key cancels nothing and learns nothing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { cancelRequest, RawClient } from '../../helpers/raw-client.ts';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';

let w: TestWarden;

before(async () => {
  w = await startTestWarden();
});

after(async () => {
  await w?.stop();
});

interface KeyedClient {
  client: pg.Client;
  processID: number;
  secretKey: number;
}

async function connect(sub: string): Promise<KeyedClient> {
  const client = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database: 'appdb', password: await w.token(sub) });
  await client.connect();
  const k = client as unknown as { processID: number; secretKey: number };
  return { client, processID: k.processID, secretKey: k.secretKey };
}

/** Sends one CancelRequest on a fresh connection; resolves with what came back before Warden closed it. */
async function sendCancel(processId: number, secretKey: number): Promise<{ closed: boolean; bytes: number }> {
  const c = await RawClient.connect(w.port);
  c.write(cancelRequest(processId, secretKey));
  const closed = await c.waitClosed(3000);
  const bytes = c.buffered;
  c.destroy();
  return { closed, bytes };
}

/** Resolves once the target shows `sql` running (asked through the superuser's socket, not through Warden). */
async function waitRunning(sql: string): Promise<void> {
  const deadline = Date.now() + 5000;
  const pattern = sql.replace(/'/g, "''");
  while (Date.now() < deadline) {
    const n = await w.pg.psql(`select count(*) from pg_stat_activity where state = 'active' and query = '${pattern}'`);
    if (n.trim() === '1') return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`${sql} never started on the target`);
}

describe('BackendKeyData', () => {
  test("the client's process id is Warden's, not the target backend's; keys differ per session", async () => {
    const a = await connect('key-a');
    const b = await connect('key-b');
    const pidA = (await a.client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    const pidB = (await b.client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    assert.notEqual(a.processID, pidA);
    assert.notEqual(b.processID, pidB);
    assert.notEqual(a.processID, b.processID);
    assert.notEqual(a.secretKey, b.secretKey);
    assert.ok(a.processID > 0 && b.processID > 0);
    await Promise.all([a.client.end(), b.client.end()]);

    // Same through the raw client: the key in BackendKeyData.
    const raw = await RawClient.connect(w.port);
    const r = await raw.login({ user: 'key-raw', database: 'appdb', password: await w.token('key-raw') });
    assert.ok(r.ok && r.backendKey);
    const pid = (await raw.query('select pg_backend_pid()')).rows[0]![0];
    assert.notEqual(String(r.backendKey.processId), pid);
    raw.destroy();
  });
});

describe('CancelRequest', () => {
  test('the right key cancels the running statement (57014); the session goes on', async () => {
    const s = await connect('cancel-ok');
    const sql = 'select pg_sleep(30) /* cancel-ok */';
    const t0 = Date.now();
    const running = s.client.query(sql).then(
      () => assert.fail('the statement was not cancelled'),
      (err: pg.DatabaseError) => err,
    );
    await waitRunning(sql);
    const answer = await sendCancel(s.processID, s.secretKey);
    assert.deepEqual(answer, { closed: true, bytes: 0 }, 'Warden answers a CancelRequest with nothing but close');
    const err = await running;
    assert.equal(err.code, '57014');
    assert.match(err.message, /canceling statement due to user request/);
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual((await s.client.query('select 1 as one')).rows, [{ one: 1 }]);
    await s.client.end();

    // The audit trail records the statement as cancelled.
    const deadline = Date.now() + 5000;
    for (;;) {
      const mine = (await listSessions(w.loaded.auditDir)).find((x) => x.startupUser === 'cancel-ok' && x.endTime);
      if (mine) {
        const events = (await readSessionEvents(w.loaded.auditDir, mine.sessionId)).events as unknown as Record<string, unknown>[];
        const end = events.find((e) => e.type === 'statement.end' && e.statementId === 1);
        assert.equal(end?.outcome, 'cancelled');
        assert.equal(end?.sqlstate, '57014');
        break;
      }
      if (Date.now() > deadline) assert.fail('session of cancel-ok not sealed');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  test('a wrong secret cancels nothing; an unknown process id just closes; only the addressed session is cancelled', async () => {
    const victim = await connect('cancel-victim');
    const other = await connect('cancel-other');
    const sqlVictim = 'select pg_sleep(1.5) /* victim */';
    const sqlOther = 'select pg_sleep(30) /* other */';
    const t0 = Date.now();
    const victimRun = victim.client.query(sqlVictim);
    const otherRun = other.client.query(sqlOther).then(
      () => assert.fail('not cancelled'),
      (err: pg.DatabaseError) => err,
    );
    await Promise.all([waitRunning(sqlVictim), waitRunning(sqlOther)]);

    // Wrong secret for the victim, and the victim's secret with a neighbouring process id.
    assert.deepEqual(await sendCancel(victim.processID, (victim.secretKey + 1) | 0), { closed: true, bytes: 0 });
    assert.deepEqual(await sendCancel(victim.processID ^ 1, victim.secretKey), { closed: true, bytes: 0 });
    // An unknown process id (0 is never handed out).
    assert.deepEqual(await sendCancel(0, 0), { closed: true, bytes: 0 });

    // The right key of the other session cancels that one only.
    assert.deepEqual(await sendCancel(other.processID, other.secretKey), { closed: true, bytes: 0 });
    assert.equal((await otherRun).code, '57014');

    const r = await victimRun;
    assert.equal(r.rows.length, 1, 'the victim statement completed normally');
    assert.ok(Date.now() - t0 >= 1400, 'and ran its full time');
    await Promise.all([victim.client.end(), other.client.end()]);
  });

  test("a closed session's key no longer cancels anything", async () => {
    const gone = await connect('cancel-gone');
    await gone.client.end();
    const live = await connect('cancel-live');
    const sql = 'select pg_sleep(0.8) /* live */';
    const run = live.client.query(sql);
    await waitRunning(sql);
    assert.deepEqual(await sendCancel(gone.processID, gone.secretKey), { closed: true, bytes: 0 });
    assert.equal((await run).rows.length, 1);
    await live.client.end();
  });

  test('psql Ctrl-C (SIGINT) cancels through Warden', async () => {
    const token = await w.token('cancel-psql');
    const sql = 'select pg_sleep(30) /* psql */';
    const child = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=1', `host=127.0.0.1 port=${w.port} user=cancel-psql dbname=appdb sslmode=prefer`, '-c', sql], {
      env: { ...process.env, PGPASSWORD: token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitRunning(sql);
      child.kill('SIGINT');
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 8000)))]);
      clearTimeout(timer);
      assert.notEqual(code, 'timeout', 'psql did not return after Ctrl-C');
      assert.match(stderr, /canceling statement due to user request/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
