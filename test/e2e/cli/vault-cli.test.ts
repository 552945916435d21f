/** `warden vault reveal|list` as an operator runs them: the real command in a child process. */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-trail-reader.ts';
import { auditKeyPaths, loadAuditPublicKey } from '../../../adapters/local/audit-signing-key.ts';
import { LocalForensicVault } from '../../../adapters/local/forensic-vault.ts';
import type { AuditEventOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import type { VaultCell, VaultRef } from '../../../core/masking/forensic-vault.ts';
import { runWardenCli, temporaryFolders } from '../../helpers/warden-cli.ts';

const tempDir = temporaryFolders();

/** A state dir with a config file (optionally with its own audit dir) and one sealed record. */
async function setup(opts: { auditDir?: string } = {}): Promise<{ dir: string; config: string; ref: VaultRef; cells: VaultCell[]; secret: string }> {
  const dir = tempDir('warden-vault-cli-');
  const config = join(dir, 'warden.config.yaml');
  writeFileSync(config, [`stateDir: ${dir}`, 'identity:', '  devIssuer:', '    enabled: true', ...(opts.auditDir ? ['audit:', `  dir: ${opts.auditDir}`] : []), ''].join('\n'));
  const secret = `tok_${randomBytes(8).toString('hex')}`;
  const cells: VaultCell[] = [
    { row: 0, column: 1, columnName: 'email', source: 'public.users.email', original: 'alice@example.com' },
    { row: 0, column: 2, columnName: 'notes', detector: 'api_token', original: `key ${secret}` },
    { row: 1, column: 1, columnName: 'email', source: 'public.users.email', original: null },
    { row: 1, column: 2, columnName: 'notes', detector: 'email', original: 'line1\n\u001b[31mred\u001b[0m' },
  ];
  const vault = await LocalForensicVault.open({ stateDir: dir });
  const w = vault.open({ sessionId: 'agent-sess-1', statementId: 3, target: 'billing', principal: { issuer: 'https://idp.example.com', subject: 'ci-bot' }, createdAt: new Date().toISOString() });
  cells.forEach((c) => w.add(c));
  return { dir, config, ref: await w.close(), cells, secret };
}

// One after the other: reveals write the audit dir, and the local audit sink allows one process per dir at a time.
describe('warden vault', () => {
  let s: Awaited<ReturnType<typeof setup>>;
  before(async () => {
    s = await setup();
  });

  it('reveal records a vault.reveal event in a sealed, verifiable audit session, then prints the originals', async () => {
    // Act
    const r = await runWardenCli(['--config', s.config, 'vault', 'reveal', 'agent-sess-1', '3', '--as', 'alice-oncall', '--reason', 'INC-42']);

    // Assess: the output
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /alice@example\.com/);
    assert.ok(r.stdout.includes(s.secret));
    assert.match(r.stdout, /public\.users\.email/);
    assert.match(r.stdout, /detector:api_token/);
    assert.match(r.stdout, /NULL/);
    assert.ok(!r.stdout.includes('\u001b'), 'control characters are escaped, never sent to the terminal');
    assert.ok(r.stdout.includes(s.ref.sha256));

    // Assess: the audit trail
    const auditDir = join(s.dir, 'audit', 'operator'); // the operators' trail, beside the gateway's
    const reveal = (await listSessions(auditDir)).find((x) => x.startupUser === 'alice-oncall');
    assert.ok(reveal, 'an audit session for the reveal');
    assert.ok(r.stdout.includes(reveal.sessionId));
    const trail = await readSessionEvents(auditDir, reveal.sessionId);
    assert.deepEqual(trail.events.map((e) => e.type), ['session.start', 'vault.reveal', 'session.end', 'seal']);
    const ev = trail.events[1] as AuditEventOf<'vault.reveal'>;
    assert.equal(ev.recordSessionId, 'agent-sess-1');
    assert.equal(ev.recordStatementId, 3);
    assert.equal(ev.recordId, s.ref.id);
    assert.equal(ev.recordSha256, s.ref.sha256);
    assert.equal(ev.cells, 4);
    assert.equal(ev.reason, 'INC-42');
    assert.equal(ev.operator.subject, 'alice-oncall');
    assert.equal(typeof ev.osUser, 'string');
    const key = await loadAuditPublicKey(auditKeyPaths(s.dir).publicKeyPath);
    assert.ok(key);
    const verified = verifyChainLines(trail.lines, key.publicKey, { requireSeal: true, keyId: key.keyId });
    assert.ok(verified.ok && verified.sealed, JSON.stringify(verified));
    const v = await runWardenCli(['--config', s.config, 'audit', '--operator', 'verify', reveal.sessionId]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /OK: 4 events, chain intact, sealed/);
  });

  it('reveal --json prints the record and its cells', async () => {
    const r = await runWardenCli(['--config', s.config, 'vault', 'reveal', 'agent-sess-1', '3', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { record: { id: string; sha256: string; target: string }; auditSessionId: string; cells: VaultCell[] };
    assert.deepEqual(out.cells, s.cells);
    assert.equal(out.record.id, s.ref.id);
    assert.equal(out.record.target, 'billing');
    assert.match(out.auditSessionId, /^vault-reveal-/);
  });

  it('list shows the record with its cells and size, without the key', async () => {
    const r = await runWardenCli(['--config', s.config, 'vault', 'list', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const [rec] = JSON.parse(r.stdout) as { sessionId: string; statementId: number; id: string; cells: number; bytes: number; complete: boolean }[];
    assert.deepEqual([rec?.sessionId, rec?.statementId, rec?.id, rec?.cells, rec?.bytes, rec?.complete], ['agent-sess-1', 3, s.ref.id, 4, s.ref.bytes, true]);
    const text = await runWardenCli(['--config', s.config, 'vault', 'list', 'agent-sess-1']);
    assert.match(text.stdout, new RegExp(`agent-sess-1\\s+3\\s+${s.ref.id}\\s+4\\s+${s.ref.bytes}`));
    assert.ok(!text.stdout.includes('alice@example.com'));
  });

  it('reveal with another key fails with a key error, prints nothing and records nothing', async () => {
    const other = join(s.dir, 'other.key');
    writeFileSync(other, randomBytes(32), { mode: 0o600 });
    const r = await runWardenCli(['--config', s.config, 'vault', 'reveal', 'agent-sess-1', '3', '--key', other, '--as', 'wrong-key-holder']);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /sealed under vault key/);
    assert.equal((await listSessions(join(s.dir, 'audit', 'operator'))).filter((x) => x.startupUser === 'wrong-key-holder').length, 0);
  });

  it('reveal of a missing record exits non-zero with nothing on stdout', async () => {
    const r = await runWardenCli(['--config', s.config, 'vault', 'reveal', 'agent-sess-1', '4']);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /no vault record/);
  });

  it('fails closed: when the audit trail cannot be written, reveal prints nothing and exits non-zero', async () => {
    // Prepare: the audit dir lies under a regular file (chmod would not stop root).
    const dir = tempDir('warden-vault-cli-blocked-');
    const blocker = join(dir, 'blocker');
    writeFileSync(blocker, 'not a folder');
    const b = await setup({ auditDir: join(blocker, 'audit') });

    // Act
    const r = await runWardenCli(['--config', b.config, 'vault', 'reveal', 'agent-sess-1', '3', '--as', 'mallory']);

    // Assess
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.ok(!r.stderr.includes('alice@example.com') && !r.stderr.includes(b.secret));
    assert.match(r.stderr, /cannot record the reveal in the audit trail/);
    assert.deepEqual(readdirSync(dir), ['blocker']);
  });
});
