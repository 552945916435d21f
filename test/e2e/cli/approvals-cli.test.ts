/**
 * `warden approvals list|show|approve|deny` as approvers run them: the real command in child processes,
 * against requests written by LocalApprovalStore (as the gateway writes them) in a temporary state folder.
 *
 * Proves: list and show present a pending request (and escape what the agent wrote); approvals count
 * toward the threshold and close the request; the same rules as Slack refuse an approver of another
 * group, the requester (by subject and by a configured identity), a denial with a blank reason and a vote
 * past the expiry (which closes the request as expired); an unknown id
 * fails naming it; `--as` is required; every attempt is an `approval.vote` event in a sealed, verifiable
 * session of the operators' trail; and when that trail cannot be written, no vote is cast.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { approvalsDir, LocalApprovalStore, newApprovalId } from '../../../adapters/local/approval-files.ts';
import { auditKeyPaths, loadAuditPublicKey } from '../../../adapters/local/audit-signing-key.ts';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-trail-reader.ts';
import { newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState } from '../../../core/approval/approval-request.ts';
import type { AuditEventOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { runWardenCli, temporaryFolders, type WardenCliRun } from '../../helpers/warden-cli.ts';

const ISSUER = 'https://idp.example';

const tempDir = temporaryFolders();

/** A state folder with a config naming the approvers; `auditDir` overrides the audit folder. */
function setup(opts: { auditDir?: string } = {}): { dir: string; config: string; store: LocalApprovalStore } {
  const dir = tempDir('warden-approvals-cli-');
  const config = join(dir, 'warden.config.yaml');
  writeFileSync(
    config,
    [
      `stateDir: ${dir}`,
      'identity:',
      '  devIssuer:',
      '    enabled: true',
      ...(opts.auditDir ? ['audit:', `  dir: ${opts.auditDir}`] : []),
      'approvals:',
      '  approvers:',
      '    - { id: alice@example.com, groups: [dba] }',
      '    - { id: bob@example.com, groups: [sre, dba] }',
      '    - { id: carol@example.com, groups: [dev] }',
      // configured under the agent's own subject, and the person behind the agent by identity
      '    - { id: ci-bot, groups: [dba] }',
      `    - { id: owner@example.com, groups: [dba], identities: [{ issuer: "${ISSUER}", subject: ci-bot }] }`,
      '',
    ].join('\n'),
  );
  return { dir, config, store: new LocalApprovalStore({ dir: approvalsDir(dir) }) };
}

async function submit(store: LocalApprovalStore, o: { approvals?: number; ageMs?: number; ttlMs?: number; text?: string; reason?: string } = {}): Promise<ApprovalId> {
  const now = Date.now();
  const created = now - (o.ageMs ?? 60_000);
  const req: ApprovalRequest = {
    id: newApprovalId(),
    requester: { issuer: ISSUER, subject: 'ci-bot', groups: ['agents'] },
    target: { name: 'billing', kind: 'postgres', environment: 'production' },
    sessionId: 'agent-sess-7',
    statement: { text: o.text ?? 'DELETE FROM invoices WHERE id = 42', fingerprint: 'fp-1', digest: 'a'.repeat(64), command: 'DELETE', tables: ['public.invoices'], risks: ['write'] },
    ...(o.reason !== undefined ? { reason: o.reason } : {}),
    policies: ['prod-writes-need-approval'],
    policyReason: 'changes to production need a DBA',
    requirement: { approvers: ['dba'], approvals: o.approvals ?? 2 },
    mode: 'wait',
    createdAt: new Date(created).toISOString(),
    expiresAt: new Date(created + (o.ttlMs ?? 15 * 60_000)).toISOString(),
  };
  await store.create(newApprovalState(req));
  return req.id;
}

const votesIn = async (dir: string): Promise<{ sessionId: string; startupUser?: string; events: string[]; vote: AuditEventOf<'approval.vote'>; lines: string[] }[]> => {
  const opDir = join(dir, 'audit', 'operator');
  const out = [];
  for (const s of await listSessions(opDir)) {
    const trail = await readSessionEvents(opDir, s.sessionId);
    const vote = trail.events.find((e) => e.type === 'approval.vote') as AuditEventOf<'approval.vote'> | undefined;
    assert.ok(vote, `session ${s.sessionId} holds a vote`);
    out.push({ sessionId: s.sessionId, ...(s.startupUser !== undefined ? { startupUser: s.startupUser } : {}), events: trail.events.map((e) => e.type), vote, lines: trail.lines });
  }
  return out;
};

describe('warden approvals', () => {
  let s: ReturnType<typeof setup>;
  let r1: ApprovalId; // two approvals needed: refusals, then alice and bob
  let r2: ApprovalId; // denied by bob
  let r3: ApprovalId; // past its expiry
  const cfg = (...args: string[]): string[] => ['--config', s.config, 'approvals', ...args];

  before(async () => {
    s = setup();
    r1 = await submit(s.store, { text: 'DELETE FROM invoices\nWHERE id = 42 -- \u001b[2J', reason: 'remove the duplicate invoice' });
    r2 = await submit(s.store, { approvals: 1, ageMs: 30_000 });
    r3 = await submit(s.store, { ageMs: 20 * 60_000, ttlMs: 15 * 60_000 });
  });

  it('lists and shows; refuses what the rules refuse; counts approvals to the threshold; audits every attempt', async () => {
    // Act 1: reads and refusals, all at once (none of them changes a request)
    // (The other refusals of the rules are proven in test/unit/core/approval; here, that the CLI applies them.)
    const [list, listJson, show, wrongGroup, selfBySubject, selfByIdentity, blankReason, unknownId, noAs] = await Promise.all([
      runWardenCli(cfg('list')),
      runWardenCli(cfg('list', '--json')),
      runWardenCli(cfg('show', r1)),
      runWardenCli(cfg('approve', r1, '--as', 'carol@example.com')),
      runWardenCli(cfg('approve', r1, '--as', 'ci-bot')),
      runWardenCli(cfg('approve', r1, '--as', 'owner@example.com')),
      runWardenCli(cfg('deny', r1, '--as', 'alice@example.com', '--reason', '   ')),
      runWardenCli(cfg('approve', 'apr-doesnotexist', '--as', 'alice@example.com')),
      runWardenCli(cfg('approve', r1)),
    ]);

    // Assess 1
    assert.equal(list.code, 0, list.stderr);
    const row = list.stdout.split('\n').find((l) => l.startsWith(r1));
    assert.ok(row, list.stdout);
    assert.match(row, /ci-bot\s+billing\s+DELETE\s+2 of dba\s+2\s+remove the duplicate invoice\s+DELETE FROM invoices WHERE id = 42/);
    assert.match(row, /in 1[34]m\d\ds/, 'expires in about 14 minutes');
    assert.ok(!list.stdout.includes('\u001b'), 'terminal escapes of the agent are shown escaped');
    assert.deepEqual((JSON.parse(listJson.stdout) as ApprovalState[]).map((x) => x.request.id).sort(), [r1, r2, r3].sort());

    assert.equal(show.code, 0, show.stderr);
    for (const want of [`approval ${r1}: pending (0 of 2 approvals)`, 'ci-bot @ https://idp.example', 'billing (postgres, production)', '2 approvals from dba', 'prod-writes-need-approval', 'changes to production need a DBA', 'public.invoices', '    DELETE FROM invoices', '    WHERE id = 42 -- \\u001b[2J', 'none yet']) {
      assert.ok(show.stdout.includes(want), `show prints ${JSON.stringify(want)}:\n${show.stdout}`);
    }

    const refusals: [WardenCliRun, RegExp][] = [
      [wrongGroup, /^refused: approvers of this request must be in dba\n$/],
      [selfBySubject, /^refused: nobody may decide their own request\n$/],
      [selfByIdentity, /^refused: nobody may decide their own request\n$/],
      [blankReason, /^refused: a denial needs a reason/],
    ];
    for (const [r, message] of refusals) {
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, message);
    }
    assert.equal(unknownId.code, 1);
    assert.match(unknownId.stderr, /no approval request apr-doesnotexist/);
    assert.notEqual(noAs.code, 0);
    assert.match(noAs.stderr, /required option '--as <approver-id>'/);
    assert.equal((await s.store.get(r1))!.revision, 0, 'no refusal changed the request');

    // Act 2: the first approval, a denial, a vote past the expiry
    const [first, denied, late] = await Promise.all([
      runWardenCli(cfg('approve', r1, '--as', 'alice@example.com', '--reason', 'checked the invoice')),
      runWardenCli(cfg('deny', r2, '--as', 'bob@example.com', '--reason', 'not during the billing run')),
      runWardenCli(cfg('approve', r3, '--as', 'alice@example.com')),
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `approved ${r1} (1 of 2 approvals; waiting for 1 more)\n`);
    assert.equal(denied.code, 0, denied.stderr);
    assert.equal(denied.stdout, `denied ${r2}\n`);
    assert.equal(late.code, 1);
    assert.match(late.stderr, new RegExp(`^refused: request ${r3} expired at `));
    const expired = (await s.store.get(r3))!;
    assert.deepEqual([expired.status, expired.revision], ['expired', 1], 'a vote past the expiry closes the request as expired');

    // Act 3: a double click, a vote on a closed request, then the approval that meets the threshold
    const again = await runWardenCli(cfg('approve', r1, '--as', 'alice@example.com'));
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /you already approved it; nothing changed \(1 of 2 approvals; waiting for 1 more\)/);
    const second = await runWardenCli(cfg('approve', r1, '--as', 'bob@example.com'));
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, `approved ${r1}: threshold met, the statement runs\n`);
    const approved = (await s.store.get(r1))!;
    assert.deepEqual([approved.status, approved.revision, approved.votes.map((v) => [v.approverId, v.channel])], ['approved', 2, [['alice@example.com', 'cli'], ['bob@example.com', 'cli']]]);

    // Assess: every attempt that reached the rules is a vote event, each in a sealed session of its own
    const sessions = await votesIn(s.dir);
    const key = await loadAuditPublicKey(auditKeyPaths(s.dir).publicKeyPath);
    assert.ok(key);
    for (const x of sessions) {
      assert.deepEqual(x.events, ['session.start', 'approval.vote', 'session.end', 'seal']);
      const v = verifyChainLines(x.lines, key.publicKey, { requireSeal: true, keyId: key.keyId });
      assert.ok(v.ok && v.sealed, JSON.stringify(v));
      assert.equal(x.startupUser, userInfo().username, 'the OS account that ran the command');
      assert.equal(x.vote.channel, 'cli');
    }
    const got = sessions.map((x) => [x.vote.approvalId, x.vote.approverId, x.vote.choice, x.vote.refused ?? 'counted'].join(' ')).sort();
    const want = [
      [r1, 'carol@example.com', 'approve', 'not_in_group'],
      [r1, 'ci-bot', 'approve', 'self_approval'],
      [r1, 'owner@example.com', 'approve', 'self_approval'],
      [r1, 'alice@example.com', 'deny', 'reason_required'],
      ['apr-doesnotexist', 'alice@example.com', 'approve', 'unknown_request'],
      [r1, 'alice@example.com', 'approve', 'counted'],
      [r2, 'bob@example.com', 'deny', 'counted'],
      [r3, 'alice@example.com', 'approve', 'expired'],
      [r1, 'alice@example.com', 'approve', 'duplicate'],
      [r1, 'bob@example.com', 'approve', 'counted'],
    ].map((w) => w.join(' ')).sort();
    assert.deepEqual(got, want);
    const firstVote = sessions.find((x) => x.vote.approvalId === r1 && x.vote.approverId === 'alice@example.com' && x.vote.refused === undefined)!.vote;
    assert.deepEqual([firstVote.reason, firstVote.requester, firstVote.recordSessionId], ['checked the invoice', { issuer: ISSUER, subject: 'ci-bot' }, 'agent-sess-7']);
    assert.equal(sessions.find((x) => x.vote.approvalId === r2 && x.vote.refused === undefined)!.vote.reason, 'not during the billing run');
  });

  it('fails closed: when the operators\' trail cannot be written, no vote is cast and nothing but the error is printed', async () => {
    // Prepare: the audit folder lies under a regular file (chmod would not stop root).
    const blockedRoot = tempDir('warden-approvals-cli-blocked-');
    writeFileSync(join(blockedRoot, 'blocker'), 'not a folder');
    const b = setup({ auditDir: join(blockedRoot, 'blocker', 'audit') });
    const id = await submit(b.store, { approvals: 1 });

    // Act
    const r = await runWardenCli(['--config', b.config, 'approvals', 'approve', id, '--as', 'alice@example.com']);

    // Assess
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /cannot record the vote in the audit trail .*so no vote was cast/);
    const state = (await b.store.get(id))!;
    assert.deepEqual([state.status, state.revision, state.votes.length], ['pending', 0, 0]);
  });
});
