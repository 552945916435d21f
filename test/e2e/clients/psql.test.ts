/**
 * psql through Warden gives exactly what it gives against the target directly: multi-statement
 * queries, scripts with transactions, \copy both ways, notices, LISTEN/NOTIFY, errors and exit codes,
 * each sslmode, a Ctrl-C cancel, and large objects over the FunctionCall protocol. The audit trail
 * records every statement with its outcome.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  describeRun,
  describeStatements,
  directEndpoint,
  findStatements,
  latestSession,
  libpq,
  psqlPath,
  run,
  sessionsOf,
  start,
  unendedStatements,
  wardenEndpoint,
  type Endpoint,
  type RunResult,
  type SessionRecord,
} from '../../helpers/clients.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

describe('psql through Warden', { skip, timeout: 120_000 }, () => {
  let w: TestWarden;
  let dir: string;

  before(async () => {
    w = await startTestWarden();
    dir = mkdtempSync(join(tmpdir(), 'warden-psql-'));
  });
  after(async () => {
    await w?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  interface PsqlRun {
    args: string[];
    input?: string;
    /** libpq conninfo additions, e.g. sslmode=require. */
    extra?: string;
    /** SQL run on the target (as the superuser) before each side, to start from the same state. */
    reset?: string;
  }

  async function psql(e: Endpoint, r: PsqlRun): Promise<RunResult> {
    if (r.reset) await w.pg.psql(r.reset, { database: 'appdb' });
    const c = libpq(e, r.extra ?? 'sslmode=prefer');
    return run(PSQL!, ['-X', '-v', 'ON_ERROR_STOP=1', '-d', c.conninfo, ...r.args], { env: c.env, ...(r.input !== undefined ? { input: r.input } : {}), cwd: dir, timeoutMs: 30_000 });
  }

  /** What must differ between two connections: server process ids, large-object OIDs. */
  function normalize(r: RunResult): { code: number | null; stdout: string; stderr: string } {
    const n = (s: string): string =>
      s
        .replace(/server process with PID \d+/g, 'server process with PID <pid>')
        .replace(/^lo_(import|unlink) \d+$/gm, 'lo_$1 <oid>')
        .replace(/^\d+\|app_owner\|test blob$/gm, '<oid>|app_owner|test blob');
    return { code: r.code, stdout: n(r.stdout), stderr: n(r.stderr) };
  }

  /** Runs the same psql invocation directly and through Warden as `sub`; asserts identical output. */
  async function same(sub: string, r: PsqlRun): Promise<{ direct: RunResult; warden: RunResult; session: SessionRecord }> {
    const direct = await psql(directEndpoint(w), r);
    const warden = await psql(await wardenEndpoint(w, sub), r);
    assert.deepEqual(normalize(warden), normalize(direct), `through Warden:\n${describeRun(warden)}\n\ndirect:\n${describeRun(direct)}`);
    const session = await latestSession(w, sub);
    assert.deepEqual(unendedStatements(session), [], `every statement has its statement.end:\n${describeStatements(session)}`);
    return { direct, warden, session };
  }

  function expectRecorded(s: SessionRecord, text: string | RegExp, end: { outcome: string; rows?: number; command?: string; sqlstate?: string }): void {
    const found = findStatements(s, text);
    assert.ok(found.length > 0, `statement ${String(text)} recorded:\n${describeStatements(s)}`);
    const r = found[0]!;
    assert.equal(r.end?.outcome, end.outcome, `outcome of ${String(text)}:\n${describeStatements(s)}`);
    if (end.rows !== undefined) assert.equal(r.end?.rows, end.rows, `rows of ${String(text)}`);
    if (end.command !== undefined) assert.equal(r.end?.command, end.command, `command of ${String(text)}`);
    if (end.sqlstate !== undefined) assert.equal(r.end?.sqlstate, end.sqlstate, `sqlstate of ${String(text)}`);
  }

  test('several statements in one -c (one simple Query), unaligned and aligned output', async () => {
    const sql =
      "create temp table mc(id int primary key, name text); insert into mc values (1, 'one'), (2, 'two'), (3, null); " +
      "select id, name, id * 1.5 as x from mc order by id; select generate_series(1, 4) as g; update mc set name = 'zwei' where id = 2";
    const { warden, session } = await same('psql-multi', { args: ['-At', '-c', sql] });
    assert.equal(warden.code, 0);
    assert.match(warden.stdout, /^1\|one\|1\.5$/m);
    assert.match(warden.stdout, /^UPDATE 1$/m);
    // The classifier splits the Query: one statement event each, all closed by the server's answers.
    assert.equal(session.statements.length, 5, describeStatements(session));
    assert.ok(session.statements.every((r) => r.statement.protocol === 'simple'));
    expectRecorded(session, 'insert into mc', { outcome: 'ok', rows: 3, command: 'INSERT 0 3' });
    expectRecorded(session, 'select id, name', { outcome: 'ok', rows: 3, command: 'SELECT 3' });
    expectRecorded(session, 'generate_series', { outcome: 'ok', rows: 4 });
    expectRecorded(session, "update mc set name = 'zwei'", { outcome: 'ok', rows: 1, command: 'UPDATE 1' });

    // Aligned output with headers, footers and a NULL display.
    const aligned = await same('psql-aligned', {
      args: ['-P', 'null=<null>', '-c', "select n, n::text || 'x' as t, case when n = 2 then null end as maybe, now() - now() as zero from generate_series(1, 3) n"],
    });
    assert.match(aligned.warden.stdout, /\(3 rows\)/);
    assert.match(aligned.warden.stdout, /<null>/);
  });

  test('a script via -f: DDL, INSERT, SELECT, a transaction with a savepoint, variables', async () => {
    const script = join(dir, 'script.sql');
    writeFileSync(
      script,
      [
        'create table accounts (id int primary key, owner text not null, balance numeric(12,2) not null);',
        "insert into accounts values (1, 'ann', 100.00), (2, 'bob', 50.50), (3, 'cy', 0);",
        '\\set amount 25.25',
        'begin;',
        'update accounts set balance = balance - :amount where id = 1;',
        'update accounts set balance = balance + :amount where id = 2;',
        'savepoint s1;',
        'delete from accounts;',
        'rollback to savepoint s1;',
        'commit;',
        '\\echo after commit',
        'select * from accounts order by id;',
        'select owner, balance from accounts where balance > :amount order by owner limit 1 \\gset first_',
        '\\echo :first_owner :first_balance',
        'create index on accounts (owner);',
        'alter table accounts add column note text default $$n/a$$;',
        "select id, note, pg_typeof(balance) from accounts order by id;",
        // \gdesc: Parse and Describe without Execute (extended protocol).
        "select id, owner, balance * 2 as twice from accounts \\gdesc",
        'drop table accounts;',
      ].join('\n') + '\n',
    );
    const { warden, session } = await same('psql-script', { args: ['-f', script], reset: 'drop table if exists accounts' });
    assert.equal(warden.code, 0, describeRun(warden));
    assert.match(warden.stdout, /after commit/);
    assert.match(warden.stdout, /^ twice +\| numeric$/m);
    assert.match(warden.stdout, /ann\s*\|\s*74\.75/);
    assert.match(warden.stdout, /bob\s*\|\s*75\.75/);
    expectRecorded(session, 'insert into accounts', { outcome: 'ok', rows: 3 });
    expectRecorded(session, 'delete from accounts', { outcome: 'ok', rows: 3 });
    expectRecorded(session, 'rollback to savepoint', { outcome: 'ok', command: 'ROLLBACK' });
    expectRecorded(session, /^commit/, { outcome: 'ok', command: 'COMMIT' });
    expectRecorded(session, 'balance - 25.25', { outcome: 'ok', rows: 1 });
    expectRecorded(session, 'drop table accounts', { outcome: 'ok', command: 'DROP TABLE' });
    // Separate statements of a script are separate Query messages, in order.
    const ids = session.statements.map((r) => r.statement.statementId);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    assert.equal(session.summary.statements, session.statements.length);
  });

  test('\\copy from stdin (CSV piped in) and \\copy to stdout, COPY (select ...) with csv', async () => {
    const rows = ['1,alpha,"quoted, comma"', '2,beta,', '3,gamma,"line', 'break"', '4,"",x'];
    for (let i = 5; i <= 500; i++) rows.push(`${i},name${i},${'v'.repeat(i % 17)}`);
    const input = rows.join('\n') + '\n';
    const { warden, session } = await same('psql-copy', {
      args: [
        '-At',
        '-c', 'create table cp (id int primary key, name text, v text)',
        '-c', '\\copy cp from stdin with (format csv)',
        '-c', 'select count(*), sum(id), count(v), count(*) filter (where name = $$$$) from cp',
        '-c', '\\copy (select * from cp where id <= 5 order by id) to stdout with (format csv, header)',
        '-c', '\\copy cp to stdout',
        '-c', "copy (select id, upper(name) from cp where id % 100 = 0 order by id) to stdout with csv delimiter ';'",
      ],
      input,
      reset: 'drop table if exists cp',
    });
    assert.equal(warden.code, 0, describeRun(warden));
    assert.match(warden.stdout, /^COPY 500$/m);
    // Unquoted empty CSV fields are NULL: row 2 and every 17th row.
    assert.match(warden.stdout, /^500\|125250\|470\|1$/m);
    assert.match(warden.stdout, /^id,name,v\n1,alpha,"quoted, comma"\n2,beta,\n3,gamma,"line\nbreak"\n4,"",x\n5,name5,vvvvv$/m);
    assert.match(warden.stdout, /^3\tgamma\tline\\nbreak$/m);
    assert.match(warden.stdout, /^500;NAME500$/m);
    expectRecorded(session, /COPY\s+cp FROM STDIN/i, { outcome: 'ok', rows: 500, command: 'COPY 500' });
    expectRecorded(session, /COPY\s+cp TO STDOUT/i, { outcome: 'ok', rows: 500, command: 'COPY 500' });
    expectRecorded(session, /COPY\s+\(\s*select \* from cp where id <= 5/i, { outcome: 'ok', rows: 5 });
    expectRecorded(session, "copy (select id, upper(name)", { outcome: 'ok', rows: 5 });
  });

  test('NOTICE and WARNING from a DO block and a function reach psql the same way', async () => {
    const { warden, session } = await same('psql-notice', {
      args: [
        '-c', "do $$ begin raise notice 'hello % and %', 42, 'world'; raise warning 'careful'; raise info 'fyi'; end $$",
        '-c', "create function pg_temp.noisy(n int) returns int language plpgsql as $$ begin for i in 1..n loop raise notice 'tick %', i; end loop; return n; end $$",
        '-c', 'select pg_temp.noisy(3)',
        '-c', 'set client_min_messages = warning',
        '-c', 'select pg_temp.noisy(2)',
      ],
    });
    assert.equal(warden.code, 0);
    assert.match(warden.stderr, /NOTICE: {2}hello 42 and world/);
    assert.match(warden.stderr, /WARNING: {2}careful/);
    assert.match(warden.stderr, /INFO: {2}fyi/);
    assert.equal((warden.stderr.match(/tick/g) ?? []).length, 3);
    expectRecorded(session, /^do \$\$/, { outcome: 'ok', command: 'DO' });
    expectRecorded(session, 'select pg_temp.noisy(3)', { outcome: 'ok', rows: 1 });
  });

  test('LISTEN/NOTIFY within one session: psql prints the asynchronous notification', async () => {
    const { warden, session } = await same('psql-notify', {
      args: ['-At', '-c', 'listen jobs', '-c', "notify jobs, 'first'", '-c', "select pg_notify('jobs', 'second')", '-c', 'unlisten jobs', '-c', "notify jobs, 'unheard'", '-c', 'select 1'],
    });
    assert.equal(warden.code, 0);
    assert.match(warden.stdout, /Asynchronous notification "jobs" with payload "first" received from server process with PID \d+\./);
    assert.match(warden.stdout, /Asynchronous notification "jobs" with payload "second" received/);
    assert.doesNotMatch(warden.stdout, /unheard/);
    expectRecorded(session, 'listen jobs', { outcome: 'ok', command: 'LISTEN' });
    expectRecorded(session, "notify jobs, 'first'", { outcome: 'ok', command: 'NOTIFY' });
  });

  test('errors: same message, position, detail and exit code both ways', async () => {
    // -c: exit 1 on the error with ON_ERROR_STOP.
    const bad = await same('psql-error', { args: ['-c', 'select * from no_such_table'] });
    assert.equal(bad.warden.code, 1);
    assert.match(bad.warden.stderr, /ERROR: {2}relation "no_such_table" does not exist\nLINE 1: select \* from no_such_table\n/);
    expectRecorded(bad.session, 'no_such_table', { outcome: 'error', sqlstate: '42P01' });
    assert.match(findStatements(bad.session, 'no_such_table')[0]!.end!.error ?? '', /does not exist/);

    // -f: exit 3 when a script stops at an error; the transaction is rolled back; later lines never run.
    const script = join(dir, 'failing.sql');
    writeFileSync(
      script,
      "create table errs (id int primary key);\nbegin;\ninsert into errs values (1);\ninsert into errs values (1);\ncommit;\nselect 'never';\n",
    );
    const f = await same('psql-error-script', { args: ['-f', script], reset: 'drop table if exists errs' });
    assert.equal(f.warden.code, 3);
    assert.match(f.warden.stderr, /ERROR: {2}duplicate key value violates unique constraint "errs_pkey"\nDETAIL: {2}Key \(id\)=\(1\) already exists\./);
    expectRecorded(f.session, 'insert into errs values (1)', { outcome: 'ok', rows: 1 });
    assert.equal(findStatements(f.session, 'insert into errs values (1)')[1]?.end?.sqlstate, '23505', describeStatements(f.session));
    assert.equal(findStatements(f.session, 'never').length, 0);

    // Without ON_ERROR_STOP psql goes on after an error in the middle of a multi-statement -c.
    const goOn = await same('psql-error-goon', { args: ['-v', 'ON_ERROR_STOP=0', '-At', '-c', 'select 1/0', '-c', "select 'went on'"] });
    assert.equal(goOn.warden.code, 0);
    assert.match(goOn.warden.stderr, /division by zero/);
    assert.match(goOn.warden.stdout, /went on/);
    expectRecorded(goOn.session, 'select 1/0', { outcome: 'error', sqlstate: '22012' });

    // A bad row in \copy data: the server's error ends the COPY; nothing is inserted.
    const copy = await same('psql-error-copy', {
      args: ['-At', '-v', 'ON_ERROR_STOP=0', '-c', '\\copy errs_copy from stdin with csv', '-c', 'select count(*) from errs_copy'],
      input: '1,a\n2,b\nx,c\n4,d\n',
      reset: 'drop table if exists errs_copy; create table errs_copy (id int, v text); alter table errs_copy owner to app_owner',
    });
    assert.match(copy.warden.stderr, /ERROR: {2}invalid input syntax for type integer: "x"\nCONTEXT: {2}COPY errs_copy, line 3, column id: "x"/);
    assert.match(copy.warden.stdout, /^0$/m);
    expectRecorded(copy.session, /^COPY\s+errs_copy FROM STDIN/i, { outcome: 'error', sqlstate: '22P02' });

    // An error in the middle of one Query: the statements after it are never executed.
    const mid = await same('psql-error-middle', { args: ['-At', '-c', "select 'first'; select 1/0; select 'third'"] });
    assert.equal(mid.warden.code, 1);
    assert.deepEqual(
      mid.session.statements.map((r) => [r.statement.text, r.end?.outcome, r.end?.sqlstate ?? r.end?.error]),
      [
        ["select 'first'", 'ok', undefined],
        ['select 1/0', 'error', '22012'],
        ["select 'third'", 'error', 'not executed: an earlier message of the same batch failed'],
      ],
    );

    // statement_timeout: the server cancels, with SQLSTATE 57014 like a CancelRequest.
    const timeout = await same('psql-error-timeout', { args: ['-At', '-c', 'set statement_timeout = 200', '-c', 'select pg_sleep(5)'] });
    assert.match(timeout.warden.stderr, /canceling statement due to statement timeout/);
    expectRecorded(timeout.session, 'select pg_sleep(5)', { outcome: 'cancelled', sqlstate: '57014' });

    // A syntax error.
    const syn = await same('psql-error-syntax', { args: ['-c', 'selec 1'] });
    assert.equal(syn.warden.code, 1);
    assert.match(syn.warden.stderr, /syntax error at or near "selec"/);
  });

  test('startup parameters reach the target: options, application_name, client_encoding LATIN1', async () => {
    const script = join(dir, 'latin1.sql');
    // "café" and "naïve" in LATIN1 bytes: the target must convert them, so it must know the encoding.
    writeFileSync(
      script,
      Buffer.concat([
        Buffer.from("show work_mem;\nshow search_path;\nselect current_setting('application_name'), current_setting('client_encoding');\nselect w, length(w), encode(convert_to(w, 'UTF8'), 'hex') from (values ('caf", 'latin1'),
        Buffer.from([0xe9]),
        Buffer.from("'), ('na", 'latin1'),
        Buffer.from([0xef]),
        Buffer.from("ve')) v(w);\n", 'latin1'),
      ]),
    );
    const r: PsqlRun = { args: ['-At', '-f', script], extra: "sslmode=prefer application_name=e2e-app options='-c work_mem=7MB -c search_path=e2e,public'" };
    const run1 = async (e: Endpoint): Promise<RunResult> => {
      if (r.reset) await w.pg.psql(r.reset, { database: 'appdb' });
      const c = libpq(e, r.extra);
      return run(PSQL!, ['-X', '-v', 'ON_ERROR_STOP=1', '-d', c.conninfo, ...r.args], { env: { ...c.env, PGCLIENTENCODING: 'LATIN1' }, cwd: dir });
    };
    const direct = await run1(directEndpoint(w));
    const warden = await run1(await wardenEndpoint(w, 'psql-startup-params'));
    assert.deepEqual(normalize(warden), normalize(direct), describeRun(warden));
    assert.ok(warden.stdoutBytes.equals(direct.stdoutBytes), 'byte-identical output');
    assert.equal(warden.code, 0, describeRun(warden));
    const lines = warden.stdoutBytes.toString('latin1').split('\n');
    assert.deepEqual(lines.slice(0, 5), ['7MB', 'e2e,public', 'e2e-app|LATIN1', 'caf\u00e9|4|636166c3a9', 'na\u00efve|5|6e61c3af7665']);
  });

  test('the target ends the session (pg_terminate_backend): the same FATAL and exit code', async () => {
    // sslmode=disable on both sides: over TLS libpq words the closed connection differently.
    const { warden, session } = await same('psql-terminated', { args: ['-At', '-c', 'select 1', '-c', 'select pg_terminate_backend(pg_backend_pid())', '-c', 'select 2'], extra: 'sslmode=disable' });
    assert.equal(warden.code, 2);
    assert.match(warden.stderr, /FATAL: {2}terminating connection due to administrator command/);
    assert.doesNotMatch(warden.stdout, /^2$/m);
    expectRecorded(session, 'pg_terminate_backend', { outcome: 'error', sqlstate: '57P01' });
    assert.equal(session.summary.reason, 'upstream_closed');
  });

  for (const sslmode of ['require', 'prefer', 'disable'] as const) {
    test(`sslmode=${sslmode}`, async () => {
      const sub = `psql-ssl-${sslmode}`;
      const sql = "select current_database(), 2 + 2, repeat('x', 100000) = repeat('x', 100000), md5(string_agg(g::text, ',')) from generate_series(1, 20000) g";
      // The target's own TLS is not what is compared: the direct side uses prefer.
      const direct = await psql(directEndpoint(w), { args: ['-At', '-c', sql] });
      const warden = await psql(await wardenEndpoint(w, sub), { args: ['-At', '-c', sql], extra: `sslmode=${sslmode}` });
      assert.deepEqual(normalize(warden), normalize(direct), describeRun(warden));
      assert.equal(warden.code, 0);
      const info = await psql(await wardenEndpoint(w, sub), { args: ['-c', '\\conninfo'], extra: `sslmode=${sslmode}` });
      if (sslmode === 'disable') assert.doesNotMatch(info.stdout, /SSL connection/);
      else assert.match(info.stdout, /SSL connection \(protocol: TLSv1\.[23]/);
      const sessions = await sessionsOf(w, sub, { atLeast: 2 });
      assert.equal(sessions.length, 2);
      for (const s of sessions) {
        const startEv = s.events.find((e) => e.type === 'session.start');
        assert.equal(startEv?.type === 'session.start' && startEv.tls, sslmode !== 'disable');
      }
      assert.equal(findStatements(sessions[0]!, 'md5(string_agg')[0]?.end?.rows, 1);
    });
  }

  test('Ctrl-C on a running pg_sleep(30) cancels it quickly; the trail says cancelled', async () => {
    async function cancelled(e: Endpoint): Promise<RunResult> {
      const c = libpq(e, 'sslmode=prefer');
      const p = start(PSQL!, ['-X', '-v', 'ON_ERROR_STOP=1', '-At', '-d', c.conninfo, '-c', 'select pg_sleep(30)'], { env: c.env, timeoutMs: 40_000 });
      // Wait until the statement runs on the target, then interrupt psql like a terminal's Ctrl-C.
      await waitFor(async () => (await w.pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'", { database: 'appdb' })).trim() === '1');
      await sleep(200);
      p.child.kill('SIGINT');
      return p.done;
    }
    const direct = await cancelled(directEndpoint(w));
    const warden = await cancelled(await wardenEndpoint(w, 'psql-cancel'));
    assert.deepEqual(normalize(warden), normalize(direct), describeRun(warden));
    assert.equal(warden.code, 1);
    assert.match(warden.stderr, /ERROR: {2}canceling statement due to user request/);
    assert.ok(warden.durationMs < 10_000, `cancelled after ${warden.durationMs} ms`);
    const s = await latestSession(w, 'psql-cancel');
    expectRecorded(s, 'select pg_sleep(30)', { outcome: 'cancelled', sqlstate: '57014' });
  });

  test('\\lo_import / \\lo_export (FunctionCall protocol) round-trip a file', async () => {
    const src = join(dir, 'blob.bin');
    const content = Buffer.alloc(70_000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7919 + (i >> 8)) & 0xff;
    writeFileSync(src, content);
    const out = (label: string): string => join(dir, `blob-${label}.out`);
    // SQL in -c is not subject to variable interpolation: the commands go in as a script on stdin.
    async function roundTrip(e: Endpoint): Promise<RunResult> {
      const script = [
        `\\lo_import '${src}' 'test blob'`,
        'select length(lo_get(:LASTOID)), md5(lo_get(:LASTOID));',
        "select obj_description(:LASTOID, 'pg_largeobject');",
        `\\lo_export :LASTOID '${out(e.label)}'`,
        '\\lo_list',
        '\\lo_unlink :LASTOID',
        'select count(*) from pg_largeobject_metadata;',
      ].join('\n');
      const res = await psql(e, { args: ['-At', '-f', '-'], input: script + '\n' });
      return { ...res, stdout: res.stdout.replaceAll(out(e.label), '<out>') };
    }
    const direct = await roundTrip(directEndpoint(w));
    const warden = await roundTrip(await wardenEndpoint(w, 'psql-lo'));
    assert.deepEqual(normalize(warden), normalize(direct), describeRun(warden));
    assert.equal(warden.code, 0, describeRun(warden));
    assert.match(warden.stdout, /^70000\|[0-9a-f]{32}$/m);
    assert.match(warden.stdout, /^test blob$/m);
    assert.ok(readFileSync(out('warden')).equals(content), 'exported file equals the imported one');
    assert.ok(readFileSync(out('direct')).equals(content));
    const s = await latestSession(w, 'psql-lo');
    const calls = findStatements(s, /^FunctionCall oid=\d+$/);
    // lo_import: lo_creat, lo_open, lowrite..., lo_close; lo_export: lo_open, loread..., lo_close; lo_unlink.
    assert.ok(calls.length >= 8, describeStatements(s));
    assert.ok(calls.every((c) => c.end?.outcome === 'ok' && c.end.command === 'FUNCTION CALL'), describeStatements(s));
    assert.ok(calls.every((c) => c.statement.decision.effect === 'allow'));
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(50);
  }
}
