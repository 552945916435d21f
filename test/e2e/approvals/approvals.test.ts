/**
 * Human approval of held statements on the embedded default, end to end: psql and node-postgres agents
 * against the shipped policies (writes on production need one approval from db-approvers), approvers
 * voting with `warden approvals` (the CLI, in its own process) or the same core call it makes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { approvalsDir, LocalApprovalStore } from '../../../adapters/local/approval-files.ts';
import { ApprovalStatus, type ApprovalState } from '../../../core/approval/approval-request.ts';
import { approverById } from '../../../core/approval/approval-rules.ts';
import { recordVote } from '../../../core/approval/approval-store.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { CLEAN_PG_ENV, describeRun, latestSession, psqlPath, run } from '../../helpers/clients.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { runWardenCli } from '../../helpers/warden-cli.ts';
import { DEFAULT_POLICY_DIR, startTestWarden, TARGET_PASSWORD, TARGET_USER, type TestWarden } from '../../helpers/warden.ts';

const PSQL = psqlPath();
const skip = PSQL ? false : 'psql is not installed (apt-get install postgresql-client)';

const APPROVERS = [
  { id: 'alice', groups: ['db-approvers'] },
  { id: 'bob', groups: ['db-approvers'] },
  { id: 'mallory', groups: ['readers'] },
];

describe('approval of held statements, end to end', { skip, timeout: 120_000 }, () => {
  let server: PostgresServer;
  let w: TestWarden;
  let store: LocalApprovalStore;
  let configFile: string;

  before(async () => {
    server = await startTestPostgres({ authMethod: 'scram-sha-256' });
    await server.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await server.createDatabase('appdb', TARGET_USER);
    const target = { kind: 'postgres', host: '127.0.0.1', port: server.port, database: 'appdb', credential: 'appdb-cred', environment: 'production' };
    w = await startTestWarden({
      pg: server,
      policyDir: DEFAULT_POLICY_DIR,
      config: {
        targets: [
          { name: 'prod', ...target },
          { name: 'prod-async', approvalMode: 'async', ...target },
        ],
        approvals: { mode: 'wait', timeoutSeconds: 60, noticeIntervalSeconds: 1, approvers: APPROVERS },
      },
    });
    store = new LocalApprovalStore({ dir: approvalsDir(w.loaded.stateDir) });
    configFile = join(w.loaded.stateDir, 'warden.config.yaml');
    writeFileSync(configFile, [`stateDir: ${w.loaded.stateDir}`, 'identity:', '  devIssuer:', '    enabled: true', 'approvals:', '  approvers:', ...APPROVERS.map((a) => `    - { id: ${a.id}, groups: [${a.groups.join(', ')}] }`), ''].join('\n'));
    await server.psql("CREATE TABLE accounts (id int PRIMARY KEY, status text NOT NULL); INSERT INTO accounts SELECT g, 'open' FROM generate_series(1, 9) g", { database: 'appdb', user: TARGET_USER });
  });
  after(async () => {
    await w?.stop();
    await server?.stop();
  });

  const statusOf = async (id: number): Promise<string> => (await server.psql(`SELECT status FROM accounts WHERE id = ${id}`, { database: 'appdb', user: TARGET_USER })).trim();

  /** The pending request whose statement contains `text`, once it appears. */
  async function pendingWith(text: string, timeoutMs = 20_000): Promise<ApprovalState> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = (await store.listPending()).find((s) => s.request.statement.text.includes(text));
      if (found) return found;
      if (Date.now() > until) throw new Error(`no pending request for ${text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function stateOf(id: string): Promise<ApprovalState> {
    return (await store.get(id as ApprovalState['request']['id']))!;
  }

  async function vote(id: string, approver: string, choice: 'approve' | 'deny', reason?: string): Promise<void> {
    const r = await recordVote(store, id as ApprovalState['request']['id'], { approver: approverById(APPROVERS, approver), choice, ...(reason ? { reason } : {}), channel: 'cli', now: new Date() });
    assert.equal(r.kind, 'accepted', JSON.stringify(r));
  }

  async function psqlAs(sub: string, db: string, sql: string): Promise<ReturnType<typeof run>> {
    return run(PSQL!, [`host=127.0.0.1 port=${w.port} user=${sub} dbname=${db} sslmode=require`, '-X', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose', '-c', sql], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token(sub, { groups: ['writers'] }) },
      timeoutMs: 60_000,
    });
  }

  test('wait mode: a held UPDATE is approved with `warden approvals approve` and then runs; the agent saw the request and the trail links every step', async () => {
    const sql = "UPDATE accounts SET status = 'closed' WHERE id = 1 /* warden:reason=\"ticket OPS-1: customer asked\" */";
    const agent = psqlAs('agent-wait', 'prod', sql);
    const held = await pendingWith('WHERE id = 1 ');
    assert.equal(await statusOf(1), 'open', 'nothing ran while held');
    assert.equal(held.request.reason, 'ticket OPS-1: customer asked');
    assert.deepEqual(held.request.requirement, { approvers: ['db-approvers'], approvals: 1 });
    assert.equal(held.request.requester.subject, 'agent-wait');

    const cli = await runWardenCli(['--config', configFile, 'approvals', 'approve', held.request.id, '--as', 'alice']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /threshold met/);

    const r = await agent;
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stdout, /UPDATE 1/);
    assert.match(r.stderr, new RegExp(`NOTICE: {2}00000: waiting for approval: request ${held.request.id} needs 1 approval from db-approvers`));
    assert.equal(await statusOf(1), 'closed');

    const s = await latestSession(w, 'agent-wait');
    const types = s.events.map((e) => e.type);
    for (const t of ['approval.requested', 'approval.vote', 'approval.closed', 'approval.executed']) assert.ok(types.includes(t as never), `${t} in ${types.join(', ')}`);
    const statement = s.statements.find((x) => x.statement.text.includes('UPDATE accounts'))!;
    assert.equal(statement.statement.decision.effect, 'allow');
    assert.match(statement.statement.decision.reason ?? '', new RegExp(`approved in ${held.request.id} by alice`));
    assert.equal(statement.end?.outcome, 'ok');
    const closed = s.events.find((e) => e.type === 'approval.closed');
    assert.ok(closed && closed.type === 'approval.closed');
    assert.equal(closed.statementId, statement.statement.statementId);
    assert.deepEqual(closed.votes.map((v) => [v.approverId, v.choice, v.channel]), [['alice', 'approve', 'cli']]);
  });

  test('wait mode: denied with a reason, which the agent sees; nothing runs, and the open transaction is aborted as after any error', async () => {
    const agent = psqlAs('agent-deny', 'prod', "BEGIN; UPDATE accounts SET status = 'x' WHERE id = 2; COMMIT;");
    const held = await pendingWith('WHERE id = 2');
    await vote(held.request.id, 'bob', 'deny', 'not during the freeze');
    const r = await agent;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`ERROR: {2}42501: denied by bob in request ${held.request.id}: not during the freeze`));
    assert.equal(await statusOf(2), 'open');
    const s = await latestSession(w, 'agent-deny');
    const statement = s.statements.find((x) => x.statement.text.includes('UPDATE accounts'))!;
    assert.deepEqual([statement.end?.outcome, statement.end?.sqlstate], ['denied', '42501']);
  });

  test('a vote from outside the approver group or by the requester does not release the statement', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'alice', database: 'prod', password: await w.token('alice', { groups: ['writers'] }), ssl: { rejectUnauthorized: false } });
    await c.connect();
    try {
      const q = c.query("UPDATE accounts SET status = 'self' WHERE id = 3");
      q.catch(() => undefined);
      const held = await pendingWith('WHERE id = 3');
      const self = await recordVote(store, held.request.id, { approver: approverById(APPROVERS, 'alice'), choice: 'approve', channel: 'cli', now: new Date() });
      assert.equal(self.kind === 'refused' && self.refusal, 'self_approval');
      const outsider = await recordVote(store, held.request.id, { approver: approverById(APPROVERS, 'mallory'), choice: 'approve', channel: 'cli', now: new Date() });
      assert.equal(outsider.kind === 'refused' && outsider.refusal, 'not_in_group');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await statusOf(3), 'open');
      assert.equal((await stateOf(held.request.id)).status, ApprovalStatus.pending);
      await vote(held.request.id, 'bob', 'approve');
      assert.equal((await q).rowCount, 1);
      assert.equal(await statusOf(3), 'self');
    } finally {
      await c.end();
    }
  });

  test('a cancel withdraws the request (57014) and a disconnect withdraws it too; the session goes on after the cancel', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'agent-cancel', database: 'prod', password: await w.token('agent-cancel', { groups: ['writers'] }), ssl: { rejectUnauthorized: false } });
    c.on('error', () => undefined); // the disconnect below
    await c.connect();
    const q = c.query("UPDATE accounts SET status = 'c' WHERE id = 4");
    const held = await pendingWith('WHERE id = 4');
    // A CancelRequest on a new connection with the key Warden handed out, as libpq sends it.
    await sendCancel(w.port, c);
    await assert.rejects(q, (e: Error & { code?: string }) => e.code === '57014' && /withdrawn/.test(e.message));
    assert.equal((await stateOf(held.request.id)).status, ApprovalStatus.withdrawn);
    assert.deepEqual((await c.query('SELECT status FROM accounts WHERE id = 4')).rows, [{ status: 'open' }]);

    const q2 = c.query("UPDATE accounts SET status = 'd' WHERE id = 5");
    q2.catch(() => undefined);
    const held2 = await pendingWith('WHERE id = 5');
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const until = Date.now() + 10_000;
    while ((await stateOf(held2.request.id)).status === ApprovalStatus.pending && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    const closed = await stateOf(held2.request.id);
    assert.equal(closed.status, ApprovalStatus.withdrawn);
    assert.equal(closed.outcomeReason, 'the client disconnected');
    assert.equal(await statusOf(5), 'open');
    const s = await latestSession(w, 'agent-cancel');
    const outcomes = s.events.flatMap((e) => (e.type === 'approval.closed' ? [[e.approvalId, e.status]] : []));
    assert.deepEqual(outcomes, [
      [held.request.id, 'withdrawn'],
      [held2.request.id, 'withdrawn'],
    ]);
  });

  test('async mode: refused at once naming the request; after approval the exact same statement runs once, and again needs a new approval', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'agent-async', database: 'prod-async', password: await w.token('agent-async', { groups: ['writers'] }), ssl: { rejectUnauthorized: false } });
    await c.connect();
    try {
      const sql = "UPDATE accounts SET status = status || '+' WHERE id = 6";
      const first = await c.query(sql).then(() => undefined, (e: Error & { code?: string; hint?: string }) => e);
      assert.equal(first?.code, '42501');
      const id = /request (apr-[a-z0-9]+)/.exec(first?.message ?? '')?.[1];
      assert.ok(id, first?.message);
      assert.match(first?.hint ?? '', /run exactly the same statement again/);
      await vote(id, 'alice', 'approve');

      const other = await c.query(`${sql} AND 1 = 1`).then(() => 'ran', (e: Error) => e.message);
      assert.match(other, /approval required/, 'a different text is not the approved statement');
      assert.equal((await c.query(sql)).rowCount, 1);
      assert.equal(await statusOf(6), 'open+');
      const third = await c.query(sql).then(() => undefined, (e: Error) => e);
      assert.match(third?.message ?? '', /approval required/);
      assert.notEqual(/request (apr-[a-z0-9]+)/.exec(third!.message)?.[1], id);
      assert.equal(await statusOf(6), 'open+');
      assert.ok((await stateOf(id)).executedAt);
    } finally {
      await c.end();
    }
  });
});

describe('an approval nobody decides expires', { skip, timeout: 60_000 }, () => {
  let server: PostgresServer;
  let w: TestWarden;

  before(async () => {
    server = await startTestPostgres({ authMethod: 'scram-sha-256' });
    await server.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await server.createDatabase('appdb', TARGET_USER);
    await server.psql("CREATE TABLE accounts (id int PRIMARY KEY, status text NOT NULL); INSERT INTO accounts VALUES (1, 'open')", { database: 'appdb', user: TARGET_USER });
    w = await startTestWarden({
      pg: server,
      policyDir: DEFAULT_POLICY_DIR,
      config: {
        targets: [{ name: 'prod', kind: 'postgres', host: '127.0.0.1', port: server.port, database: 'appdb', credential: 'appdb-cred', environment: 'production' }],
        approvals: { mode: 'wait', timeoutSeconds: 1, approvers: APPROVERS },
      },
    });
  });
  after(async () => {
    await w?.stop();
    await server?.stop();
  });

  test('psql gets "expired with no decision" after the timeout, nothing ran, and the trail records the expiry', async () => {
    const r = await run(PSQL!, [`host=127.0.0.1 port=${w.port} user=agent-late dbname=prod sslmode=require`, '-X', '-v', 'VERBOSITY=verbose', '-c', "UPDATE accounts SET status = 'late' WHERE id = 1"], {
      env: { ...CLEAN_PG_ENV, PGPASSWORD: await w.token('agent-late', { groups: ['writers'] }) },
      timeoutMs: 30_000,
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ERROR: {2}42501: approval request apr-[a-z0-9]+ expired with no decision; the statement was not run/, describeRun(r));
    assert.equal((await server.psql('SELECT status FROM accounts WHERE id = 1', { database: 'appdb', user: TARGET_USER })).trim(), 'open');
    const s = await latestSession(w, 'agent-late');
    const closed = s.events.find((e) => e.type === 'approval.closed');
    assert.ok(closed && closed.type === 'approval.closed' && closed.status === 'expired', s.events.map((e) => e.type).join(', '));
  });
});

async function sendCancel(port: number, c: pg.Client): Promise<void> {
  const key = c as unknown as { processID: number; secretKey: number };
  const msg = Buffer.alloc(16);
  msg.writeInt32BE(16, 0);
  msg.writeInt32BE(80877102, 4);
  msg.writeInt32BE(key.processID, 8);
  msg.writeInt32BE(key.secretKey, 12);
  await new Promise<void>((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.end(msg));
    sock.on('close', () => resolve());
    sock.on('error', reject);
  });
}
