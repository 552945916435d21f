import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { seedDemoDatabase } from '../../../proxy-task/src/embedded/demo-database.ts';
import {
  PostgresServerBinariesNotFoundError,
  PostgresServerCommandError,
  PostgresServerStartError,
  findPostgresBinDir,
} from '../../../proxy-task/src/embedded/postgres-server.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { loadOrCreateSelfSignedCertificate } from '../../../proxy-task/src/embedded/tls-certificate.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';

const servers: PostgresServer[] = [];
// Set by the persistent-dataDir test; the exit-hook test reuses the stopped cluster to skip an initdb.
let stoppedClusterDir: string | undefined;
const tempDirs: string[] = [];

async function start(opts: Parameters<typeof startTestPostgres>[0] = {}): Promise<PostgresServer> {
  const s = await startTestPostgres(opts);
  servers.push(s);
  return s;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'warden-test-'));
  tempDirs.push(d);
  return d;
}

after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function query<T = Record<string, unknown>>(config: pg.ClientConfig, sql: string): Promise<T[]> {
  const client = new pg.Client(config);
  await client.connect();
  try {
    return (await client.query(sql)).rows as T[];
  } finally {
    await client.end();
  }
}

function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = digits.length - 1, double = false; i >= 0; i--, double = !double) {
    let d = digits.charCodeAt(i) - 48;
    if (double) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

// A zombie counts as dead: in some containers PID 1 is slow to reap the daemonized postmaster.
function isPostmasterAlive(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    if (existsSync('/proc/self/stat')) return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('PostgresServer', () => {
  test('trust: starts a cluster reachable over TCP and through psql', async () => {
    const s = await start();
    assert.equal(s.host, '127.0.0.1');
    assert.match(s.version, /^\d+\.\d+/);
    const rows = await query<{ n: number; v: string }>(
      { connectionString: s.connectionString() },
      `SELECT 1 + 1 AS n, current_setting('server_version') AS v`,
    );
    assert.equal(rows[0]?.n, 2);
    assert.equal(rows[0]?.v.split(' ')[0], s.version);
    assert.equal((await s.psql(`SELECT 'a', 2`)).trim(), 'a|2');
  });

  test('psql surfaces SQL errors with the server message', async () => {
    const s = servers[0] ?? (await start());
    await assert.rejects(s.psql('SELECT * FROM no_such_table'), (e: unknown) => {
      assert.ok(e instanceof PostgresServerCommandError);
      assert.match(e.message, /relation "no_such_table" does not exist/);
      return true;
    });
  });

  for (const method of ['scram-sha-256', 'md5'] as const) {
    test(`${method}: the right password connects, a wrong one fails with 28P01`, async () => {
      const s = await start({ authMethod: method });
      await s.createRole('agent', 'correct horse', { login: true });
      await s.createDatabase('app', 'agent');
      const stored = (await s.psql(`SELECT rolpassword FROM pg_authid WHERE rolname = 'agent'`)).trim();
      assert.ok(stored.startsWith(method === 'md5' ? 'md5' : 'SCRAM-SHA-256$'), stored);
      assert.equal((await s.psql('SHOW password_encryption')).trim(), method);

      const rows = await query<{ u: string }>(
        { connectionString: s.connectionString('agent', 'app', 'correct horse') },
        'SELECT current_user AS u',
      );
      assert.equal(rows[0]?.u, 'agent');

      await assert.rejects(
        query({ connectionString: s.connectionString('agent', 'app', 'wrong') }, 'SELECT 1'),
        (e: { code?: string }) => e.code === '28P01',
      );
      // createRole again updates the password rather than failing
      await s.createRole('agent', 'new secret', { login: true });
      await query({ connectionString: s.connectionString('agent', 'app', 'new secret') }, 'SELECT 1');
    });
  }

  test('ssl: a self-signed certificate serves TLS connections', async () => {
    const dir = await tempDir();
    const cert = await loadOrCreateSelfSignedCertificate(dir, {
      commonName: 'localhost',
      altNames: ['localhost', '127.0.0.1'],
    });
    const s = await start({ ssl: { certFile: cert.certFile, keyFile: cert.keyFile } });
    const sql = 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';
    const base = { host: s.host, port: s.port, user: s.superuser, database: 'postgres' };
    const insecure = await query<{ ssl: boolean }>({ ...base, ssl: { rejectUnauthorized: false } }, sql);
    assert.equal(insecure[0]?.ssl, true);
    // Pinning the cert verifies too: its SAN covers 127.0.0.1.
    const pinned = await query<{ ssl: boolean }>({ ...base, ssl: { ca: cert.cert } }, sql);
    assert.equal(pinned[0]?.ssl, true);
  });

  test('seedDemoDatabase is idempotent and seeds Luhn-valid cards and Luhn-failing order numbers', async () => {
    const s = servers[0] ?? (await start());
    const opts = { database: 'demo', ownerRole: 'demo_owner', ownerPassword: 'demo-pw' } as const;
    await seedDemoDatabase(s, opts);
    await seedDemoDatabase(s, opts);

    const conn = { connectionString: s.connectionString('demo_owner', 'demo', 'demo-pw') };
    const counts = await query<{ t: string; n: number }>(
      conn,
      `SELECT 'customers' AS t, count(*)::int AS n FROM customers UNION ALL
       SELECT 'payment_cards', count(*)::int FROM payment_cards UNION ALL
       SELECT 'orders', count(*)::int FROM orders UNION ALL
       SELECT 'support_tickets', count(*)::int FROM support_tickets UNION ALL
       SELECT 'api_keys', count(*)::int FROM api_keys`,
    );
    for (const { t, n } of counts) assert.ok(n > 0, `${t} is empty`);
    assert.equal(counts.find((c) => c.t === 'customers')?.n, 50, 'a second seed must not duplicate rows');

    const owners = await query<{ tableowner: string }>(conn, `SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`);
    assert.deepEqual(owners.map((o) => o.tableowner), ['demo_owner']);

    const cards = await query<{ card_number: string }>(conn, 'SELECT card_number FROM payment_cards');
    assert.ok(cards.some((c) => luhnValid(c.card_number.replace(/\D/g, ''))));
    assert.ok(cards.every((c) => luhnValid(c.card_number.replace(/\D/g, ''))));

    const orders = await query<{ order_number: string }>(conn, 'SELECT order_number FROM orders');
    assert.ok(orders.every((o) => /^\d{16}$/.test(o.order_number) && !luhnValid(o.order_number)));

    const keys = await query<{ access_key_id: string }>(conn, 'SELECT access_key_id FROM api_keys');
    assert.ok(keys.every((k) => /^AKIA[A-Z2-7]{16}$/.test(k.access_key_id)), JSON.stringify(keys));

    const tickets = await query<{ n: number }>(
      conn,
      `SELECT count(*)::int AS n FROM support_tickets WHERE body ~ '[a-z0-9.]+@example\\.(com|org|net)' OR body ~ '555-01\\d\\d'`,
    );
    assert.ok((tickets[0]?.n ?? 0) > 0);
  });

  test('a persistent dataDir is reused across restarts', async () => {
    const parent = await tempDir();
    await chmod(parent, 0o755); // mkdtemp makes it 0700; as root, the postgres OS user must traverse it
    const dataDir = path.join(parent, 'cluster');
    const first = await start({ dataDir });
    await first.psql('CREATE TABLE kept (v text); INSERT INTO kept VALUES ($$still here$$)');
    await first.stop();
    const second = await start({ dataDir });
    assert.equal((await second.psql('SELECT v FROM kept')).trim(), 'still here');
    await second.stop();
    assert.ok(existsSync(path.join(dataDir, 'PG_VERSION')), 'stop must keep a persistent data dir');
    stoppedClusterDir = dataDir;
  });

  test('an explicit port that is taken fails with a clear error', async () => {
    const s = servers[0] ?? (await start());
    await assert.rejects(start({ port: s.port }), (e: unknown) => {
      assert.ok(e instanceof PostgresServerStartError);
      assert.match(e.message, new RegExp(`port ${s.port} is already in use`));
      return true;
    });
  });

  test('stop removes the temp dir and the server', async () => {
    const s = await start();
    const pid = Number(readFileSync(path.join(s.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    assert.ok(isPostmasterAlive(pid));
    await s.stop();
    await s.stop(); // idempotent
    assert.equal(isPostmasterAlive(pid), false);
    assert.equal(existsSync(s.socketDir), false);
  });

  test('a process that exits without stop() does not leak its server', async () => {
    const moduleUrl = new URL('../../../proxy-task/src/embedded/postgres-server.ts', import.meta.url).href;
    const script = `
      import { readFileSync } from 'node:fs';
      import { PostgresServer } from ${JSON.stringify(moduleUrl)};
      const dataDir = process.env.WARDEN_TEST_DATA_DIR || undefined;
      const s = await PostgresServer.start({ dataDir, settings: { fsync: 'off' } });
      const pid = readFileSync(s.dataDir + '/postmaster.pid', 'utf8').split('\\n')[0];
      console.log(JSON.stringify({ pid: Number(pid), socketDir: s.socketDir }));
      process.exit(0);
    `;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        {
          cwd: fileURLToPath(new URL('../../..', import.meta.url)),
          env: { ...process.env, WARDEN_TEST_DATA_DIR: stoppedClusterDir ?? '' },
          timeout: 30_000,
        },
        (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)),
      );
    });
    const { pid, socketDir } = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { pid: number; socketDir: string };
    assert.ok(pid > 0);
    assert.equal(isPostmasterAlive(pid), false, `postmaster ${pid} outlived its parent`);
    assert.equal(existsSync(socketDir), false);
  });

  test('missing binaries give an actionable error', () => {
    assert.throws(
      () => findPostgresBinDir('/nonexistent/pg/bin'),
      (e: unknown) =>
        e instanceof PostgresServerBinariesNotFoundError && /apt-get install postgresql.*PG_BIN_DIR/.test(e.message),
    );
  });
});
