/**
 * `warden audit ...`: list, show and verify the local audit trail.
 * Action handlers are async: run the program with parseAsync().
 */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { isSessionId } from '../../core/audit/events.ts';
import type { AuditEvent, SessionId } from '../../core/audit/events.ts';
import { verifyChainLines } from '../../core/audit/hash-chain.ts';
import {
  auditKeyPaths,
  listSessionFiles,
  listSessions,
  loadAuditPublicKey,
  readSessionEvents,
  readAuditJournal,
} from '../../adapters/local/audit-sink.ts';
import type { JournalContents, SessionSummary, SessionTrail } from '../../adapters/local/audit-sink.ts';

export class AuditCliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditCliError';
  }
}

const PUBLIC_KEY_FILE = 'audit-signing-key.pub.pem';

/**
 * Adds `audit sessions|show|verify`. The seal's public key is read from
 * `${getStateDir()}/audit/audit-signing-key.pub.pem` when getStateDir is given, else from
 * `${getAuditDir()}/audit-signing-key.pub.pem` (the default layout, where the audit dir is
 * `<state>/audit`); `verify --public-key <file>` overrides both.
 */
export function registerAuditCommands(program: Command, getSessionsDir: () => string, getStateDir?: () => string): Command {
  const defaultKeyPath = (): string => (getStateDir ? auditKeyPaths(getStateDir()).publicKeyPath : join(getSessionsDir(), PUBLIC_KEY_FILE));

  const audit = program
    .command('audit')
    .description('inspect and verify the tamper-evident audit trail of gateway sessions')
    .option('--operator', "the operators' trail (vault reveals, approval votes, revocations) instead of the gateway sessions'");
  /** Operator actions have a trail of their own beside the gateway's (each writer owns its folder). */
  const getAuditDir = (): string => (audit.opts<{ operator?: boolean }>().operator ? operatorAuditDir(getSessionsDir()) : getSessionsDir());

  audit
    .command('sessions')
    .description('list recorded sessions, newest first')
    .option('--json', 'print the sessions as JSON')
    .option('--limit <n>', 'show at most n sessions', parsePositiveInt, 50)
    .action(
      action(async (opts: { json?: boolean; limit: number }) => {
        const all = await listSessions(getAuditDir());
        const sessions = all.reverse().slice(0, opts.limit);
        if (opts.json) {
          out(JSON.stringify(sessions, null, 2));
          return;
        }
        if (sessions.length === 0) {
          out(`no sessions recorded in ${getAuditDir()}`);
          return;
        }
        out(
          table(
            ['SESSION', 'START', 'END', 'PRINCIPAL', 'TARGET', 'SOURCE', 'STATEMENTS'],
            sessions.map((s) => [
              s.sessionId,
              shortTime(s.startTime),
              s.endTime ? shortTime(s.endTime) : '(open)',
              s.principal ? s.principal.subject : '-',
              s.target ?? '-',
              s.source ? hostPort(s.source.address, s.source.port) : '-',
              s.statements !== undefined ? String(s.statements) : '-',
            ]),
          ),
        );
        if (all.length > sessions.length) out(`(${all.length - sessions.length} older sessions not shown; use --limit)`);
      }),
    );

  audit
    .command('show')
    .description("print a session's events: statements with their decision, text, parameters and outcome")
    .argument('<session-id>', 'session id (a unique prefix is enough)')
    .option('--json', 'print the raw events as JSON')
    .action(
      action(async (idArg: string, opts: { json?: boolean }) => {
        const dir = getAuditDir();
        const sessionId = await resolveSessionId(dir, idArg);
        const trail = await readSessionEvents(dir, sessionId);
        if (opts.json) {
          out(JSON.stringify({ sessionId, file: trail.file, events: trail.events, badLines: trail.badLines, torn: trail.torn }, null, 2));
          return;
        }
        out(`session ${sessionId}  (${join(dir, trail.file)}, ${trail.lines.length} events)`);
        for (const ev of trail.events) out(formatEvent(ev));
        for (const b of trail.badLines) out(`! line ${b.index + 1} is not valid JSON: ${b.error}`);
        if (trail.torn) out(`! torn last line (${trail.torn.bytes} bytes without newline; a crash during a write)`);
        if (!trail.events.some((e) => e.type === 'seal')) out('(no seal: the session is still open or the gateway stopped before it ended)');
      }),
    );

  audit
    .command('verify')
    .description("check a session's hash chain and its signed seal (exit code 1 when broken)")
    .argument('[session-id]', 'session id (a unique prefix is enough)')
    .option('--all', 'verify every recorded session')
    .option('--public-key <file>', 'PEM public key for the seal signature (default: the state dir key)')
    .action(
      action(async (idArg: string | undefined, opts: { all?: boolean; publicKey?: string }) => {
        const dir = getAuditDir();
        if (!opts.all && !idArg) throw new AuditCliError('give a session id or --all');
        const keyPath = opts.publicKey ?? defaultKeyPath();
        const key = await loadAuditPublicKey(keyPath);
        if (opts.publicKey && !key) throw new AuditCliError(`public key ${keyPath} not found`);
        // The journal is read once for all sessions (it can hold megabytes while Warden runs).
        const journal = await readAuditJournal(dir);
        const index = new Map((await listSessions(dir, { journal })).map((s) => [s.sessionId as string, s]));
        const ids = opts.all
          ? [...new Set([...index.keys(), ...(await listSessionFiles(dir, { journal }))])].sort()
          : [await resolveSessionId(dir, idArg!)];
        let failures = 0;
        const counts = { ok: 0, unsealed: 0, broken: 0 };
        for (const id of ids) {
          const r = await verifySession(dir, id as SessionId, index.get(id), key, keyPath, journal);
          counts[r.status]++;
          if (r.status === 'broken' || r.incomplete) failures++;
          out(opts.all ? `${id}: ${r.line}` : r.line);
        }
        if (opts.all) out(`${ids.length} sessions: ${counts.ok} sealed and intact, ${counts.unsealed} unsealed, ${counts.broken} broken`);
        if (failures > 0) process.exitCode = 1;
      }),
    );

  return audit;
}

interface VerifyOutcome {
  status: 'ok' | 'unsealed' | 'broken';
  line: string;
  /** Intact, but the seal signature could not be checked. */
  incomplete?: boolean;
}

async function verifySession(
  dir: string,
  sessionId: SessionId,
  indexed: SessionSummary | undefined,
  key: { publicKey: KeyObject; keyId: string } | null,
  keyPath: string,
  journal: JournalContents,
): Promise<VerifyOutcome> {
  const broken = (seq: number, reason: string): VerifyOutcome => ({ status: 'broken', line: `BROKEN at seq ${seq}: ${reason}` });
  let trail: SessionTrail;
  try {
    trail = await readSessionEvents(dir, sessionId, { journal });
  } catch (err) {
    if ((err as { notFound?: boolean }).notFound) return broken(0, `audit file for session ${sessionId} is missing`);
    throw err;
  }
  const r = verifyChainLines(trail.lines, key?.publicKey, { requireSeal: false, ...(key ? { keyId: key.keyId } : {}) });
  if (!r.ok) return broken(r.brokenAt, r.reason);
  const n = r.count;
  // The index is not signed, but it still catches a trail cut off together with its seal.
  if (indexed?.eventCount !== undefined) {
    if (!r.sealed) return broken(n, `missing seal: the index records that the session ended with ${indexed.eventCount} events`);
    const lastHash = trail.events[n - 1]?.hash;
    if (indexed.eventCount !== n || (indexed.lastHash !== undefined && indexed.lastHash !== lastHash)) {
      return broken(Math.min(n, indexed.eventCount), `the index records ${indexed.eventCount} events ending in ${indexed.lastHash ?? '?'}, the file has ${n} ending in ${lastHash}`);
    }
  }
  if (r.sealed) {
    if (trail.torn) return broken(n, `${trail.torn.bytes} bytes of data after the seal`);
    if (!key) {
      return { status: 'ok', incomplete: true, line: `UNVERIFIED: ${n} events, chain intact, sealed, but the seal signature was not checked: no public key at ${keyPath}` };
    }
    return { status: 'ok', line: `OK: ${n} events, chain intact, sealed` };
  }
  const tornNote = trail.torn ? ` (torn last line: ${trail.torn.bytes} bytes ignored)` : '';
  return { status: 'unsealed', line: `OK: ${n} events, chain intact, unsealed${tornNote}` };
}

/** Exact id, or a unique prefix of a recorded session id. */
async function resolveSessionId(dir: string, arg: string): Promise<SessionId> {
  const files = await listSessionFiles(dir);
  const indexed = (await listSessions(dir)).map((s) => s.sessionId);
  const known = [...new Set<SessionId>([...files, ...indexed])];
  if (isSessionId(arg) && known.includes(arg)) return arg;
  const matches = known.filter((id) => id.startsWith(arg));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw new AuditCliError(`session id prefix '${arg}' is ambiguous (${matches.length} sessions)`);
  throw new AuditCliError(`no audit trail for session '${arg}' in ${dir}`);
}

// --- formatting ------------------------------------------------------------------------------

function formatEvent(ev: AuditEvent): string {
  const head = `${ev.time ?? '?'}  #${String(ev.seq).padEnd(4)} ${String(ev.type).padEnd(17)}`;
  const pad = ' '.repeat(head.length + 1);
  const more = (text: string): string => text.split('\n').map((l) => `\n${pad}${l}`).join('');
  switch (ev.type) {
    case 'session.start':
      return `${head} ${ev.protocol} from ${hostPort(ev.source?.address, ev.source?.port)} to target '${ev.target}' as '${ev.startupUser}' (listener ${ev.listener}${ev.tls ? ', tls' : ''})`;
    case 'auth.success':
      return `${head} ${ev.principal?.subject} @ ${ev.principal?.issuer} via ${ev.method}${ev.principal?.groups?.length ? ` (groups: ${ev.principal.groups.join(', ')})` : ''}`;
    case 'auth.failure':
      return `${head} ${ev.reason} (sqlstate ${ev.sqlstate}) claimed user '${ev.claimedUser}'${ev.subject ? `, subject ${ev.subject}` : ''}${ev.issuer ? ` @ ${ev.issuer}` : ''}: ${ev.detail}`;
    case 'upstream.connect':
      return `${head} ${ev.ok ? 'ok' : 'FAILED'} ${ev.target} -> ${hostPort(ev.host, ev.port)}/${ev.database}${ev.tls ? ' (tls)' : ''}${ev.error ? `: ${ev.error}` : ''}`;
    case 'statement': {
      const d = ev.decision ?? { effect: '?', policies: [] };
      const op = classificationOperation(ev.classification);
      let s = `${head} [${ev.statementId}] ${String(d.effect).toUpperCase()} ${op} (${ev.protocol}; policies: ${d.policies?.length ? d.policies.join(', ') : '-'}${d.policyVersion ? `; version ${d.policyVersion}` : ''})`;
      if (d.reason) s += more(`reason: ${d.reason}`);
      s += more(ev.text ?? '');
      if (ev.params?.length) s += more(`params: ${ev.params.map((p, i) => `$${i + 1}=${p === null ? 'NULL' : JSON.stringify(p)}`).join(' ')}`);
      return s;
    }
    case 'statement.end':
      return `${head} [${ev.statementId}] ${ev.outcome}${ev.command ? ` ${ev.command}` : ''}${ev.rows !== undefined ? `, rows ${ev.rows}` : ''}, ${ev.durationMs} ms${ev.sqlstate ? `, sqlstate ${ev.sqlstate}` : ''}${ev.error ? `: ${ev.error}` : ''}`;
    case 'session.end':
      return `${head} ${ev.reason}: ${ev.statements} statements, ${ev.bytesFromClient} bytes from client, ${ev.bytesToClient} bytes to client, ${ev.durationMs} ms`;
    case 'seal':
      return `${head} sealed events #0-#${ev.eventCount - 1} with key ${ev.keyId}`;
    default:
      return `${head} ${JSON.stringify(ev)}`;
  }
}

/** The classifier's output is opaque; show its operation when it names one. */
function classificationOperation(c: unknown): string {
  if (c && typeof c === 'object') {
    const o = c as Record<string, unknown>;
    for (const k of ['operation', 'kind', 'command', 'type']) if (typeof o[k] === 'string') return o[k] as string;
  }
  return '?';
}

function hostPort(address: string | undefined, port: number | undefined): string {
  if (address === undefined) return '?';
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function shortTime(iso: string | undefined): string {
  return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function out(text: string): void {
  process.stdout.write(text + '\n');
}

/** Reports errors on stderr with exit code 1 instead of throwing out of the action. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      process.stderr.write(`error: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  };
}

/** The operators' audit trail (vault reveals, approval votes, revocations), a folder of its own inside the audit folder. */
export function operatorAuditDir(auditDir: string): string {
  return join(auditDir, 'operator');
}
