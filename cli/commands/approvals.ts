/**
 * `warden approvals list|show|approve|deny`: approval requests of the embedded default, decided from the
 * command line. A vote goes through the same core rules as a Slack click (recordVote: configured
 * approvers of a required group, never the requester, a reason to deny, the threshold, the expiry).
 *
 * Every vote attempt — accepted, repeated or refused — is an `approval.vote` event in the operators'
 * audit trail, in an audit session of its own (sealed at once), durable before the result is printed.
 * The session is opened before the vote is cast, so a trail that cannot be written stops the vote from
 * counting at all (fail closed). The session's startupUser is the OS account that ran the command; the
 * event names the approver (`--as`) and the requester.
 */
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import {
  ApprovalIdInvalidError,
  approvalsDir,
  asApprovalId,
  LocalApprovalStore,
  withFileLock,
} from '../../adapters/local/approval-files.ts';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../adapters/local/audit-sink.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import type { ApprovalState, VoteChoice } from '../../core/approval/approval-request.ts';
import { approvalsMissing, approverById, expire, type VoteResult } from '../../core/approval/approval-rules.ts';
import { ApprovalNotFoundError, recordVote, transition } from '../../core/approval/approval-store.ts';
import { asSessionId } from '../../core/audit/events.ts';
import type { ApprovalVoteFields, SessionId } from '../../core/audit/events.ts';
import type { SessionAudit } from '../../core/audit/ports.ts';
import { action, operatorAuditDir } from './audit.ts';

export class ApprovalsCliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApprovalsCliError';
  }
}

/** Refusal code of a vote on a request that does not exist (the core codes cover the others). */
const UNKNOWN_REQUEST = 'unknown_request';

const AS_HELP =
  'the approver you are, as configured in approvals.approvers (required: the vote is recorded under this identity ' +
  'and judged by its groups, so it must be named explicitly; an OS account is not an approver identity)';

export function registerApprovalCommands(program: Command, getConfig: () => LoadedConfig): Command {
  const approvals = program
    .command('approvals')
    .description('approval requests of statements held by policy: list, show, approve, deny (votes are audited)');

  approvals
    .command('list')
    .description('list pending requests, oldest first (id, age, expiry, requester, target, what is missing)')
    .option('--all', 'every request, decided ones too')
    .option('--json', 'print the requests as JSON')
    .action(
      action(async (opts: { all?: boolean; json?: boolean }) => {
        const store = storeOf(getConfig());
        const { states, problems } = await store.list();
        const shown = opts.all ? states : states.filter((s) => s.status === 'pending');
        for (const p of problems) process.stderr.write(`! ${p.error}\n`);
        if (opts.json) return out(JSON.stringify(shown, null, 2));
        if (shown.length === 0) return out(`no ${opts.all ? '' : 'pending '}approval requests in ${store.dir}`);
        const now = Date.now();
        out(
          table(
            ['ID', ...(opts.all ? ['STATUS'] : []), 'AGE', 'EXPIRES IN', 'REQUESTER', 'TARGET', 'COMMAND', 'NEEDS', 'MISSING', 'REASON', 'STATEMENT'],
            shown.map((s) => [
              s.request.id,
              ...(opts.all ? [s.status] : []),
              duration(now - Date.parse(s.request.createdAt)),
              s.status !== 'pending' ? '-' : expiresIn(s, now),
              oneLine(s.request.requester.subject, 32),
              s.request.target.name,
              oneLine(s.request.statement.command, 16),
              `${s.request.requirement.approvals} of ${s.request.requirement.approvers.join(',')}`,
              String(approvalsMissing(s)),
              s.request.reason !== undefined ? oneLine(s.request.reason, 40) : '-',
              oneLine(s.request.statement.text, 60),
            ]),
          ),
        );
      }),
    );

  approvals
    .command('show')
    .description('print a request in full: statement, classification, policies, votes')
    .argument('<id>', 'the request id (as in `warden approvals list`)')
    .option('--json', 'print the request as JSON')
    .action(
      action(async (idArg: string, opts: { json?: boolean }) => {
        const store = storeOf(getConfig());
        const state = await store.get(asApprovalId(idArg));
        if (state === undefined) throw new ApprovalsCliError(`no approval request ${idArg} in ${store.dir}`);
        out(opts.json ? JSON.stringify(state, null, 2) : formatState(state, Date.now()));
      }),
    );

  approvals
    .command('approve')
    .description('approve a request as a configured approver (the vote is recorded in the audit trail first)')
    .argument('<id>', 'the request id')
    .requiredOption('--as <approver-id>', AS_HELP)
    .option('--reason <text>', 'why, for the audit trail')
    .action(action(async (idArg: string, opts: { as: string; reason?: string }) => voteFromCli(getConfig(), idArg, 'approve', opts)));

  approvals
    .command('deny')
    .description('deny a request as a configured approver; one denial closes it (recorded in the audit trail first)')
    .argument('<id>', 'the request id')
    .requiredOption('--as <approver-id>', AS_HELP)
    .option('--reason <text>', 'why (required: the agent is shown it)')
    .action(action(async (idArg: string, opts: { as: string; reason?: string }) => voteFromCli(getConfig(), idArg, 'deny', opts)));

  return approvals;
}

function storeOf(loaded: LoadedConfig): LocalApprovalStore {
  return new LocalApprovalStore({ dir: approvalsDir(loaded.stateDir) });
}

// --- voting ----------------------------------------------------------------------------------

type Attempt =
  | { readonly kind: 'voted'; readonly result: VoteResult }
  | { readonly kind: 'unknown'; readonly message: string };

async function voteFromCli(loaded: LoadedConfig, idArg: string, choice: VoteChoice, opts: { as: string; reason?: string }): Promise<void> {
  const store = storeOf(loaded);
  // Read once to name the target in the audit session; recordVote reads again under its own rules.
  let before: ApprovalState | undefined;
  let unknown: string | undefined;
  try {
    before = await store.get(asApprovalId(idArg));
    if (before === undefined) unknown = `no approval request ${idArg} in ${store.dir}`;
  } catch (err) {
    if (!(err instanceof ApprovalIdInvalidError)) throw err;
    unknown = err.message;
  }
  const attempt = await withVoteTrail(loaded, { target: before?.request.target.name ?? '-', osUser: currentOsUser() }, async (trail) => {
    const now = new Date(); // once the trail is open: the vote is judged at the time it is cast
    let a: Attempt;
    if (before === undefined) {
      a = { kind: 'unknown', message: unknown ?? `no approval request ${idArg}` };
    } else {
      const id = before.request.id;
      const input = { approver: approverById(loaded.config.approvals.approvers, opts.as), choice, channel: 'cli', now, ...(opts.reason !== undefined ? { reason: opts.reason } : {}) };
      try {
        a = { kind: 'voted', result: await recordVote(store, id, input) };
      } catch (err) {
        if (!(err instanceof ApprovalNotFoundError)) throw err;
        a = { kind: 'unknown', message: `no approval request ${idArg} in ${store.dir}` };
      }
      if (a.kind === 'voted' && a.result.kind === 'refused' && a.result.refusal === 'expired') {
        // Past its expiry nobody can decide it any more: close it as expired now rather than leave it
        // pending until the gateway looks. Best effort: the refusal stands either way.
        await transition(store, id, (s) => expire(s, now)).catch(() => undefined);
      }
    }
    try {
      await trail.append({ type: 'approval.vote', ...voteFields(a, idArg, choice, opts, before, now) }, { durable: true });
    } catch (err) {
      const counted = a.kind === 'voted' && a.result.kind === 'accepted';
      throw new ApprovalsCliError(`${counted ? 'the vote was cast' : 'the vote did not count'}, but recording it in the audit trail failed: ${(err as Error).message}`, { cause: err });
    }
    return a;
  });

  if (attempt.kind === 'unknown') throw new ApprovalsCliError(attempt.message);
  const r = attempt.result;
  const id = r.state.request.id;
  switch (r.kind) {
    case 'refused':
      process.stderr.write(`refused: ${r.message}\n`);
      process.exitCode = 1;
      return;
    case 'duplicate':
      return out(`${id}: you already ${choice === 'approve' ? 'approved' : 'denied'} it; nothing changed (${progress(r.state)})`);
    case 'accepted':
      return out(acceptedLine(r.state, choice, loaded));
  }
}

function voteFields(a: Attempt, idArg: string, choice: VoteChoice, opts: { as: string; reason?: string }, before: ApprovalState | undefined, now: Date): ApprovalVoteFields {
  const refused = a.kind === 'unknown' ? UNKNOWN_REQUEST : a.result.kind === 'refused' ? a.result.refusal : a.result.kind === 'duplicate' ? 'duplicate' : undefined;
  const request = a.kind === 'voted' ? a.result.state.request : before?.request;
  const reason = opts.reason?.trim();
  return {
    approvalId: request?.id ?? idArg,
    approverId: opts.as,
    choice,
    channel: 'cli',
    at: a.kind === 'voted' && a.result.kind === 'accepted' ? a.result.vote.at : now.toISOString(),
    ...(reason ? { reason } : {}),
    ...(refused !== undefined ? { refused } : {}),
    ...(request !== undefined ? { requester: { issuer: request.requester.issuer, subject: request.requester.subject }, recordSessionId: request.sessionId } : {}),
  };
}

/**
 * Opens an audit session in the operators' trail, runs `fn` (which casts the vote and appends its
 * event), and ends and seals the session. Operators' commands of several approvers may run at once,
 * and the audit sink allows one writer per folder, so the approvals commands take a lock file in that
 * folder for the few milliseconds this takes.
 *
 * Nothing has been voted when the session cannot be opened: that failure says so. A failure after the
 * vote counted (appending its event, sealing) is reported as such: the vote is then in the request file,
 * which the gateway copies into the agent's session when the request closes.
 */
async function withVoteTrail<T>(loaded: LoadedConfig, who: { target: string; osUser: string }, fn: (trail: SessionAudit) => Promise<T>): Promise<T> {
  const dir = operatorAuditDir(loaded.auditDir);
  const started = Date.now();
  const sessionId: SessionId = asSessionId(`approval-vote-${started.toString(36)}-${randomBytes(4).toString('hex')}`);
  let voting = false; // from here on, a failure is not "no vote was cast"
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return await withFileLock(
      join(dir, '.writer.lock'),
      async () => {
        const signing = await loadOrCreateAuditSigningKey(loaded.stateDir);
        const sink = await LocalAuditSink.open({ dir, readOnlyWindowMs: loaded.config.audit.readOnlyWindowMs, signingKey: signing.privateKey, keyId: signing.keyId });
        let result: { ok: true; value: T } | { ok: false; error: unknown };
        try {
          const session = sink.openSession(sessionId, {
            // SessionStartFields describe a client connection; for an operator's vote: the request's
            // target, the OS account as the startup user, and a local source.
            protocol: 'postgres',
            source: { address: 'local', port: 0 },
            listener: 'cli:approvals',
            tls: false,
            target: who.target,
            startupUser: who.osUser,
          });
          await session.ready;
          voting = true;
          try {
            result = { ok: true, value: await fn(session) };
          } catch (err) {
            result = { ok: false, error: err };
          }
          await session.end({ reason: 'client_terminate', statements: 0, bytesFromClient: 0, bytesToClient: 0, durationMs: Date.now() - started }).catch((err: unknown) => {
            if (result.ok) result = { ok: false, error: new ApprovalsCliError(`the vote was cast, but sealing its audit session ${sessionId} in ${dir} failed: ${(err as Error).message}`, { cause: err }) };
          });
        } finally {
          await sink.close().catch(() => undefined);
        }
        if (!result.ok) throw result.error;
        return result.value;
      },
      // Holding it takes a few fsyncs; a crashed holder's lock is broken at once (its pid is dead).
      { staleMs: 30_000, timeoutMs: 60_000 },
    );
  } catch (err) {
    if (voting) throw err;
    throw new ApprovalsCliError(`cannot record the vote in the audit trail (${dir}), so no vote was cast: ${(err as Error).message}`, { cause: err });
  }
}

function currentOsUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry (some containers): the uid is still who ran it.
    return process.env.USER ?? `uid:${process.getuid?.() ?? '?'}`;
  }
}

// --- output ----------------------------------------------------------------------------------

function acceptedLine(state: ApprovalState, choice: VoteChoice, loaded: LoadedConfig): string {
  const id = state.request.id;
  if (choice === 'deny') return `denied ${id}`;
  if (state.status === 'approved') {
    return state.request.mode === 'async'
      ? `approved ${id}: threshold met, the agent may run the statement once within ${duration(loaded.config.approvals.grantTtlSeconds * 1000)}`
      : `approved ${id}: threshold met, the statement runs`;
  }
  return `approved ${id} (${progress(state)})`;
}

function progress(state: ApprovalState): string {
  const need = state.request.requirement.approvals;
  const missing = approvalsMissing(state);
  const have = need - missing;
  if (state.status !== 'pending') return `request ${state.status}`;
  return `${have} of ${need} approvals; waiting for ${missing} more`;
}

function formatState(s: ApprovalState, now: number): string {
  const r = s.request;
  const lines: string[] = [];
  const field = (name: string, value: string): void => void lines.push(`  ${name.padEnd(12)} ${value}`);
  const status = s.status === 'pending' ? `pending (${r.requirement.approvals - approvalsMissing(s)} of ${r.requirement.approvals} approvals)` : s.status;
  lines.push(`approval ${r.id}: ${status}`);
  field('requested', `${r.createdAt} (${duration(now - Date.parse(r.createdAt))} ago)`);
  field('requester', `${oneLine(r.requester.subject)} @ ${oneLine(r.requester.issuer)}${r.requester.groups.length ? ` (groups: ${r.requester.groups.map((g) => oneLine(g)).join(', ')})` : ''}`);
  field('session', oneLine(r.sessionId));
  field('target', `${r.target.name} (${r.target.kind}, ${r.target.environment})`);
  field('expires', `${r.expiresAt}${s.status === 'pending' ? ` (${expiresIn(s, now)})` : ''}`);
  field('mode', r.mode === 'async' ? 'async (runnable once after approval)' : 'wait (the statement is held)');
  field('needs', `${r.requirement.approvals} approval${r.requirement.approvals === 1 ? '' : 's'} from ${r.requirement.approvers.join(' or ')}`);
  field('reason', r.reason !== undefined ? `${oneLine(r.reason)}  (the agent's words)` : '(the agent gave none)');
  field('policies', r.policies.length ? r.policies.map((p) => oneLine(p)).join(', ') : '-');
  if (r.policyReason !== undefined) field('policy says', oneLine(r.policyReason));
  field('command', oneLine(r.statement.command));
  field('tables', r.statement.tables.length ? r.statement.tables.map((t) => oneLine(t)).join(', ') : '-');
  field('risks', r.statement.risks.length ? r.statement.risks.map((t) => oneLine(t)).join(', ') : '-');
  field('fingerprint', oneLine(r.statement.fingerprint));
  field('digest', oneLine(r.statement.digest));
  lines.push('  statement:');
  for (const l of r.statement.text.split('\n')) lines.push(`    ${clean(l)}`);
  lines.push(s.votes.length ? '  votes:' : '  votes:       none yet');
  for (const v of s.votes) lines.push(`    ${v.at}  ${oneLine(v.approverId)}  ${v.choice} (${oneLine(v.channel)})${v.reason !== undefined ? `: ${oneLine(v.reason)}` : ''}`);
  if (s.decidedAt !== undefined) field('decided', `${s.decidedAt}${s.outcomeReason !== undefined ? `: ${oneLine(s.outcomeReason)}` : ''}`);
  if (s.executedAt !== undefined) field('executed', s.executedAt);
  return lines.join('\n');
}

function expiresIn(s: ApprovalState, now: number): string {
  const left = Date.parse(s.request.expiresAt) - now;
  return left <= 0 ? 'overdue' : `in ${duration(left)}`;
}

/** 42s, 3m12s, 2h05m, 3d04h. */
function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, '0')}h`;
}

/**
 * Statements, reasons and names come from agents: control characters (terminal escapes) and
 * bidirectional overrides (text that reads differently than it runs) are shown escaped, never sent.
 */
function clean(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One line of at most `max` characters, tabs and newlines shown as spaces. */
function oneLine(text: string, max = Infinity): string {
  const flat = clean(text.replace(/[\t\n]+/g, ' ').trim());
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

function out(text: string): void {
  process.stdout.write(text + '\n');
}

