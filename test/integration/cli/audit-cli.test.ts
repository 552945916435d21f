import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { asSessionId } from '../../../core/audit/events.ts';
import type { SessionId, SessionStartFields } from '../../../core/audit/events.ts';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../../adapters/local/audit-sink.ts';

const START: SessionStartFields = {
  protocol: 'postgres',
  source: { address: '10.0.0.7', port: 51234 },
  listener: 'postgres:0.0.0.0:6432',
  tls: true,
  target: 'app',
  startupUser: 'alice',
};

let stateDir: string;
let auditDir: string;
let sealed: SessionId;
let open: SessionId;

interface RunResult {
  out: string;
  err: string;
  code: number;
}

// The CLI writes to process.stdout, which node:test also uses to report from a test file's
// process, so each run is a child process (this also checks the real exit code).
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const SCRIPT = `
import { Command } from 'commander';
import { registerAuditCommands } from './cli/commands/audit.ts';
const [auditDir, stateDir, ...args] = JSON.parse(process.argv[1]);
const program = new Command('warden');
registerAuditCommands(program, () => auditDir, () => stateDir);
await program.parseAsync(args, { from: 'user' });
`;

/** Runs `warden <args>` with the audit commands registered. */
function run(...args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', SCRIPT, JSON.stringify([auditDir, stateDir, ...args])],
      { cwd: REPO },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(err);
        resolve({ out: stdout, err: stderr, code: typeof err?.code === 'number' ? err.code : 0 });
      },
    );
  });
}

const sessionFile = (id: string) => join(auditDir, 'sessions', `${id}.jsonl`);

before(async () => {
  stateDir = mkdtempSync(join(tmpdir(), 'warden-cli-'));
  auditDir = join(stateDir, 'audit');
  const key = await loadOrCreateAuditSigningKey(stateDir);
  const sink = await LocalAuditSink.open({ dir: auditDir, signingKey: key.privateKey, keyId: key.keyId, readOnlyWindowMs: 20 });

  sealed = asSessionId(randomUUID());
  const s = sink.openSession(sealed, START);
  await s.append({ type: 'auth.success', principal: { issuer: 'https://id.example', subject: 'alice@example.com', groups: ['dev'] }, method: 'oidc-jwt' }, { durable: true });
  await s.append({ type: 'upstream.connect', target: 'app', host: 'db.internal', port: 5432, database: 'app', tls: true, ok: true }, { durable: false });
  await s.append(
    {
      type: 'statement',
      statementId: 1,
      protocol: 'extended',
      text: 'SELECT name FROM users WHERE id = $1',
      params: ['42'],
      classification: { operation: 'select', tables: ['users'] },
      decision: { effect: 'allow', policies: ['read-only'] },
      startedAt: new Date().toISOString(),
    },
    { durable: false },
  );
  await s.append({ type: 'statement.end', statementId: 1, endedAt: new Date().toISOString(), durationMs: 0.8, outcome: 'ok', command: 'SELECT 1', rows: 1 }, { durable: false });
  await s.append(
    {
      type: 'statement',
      statementId: 2,
      protocol: 'simple',
      text: 'DROP TABLE users',
      classification: { operation: 'drop' },
      decision: { effect: 'deny', policies: ['no-ddl'], reason: 'DDL is not allowed' },
      startedAt: new Date().toISOString(),
    },
    { durable: true },
  );
  await s.append({ type: 'statement.end', statementId: 2, endedAt: new Date().toISOString(), durationMs: 0, outcome: 'denied', sqlstate: '42501', error: 'denied by policy' }, { durable: false });
  await s.end({ reason: 'client_terminate', statements: 2, bytesFromClient: 300, bytesToClient: 500, durationMs: 1234 });

  // A session still open when the trail is inspected (or the gateway crashed).
  open = asSessionId(randomUUID());
  const o = sink.openSession(open, { ...START, target: 'billing' });
  await o.append({ type: 'auth.failure', reason: 'bad_token', detail: 'signature invalid', sqlstate: '28P01', claimedUser: 'mallory' }, { durable: true });
  await sink.close();
});

after(() => rmSync(stateDir, { recursive: true, force: true }));

describe('warden audit', () => {
  it('has help for every subcommand', async () => {
    const r = await run('audit', '--help');
    assert.match(r.out, /sessions.*list recorded sessions/);
    assert.match(r.out, /show.*print a session's events/);
    assert.match(r.out, /verify.*check a session's hash chain/);
    const v = await run('audit', 'verify', '--help');
    assert.match(v.out, /--all/);
    assert.match(v.out, /--public-key/);
  });

  it('lists sessions', async () => {
    const r = await run('audit', 'sessions');
    assert.equal(r.code, 0);
    assert.match(r.out, /^SESSION\s+START\s+END\s+PRINCIPAL\s+TARGET\s+SOURCE\s+STATEMENTS/);
    const sealedRow = r.out.split('\n').find((l) => l.startsWith(sealed))!;
    assert.match(sealedRow, /alice@example\.com\s+app\s+10\.0\.0\.7:51234\s+2$/);
    const openRow = r.out.split('\n').find((l) => l.startsWith(open))!;
    assert.match(openRow, /\(open\)/);
    // Newest first.
    assert.ok(r.out.indexOf(open) < r.out.indexOf(sealed));

    const j = await run('audit', 'sessions', '--json', '--limit', '1');
    const list = JSON.parse(j.out) as { sessionId: string }[];
    assert.deepEqual(list.map((x) => x.sessionId), [open]);

    const bad = await run('audit', 'sessions', '--limit', 'zero');
    assert.notEqual(bad.code, 0);
  });

  it('shows a session in readable form', async () => {
    const r = await run('audit', 'show', sealed.slice(0, 8));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /session\.start\s+postgres from 10\.0\.0\.7:51234 to target 'app' as 'alice'/);
    assert.match(r.out, /statement\s+\[1\] ALLOW select \(extended; policies: read-only\)/);
    assert.match(r.out, /SELECT name FROM users WHERE id = \$1/);
    assert.match(r.out, /params: \$1="42"/);
    assert.match(r.out, /\[2\] DENY drop/);
    assert.match(r.out, /reason: DDL is not allowed/);
    assert.match(r.out, /statement\.end\s+\[1\] ok SELECT 1, rows 1, 0\.8 ms/);
    assert.match(r.out, /statement\.end\s+\[2\] denied, 0 ms, sqlstate 42501/);
    assert.match(r.out, /session\.end\s+client_terminate: 2 statements/);
    assert.match(r.out, /seal\s+sealed events #0-#7 with key ed25519:/);

    const j = await run('audit', 'show', sealed, '--json');
    assert.equal((JSON.parse(j.out) as { events: unknown[] }).events.length, 9);

    const missing = await run('audit', 'show', 'nope');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /no audit trail for session 'nope'/);
  });

  it('verifies an intact trail', async () => {
    const r = await run('audit', 'verify', sealed);
    assert.equal(r.out, 'OK: 9 events, chain intact, sealed\n');
    assert.equal(r.code, 0);

    const u = await run('audit', 'verify', open);
    assert.equal(u.out, 'OK: 2 events, chain intact, unsealed\n');
    assert.equal(u.code, 0);

    const all = await run('audit', 'verify', '--all');
    assert.equal(all.code, 0);
    assert.match(all.out, new RegExp(`${sealed}: OK: 9 events, chain intact, sealed`));
    assert.match(all.out, /2 sessions: 1 sealed and intact, 1 unsealed, 0 broken/);
  });

  it('reports a tampered line as BROKEN at its seq with exit code 1', async () => {
    const original = readFileSync(sessionFile(sealed), 'utf8');
    try {
      const lines = original.split('\n');
      assert.match(lines[5]!, /DROP TABLE users/);
      lines[5] = lines[5]!.replace('DROP TABLE users', 'SELECT 1');
      writeFileSync(sessionFile(sealed), lines.join('\n'));
      const r = await run('audit', 'verify', sealed);
      assert.equal(r.out, 'BROKEN at seq 5: hash mismatch: event content was modified\n');
      assert.equal(r.code, 1);
      const all = await run('audit', 'verify', '--all');
      assert.equal(all.code, 1);
      assert.match(all.out, /1 broken/);
    } finally {
      writeFileSync(sessionFile(sealed), original);
    }
  });

  it('reports a removed event and a cut-off seal', async () => {
    const original = readFileSync(sessionFile(sealed), 'utf8');
    try {
      const lines = original.split('\n');
      writeFileSync(sessionFile(sealed), [...lines.slice(0, 3), ...lines.slice(4)].join('\n'));
      const removed = await run('audit', 'verify', sealed);
      assert.match(removed.out, /^BROKEN at seq 3: prevHash mismatch/);
      assert.equal(removed.code, 1);

      // Dropping session.end and the seal leaves a valid chain; the index still knows it ended.
      writeFileSync(sessionFile(sealed), lines.slice(0, 7).join('\n') + '\n');
      const cut = await run('audit', 'verify', sealed);
      assert.match(cut.out, /^BROKEN at seq 7: missing seal/);
      assert.equal(cut.code, 1);
    } finally {
      writeFileSync(sessionFile(sealed), original);
    }
    assert.equal((await run('audit', 'verify', sealed)).code, 0);
  });

  it('checks the seal against the state dir public key', async () => {
    const other = mkdtempSync(join(tmpdir(), 'warden-cli-key-'));
    try {
      await loadOrCreateAuditSigningKey(other);
      const r = await run('audit', 'verify', sealed, '--public-key', join(other, 'audit', 'audit-signing-key.pub.pem'));
      assert.match(r.out, /^BROKEN at seq 8: invalid seal signature/);
      assert.equal(r.code, 1);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
