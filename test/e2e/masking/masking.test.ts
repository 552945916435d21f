/**
 * Masking end to end, through real clients against a real server: column rules traced through
 * RowDescription (aliases, `SELECT *`, joins, subqueries), detectors on values no rule covers, the
 * extended protocol with and without the client's own Describe, errors that quote a value, the audit
 * evidence, an unmasked group, and COPY TO STDOUT refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { LocalForensicVault } from '../../../adapters/local/forensic-vault.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { CLEAN_PG_ENV, describeRun, latestSession, psqlPath, run } from '../../helpers/clients.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { decodeDataRow, describeMsg, RawClient } from '../../helpers/raw-client.ts';
import { maskedTarget } from '../../helpers/masking.ts';
import { startTestWarden, TARGET_PASSWORD, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

const SSN = '123-45-6789';
const EMAIL = 'alice@example.com';
const CARD = '4111 1111 1111 1111';

describe('masking through real clients', { skip, timeout: 90_000 }, () => {
  let server: PostgresServer;
  let w: TestWarden;

  before(async () => {
    server = await startTestPostgres({ authMethod: 'scram-sha-256' });
    await server.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await server.createDatabase('appdb', TARGET_USER);
    w = await startTestWarden({
      pg: server,
      // Detectors over expressions are what this file shows; strict masking (the default) is in adversarial.test.ts.
      config: { targets: [maskedTarget(server.port, { unmaskedGroups: ['pii-readers'], strict: false })] },
    });
    await server.psql(
      `CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text, card text, salary int, note text);
       INSERT INTO people VALUES
         (1, 'Alice', '${EMAIL}', '${SSN}', '${CARD}', 100000, 'call me at ${EMAIL} or pay with ${CARD}'),
         (2, 'Bob', 'bob@example.org', '987-65-4320', '${CARD}', 90000, 'nothing to see');
       CREATE TABLE orders (id int, person int, total numeric);
       INSERT INTO orders VALUES (10, 1, 12.5), (11, 2, 7);`,
      { database: 'appdb', user: TARGET_USER },
    );
  });
  after(async () => {
    await w?.stop();
    await server?.stop();
  });

  async function psqlRows(sub: string, groups: string[], sql: string): Promise<string[]> {
    const r = await run(PSQL!, [`host=127.0.0.1 port=${w.port} user=${sub} dbname=appdb sslmode=require`, '-X', '-At', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token(sub, { groups }) },
    });
    assert.equal(r.code, 0, describeRun(r));
    return r.stdout.trim().split('\n');
  }

  async function client(sub: string, groups: string[] = ['readers']): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: sub, database: 'appdb', password: await w.token(sub, { groups }), ssl: { rejectUnauthorized: false } });
    await c.connect();
    return c;
  }

  test('column rules apply through SELECT *, aliases, joins and subqueries; detectors catch what no rule covers', async () => {
    const star = await psqlRows('m-star', ['readers'], 'SELECT * FROM people ORDER BY id');
    assert.equal(star.length, 2);
    const [id, name, email, ssn, card, salary, note] = star[0]!.split('|');
    assert.equal(id, '1');
    assert.equal(name, 'Alice');
    assert.equal(email, '[REDACTED]');
    assert.ok(ssn!.endsWith('6789') && !ssn!.includes('123') && !ssn!.includes('45'), ssn);
    assert.match(card!, /^tok_/);
    assert.equal(card, star[1]!.split('|')[4], 'the keyed hash gives equal values equal pseudonyms');
    assert.equal(salary, '', 'the null strategy sends NULL');
    assert.ok(!note!.includes(EMAIL) && !note!.includes(CARD) && note!.includes('[EMAIL]') && note!.includes('[CARD]'), note);

    const aliased = await psqlRows('m-alias', ['readers'], 'SELECT p.ssn AS x, q.e AS y FROM (SELECT * FROM people) p JOIN (SELECT id, email AS e FROM people) q USING (id) JOIN orders o ON o.person = p.id ORDER BY p.id');
    for (const line of aliased) {
      assert.ok(!line.includes(SSN) && !line.includes(EMAIL) && !line.includes('987-65-4320') && !line.includes('bob@example.org'), line);
    }
    const expression = await psqlRows('m-expr', ['readers'], "SELECT 'ssn ' || ssn || ' mail ' || email FROM people ORDER BY id");
    assert.ok(!expression[0]!.includes(SSN) && !expression[0]!.includes(EMAIL), expression[0]);
  });

  test('extended protocol: node-postgres parameterized and named statements are masked', async () => {
    const c = await client('m-ext');
    try {
      const r = await c.query('SELECT email, ssn, note FROM people WHERE id = $1', [1]);
      assert.equal(r.rows[0].email, '[REDACTED]');
      assert.ok(!String(r.rows[0].ssn).includes('123'));
      for (let i = 0; i < 2; i++) {
        const n = await c.query({ name: 'by-id', text: 'SELECT ssn AS s FROM people WHERE id = $1', values: [1] });
        assert.ok(!String(n.rows[0].s).startsWith('123'), JSON.stringify(n.rows));
      }
    } finally {
      await c.end();
    }
  });

  test('an Execute without a Describe is still masked, and the client sees only the answers it asked for', async () => {
    const c = await RawClient.connect(w.port);
    try {
      const login = await c.login({ user: 'm-raw', database: 'appdb', password: await w.token('m-raw'), ssl: true });
      assert.equal(login.ok, true, JSON.stringify(login.error));
      c.write(Buffer.concat([serialize.parse({ text: 'SELECT email, ssn FROM people ORDER BY id' }), serialize.bind({}), serialize.execute({}), serialize.sync()]));
      const answer = await c.until((m) => m.type === 'Z');
      assert.deepEqual(answer.map((m) => describeMsg(m)), ['1', '2', 'D', 'D', 'C SELECT 2', 'Z I']);
      const cells = decodeDataRow(answer[2]!.body);
      assert.equal(cells[0], '[REDACTED]');
      assert.ok(!String(cells[1]).includes('123'), String(cells[1]));
    } finally {
      c.destroy();
    }
  });

  test('an error that quotes a value has it masked', async () => {
    const c = await client('m-err');
    try {
      const err = await c.query(`SELECT '${EMAIL}'::int`).then(
        () => assert.fail('expected an error'),
        (e: unknown) => e as Error,
      );
      assert.ok(!err.message.includes(EMAIL), err.message);
      assert.match(err.message, /\[EMAIL\]/);
    } finally {
      await c.end();
    }
  });

  test('the audit trail records what was masked, never the values', async () => {
    await psqlRows('m-audit', ['readers'], 'SELECT email, ssn, note FROM people ORDER BY id');
    const s = await latestSession(w, 'm-audit');
    const ends = s.events.filter((e) => e.type === 'statement.end');
    const masked = ends.find((e) => (e as { masking?: unknown }).masking) as unknown as { masking: { columns: { column: string; strategy: string; cells: number }[]; detectors: { detector: string; values: number }[] } } | undefined;
    assert.ok(masked, JSON.stringify(ends));
    assert.deepEqual(
      masked.masking.columns.map((c) => [c.column, c.strategy, c.cells]).sort(),
      [
        ['public.people.email', 'redact', 2],
        ['public.people.ssn', 'partial', 2],
      ],
    );
    assert.ok(masked.masking.detectors.some((d) => d.detector === 'email' && d.values >= 1));
    // What came back, as the agent saw it: the sample holds masked values only.
    const sample = (masked.masking as unknown as { sample?: (string | null)[][] }).sample;
    assert.equal(sample?.length, 2, JSON.stringify(masked.masking));
    assert.equal(sample?.[0]?.[0], '[REDACTED]');
    const trail = JSON.stringify(s.events);
    assert.ok(!trail.includes(SSN) && !trail.includes(EMAIL) && !trail.includes('4111'), 'no original value in the trail');

    // The originals are in the forensic vault, sealed, and the statement's end names the record.
    const end = masked as unknown as { statementId: number; vault?: { id: string; cells: number; sha256: string } };
    assert.ok(end.vault && end.vault.cells >= 5, JSON.stringify(end));
    const vault = await LocalForensicVault.open({ stateDir: w.loaded.stateDir });
    const record = await vault.read(s.summary.sessionId, end.statementId);
    const originals = record.cells.map((c) => c.original);
    assert.ok(originals.includes(SSN) && originals.includes(EMAIL), JSON.stringify({ originals, end, cells: record.cells.length, meta: record.meta }));
    assert.equal(record.ref.sha256, end.vault.sha256);
  });

  test('an agent in an unmasked group sees the values, and that is recorded', async () => {
    const rows = await psqlRows('m-unmasked', ['readers', 'pii-readers'], 'SELECT email, ssn FROM people WHERE id = 1');
    assert.deepEqual(rows, [`${EMAIL}|${SSN}`]);
    const s = await latestSession(w, 'm-unmasked');
    assert.ok(s.events.some((e) => e.type === 'statement.end' && (e as { masking?: { unmasked?: boolean } }).masking?.unmasked === true));
  });

  test('COPY ... TO STDOUT of a table is masked row by row, in text and CSV; binary COPY and COPY (query) over it are refused', async () => {
    const text = await psqlRows('m-copy', ['readers'], 'COPY people TO STDOUT');
    assert.equal(text.length, 2);
    const first = text[0]!.split('\t');
    assert.equal(first.length, 7);
    assert.equal(first[2], '[REDACTED]');
    assert.ok(first[3]!.endsWith('6789') && !first[3]!.includes('123'), first[3]);
    assert.match(first[4]!, /^tok_/);
    assert.equal(first[5], '\\N', 'the null strategy writes NULL');
    const csv = await psqlRows('m-copy-csv', ['readers'], "COPY people (id, note, email) TO STDOUT WITH (FORMAT csv, HEADER)");
    assert.equal(csv[0], 'id,note,email');
    for (const line of csv.slice(1)) assert.ok(!line.includes(EMAIL) && !line.includes(CARD) && !line.includes('bob@example.org'), line);
    assert.match(csv[1]!, /\[REDACTED\]/);

    const c = await client('m-copy-refused');
    try {
      for (const sql of ['COPY people TO STDOUT (FORMAT binary)', 'COPY (SELECT ssn FROM people) TO STDOUT']) {
        const err = await c.query(sql).then(
          () => assert.fail(`expected a refusal: ${sql}`),
          (e: unknown) => e as Error & { code?: string },
        );
        assert.equal(err.code, '42501', sql);
      }
    } finally {
      await c.end();
    }
  });
});
