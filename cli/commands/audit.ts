/**
 * `warden audit ...`: list, show and verify the audit trail: the local one, or with --aws an AWS
 * deployment's (DynamoDB and S3; cli/aws/audit-source.ts, loaded only then, so the local commands
 * never load the AWS SDK). Both are read through an AuditTrailSource (audit-source.ts) and printed and
 * verified by the same code below.
 * Action handlers are async: run the program with parseAsync().
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { join } from 'node:path';
import { isSessionId } from '../../core/audit/events.ts';
import type { AuditEvent, SessionId } from '../../core/audit/events.ts';
import { verifyChainLines } from '../../core/audit/hash-chain.ts';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
import { auditKeyPaths } from '../../adapters/local/audit-sink.ts';
import type { SessionSummary } from '../../adapters/local/audit-sink.ts';
import { localTrailSource } from './audit-source.ts';
import type { AuditTrailSource, SealKeyLookup, SourceTrail } from './audit-source.ts';

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
 * `<state>/audit`); `verify --public-key <file>` overrides both. With `--aws` it is the public half
 * of the KMS key named by `--signing-key`.
 */
export function registerAuditCommands(program: Command, getSessionsDir: () => string, getStateDir?: () => string): Command {
  const defaultKeyPath = (): string => (getStateDir ? auditKeyPaths(getStateDir()).publicKeyPath : join(getSessionsDir(), PUBLIC_KEY_FILE));

  const audit = program
    .command('audit')
    .description('inspect and verify the tamper-evident audit trail of gateway sessions')
    .option('--operator', "the operators' trail (vault reveals, approval votes, revocations) instead of the gateway sessions'")
    .option('--aws', "an AWS deployment's trail (DynamoDB and S3; region and credentials from the AWS SDK's usual chain) instead of the local one")
    .addOption(new Option('--sessions-table <name>', 'with --aws: the sessions table (stack output SessionsTable)').env(AwsEnvironment.auditSessionsTable))
    .addOption(new Option('--events-table <name>', 'with --aws: the events table (stack output EventsTable)').env(AwsEnvironment.auditEventsTable))
    .addOption(new Option('--recordings-bucket <name>', 'with --aws: the recordings bucket (stack output RecordingsBucket)').env(AwsEnvironment.recordingsBucket))
    .addOption(new Option('--signing-key <arn>', 'with --aws: the KMS key that signs seals (stack output SigningKeyArn)').env(AwsEnvironment.auditSigningKeyArn));
  /** Operator actions have a trail of their own beside the gateway's (each writer owns its folder). */
  const getAuditDir = (): string => (audit.opts<AuditOptions>().operator ? operatorAuditDir(getSessionsDir()) : getSessionsDir());

  /** The trail the options name; `publicKey` is verify's --public-key. Close it when done. */
  const openSource = async (publicKey?: string): Promise<AuditTrailSource> => {
    const o = audit.opts<AuditOptions>();
    if (!o.aws) {
      const stray = AWS_OPTIONS.filter((a) => audit.getOptionValueSource(a.key) === 'cli').map((a) => a.flag);
      if (stray.length > 0) throw new AuditCliError(`${stray.join(', ')} ${stray.length > 1 ? 'need' : 'needs'} --aws`);
      return localTrailSource(getAuditDir(), { path: publicKey ?? defaultKeyPath(), required: publicKey !== undefined });
    }
    if (o.operator) throw new AuditCliError("--operator and --aws cannot be combined: the operators' trail is local");
    if (publicKey !== undefined) throw new AuditCliError('with --aws, seals are checked with the KMS key of --signing-key, not --public-key');
    const need = (key: AwsOptionKey): string => {
      const v = o[key];
      if (v) return v;
      const a = AWS_OPTIONS.find((x) => x.key === key)!;
      throw new AuditCliError(`with --aws, give ${a.flag} or set ${a.env} (stack output ${a.output})`);
    };
    const location = { sessionsTable: need('sessionsTable'), eventsTable: need('eventsTable'), recordingsBucket: need('recordingsBucket') };
    const { awsTrailSource } = await import('../aws/audit-source.ts');
    return awsTrailSource({ ...location, ...(o.signingKey ? { signingKeyId: o.signingKey } : {}) });
  };
  const withSource = async (publicKey: string | undefined, fn: (source: AuditTrailSource) => Promise<void>): Promise<void> => {
    const source = await openSource(publicKey);
    try {
      await fn(source);
    } finally {
      source.close();
    }
  };

  audit
    .command('sessions')
    .description('list recorded sessions, newest first')
    .option('--json', 'print the sessions as JSON')
    .option('--limit <n>', 'show at most n sessions', parsePositiveInt, 50)
    .action(
      action(async (opts: { json?: boolean; limit: number }) =>
        withSource(undefined, async (source) => printSessions(source, await source.listSessions(), opts)),
      ),
    );

  audit
    .command('show')
    .description("print a session's events: statements with their decision, text, parameters and outcome")
    .argument('<session-id>', 'session id (a unique prefix is enough)')
    .option('--json', 'print the raw events as JSON')
    .action(
      action(async (idArg: string, opts: { json?: boolean }) =>
        withSource(undefined, async (source) => {
          const sessionId = await resolveSessionId(source, idArg);
          printTrail(source, await source.readSession(sessionId), opts);
        }),
      ),
    );

  audit
    .command('verify')
    .description(
      "check a session's hash chain and its signed seal (exit code 1 when broken); with --aws also that its S3 recording holds the same events and seal",
    )
    .argument('[session-id]', 'session id (a unique prefix is enough)')
    .option('--all', 'verify every recorded session (with --aws this scans the events table for sessions missing from the sessions table)')
    .option('--public-key <file>', 'PEM public key for the seal signature (default: the state dir key; not with --aws)')
    .action(
      action(async (idArg: string | undefined, opts: { all?: boolean; publicKey?: string }) => {
        if (!opts.all && !idArg) throw new AuditCliError('give a session id or --all');
        await withSource(opts.publicKey, async (source) => {
          const seal = await source.sealKey();
          const index = new Map((await source.listSessions()).map((s) => [s.sessionId as string, s]));
          const ids = opts.all ? [...new Set([...index.keys(), ...(await source.allSessionIds())])].sort() : [await resolveSessionId(source, idArg!)];
          let failures = 0;
          const counts = { ok: 0, unsealed: 0, broken: 0 };
          for (const id of ids) {
            const r = await verifySession(source, id as SessionId, index.get(id), seal);
            counts[r.status]++;
            if (r.status === 'broken' || r.incomplete) failures++;
            out(opts.all ? `${id}: ${r.line}` : r.line);
          }
          if (opts.all) out(`${ids.length} sessions: ${counts.ok} sealed and intact, ${counts.unsealed} unsealed, ${counts.broken} broken`);
          if (failures > 0) process.exitCode = 1;
        });
      }),
    );

  return audit;
}

interface AuditOptions {
  operator?: boolean;
  aws?: boolean;
  sessionsTable?: string;
  eventsTable?: string;
  recordingsBucket?: string;
  signingKey?: string;
}

type AwsOptionKey = 'sessionsTable' | 'eventsTable' | 'recordingsBucket' | 'signingKey';

/** The options naming an AWS deployment's trail, and where their defaults come from. */
const AWS_OPTIONS: readonly { key: AwsOptionKey; flag: string; env: string; output: string }[] = [
  { key: 'sessionsTable', flag: '--sessions-table', env: AwsEnvironment.auditSessionsTable, output: 'SessionsTable' },
  { key: 'eventsTable', flag: '--events-table', env: AwsEnvironment.auditEventsTable, output: 'EventsTable' },
  { key: 'recordingsBucket', flag: '--recordings-bucket', env: AwsEnvironment.recordingsBucket, output: 'RecordingsBucket' },
  { key: 'signingKey', flag: '--signing-key', env: AwsEnvironment.auditSigningKeyArn, output: 'SigningKeyArn' },
];

interface VerifyOutcome {
  status: 'ok' | 'unsealed' | 'broken';
  line: string;
  /** Intact, but the seal signature could not be checked. */
  incomplete?: boolean;
}

/**
 * One session's verdict: the chain (core's verifier, with the seal's signature when there is a key),
 * the source's payload errors, the index's record of how the session ended, then the source's own
 * cross-checks.
 */
async function verifySession(
  source: AuditTrailSource,
  sessionId: SessionId,
  indexed: SessionSummary | undefined,
  seal: SealKeyLookup,
): Promise<VerifyOutcome> {
  const { key } = seal;
  const broken = (seq: number, reason: string): VerifyOutcome => ({ status: 'broken', line: `BROKEN at seq ${seq}: ${reason}` });
  let trail: SourceTrail;
  try {
    trail = await source.readSession(sessionId);
  } catch (err) {
    if ((err as { notFound?: boolean }).notFound) return broken(0, source.missingTrail(sessionId));
    throw err;
  }
  const payloadError = (seq: number): string | undefined => {
    const e = trail.payloadErrors?.find((p) => p.seq === seq);
    return e && `stored event ${e.key || `#${seq}`}: ${e.error}`;
  };
  const r = verifyChainLines(trail.lines, key?.publicKey, { requireSeal: false, ...(key ? { keyId: key.keyId } : {}) });
  if (!r.ok) {
    const cause = payloadError(r.brokenAt);
    return broken(r.brokenAt, cause ? `${r.reason} (${cause})` : r.reason);
  }
  const firstPayloadError = trail.payloadErrors?.[0];
  if (firstPayloadError) return broken(firstPayloadError.seq, payloadError(firstPayloadError.seq)!);
  const n = r.count;
  // The index is not signed, but it still catches a trail cut off together with its seal.
  if (indexed?.eventCount !== undefined) {
    if (!r.sealed) return broken(n, `missing seal: the index records that the session ended with ${indexed.eventCount} events`);
    const lastHash = trail.events[n - 1]?.hash;
    if (indexed.eventCount !== n || (indexed.lastHash !== undefined && indexed.lastHash !== lastHash)) {
      return broken(Math.min(n, indexed.eventCount), `the index records ${indexed.eventCount} events ending in ${indexed.lastHash ?? '?'}, the file has ${n} ending in ${lastHash}`);
    }
  }
  if (r.sealed && trail.torn) return broken(n, `${trail.torn.bytes} bytes of data after the seal`);
  const cross = await source.crossCheck?.(trail, { count: n, sealed: r.sealed }, key);
  if (cross) return broken(cross.seq, cross.reason);
  if (r.sealed) {
    if (!seal.key) return { status: 'ok', incomplete: true, line: `UNVERIFIED: ${n} events, chain intact, sealed, but the seal signature was not checked: ${seal.missing}` };
    return { status: 'ok', line: `OK: ${n} events, chain intact, sealed` };
  }
  const tornNote = trail.torn ? ` (torn last line: ${trail.torn.bytes} bytes ignored)` : '';
  return { status: 'unsealed', line: `OK: ${n} events, chain intact, unsealed${tornNote}` };
}

/** Exact id, or a unique prefix of a recorded session id. */
async function resolveSessionId(source: AuditTrailSource, arg: string): Promise<SessionId> {
  const known = await source.knownSessionIds();
  if (isSessionId(arg) && known.includes(arg)) return arg;
  const matches = known.filter((id) => id.startsWith(arg));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw new AuditCliError(`session id prefix '${arg}' is ambiguous (${matches.length} sessions)`);
  throw new AuditCliError(`no audit trail for session '${arg}' in ${source.where}`);
}

// --- formatting ------------------------------------------------------------------------------

/** `audit sessions`: newest first, at most `limit`. */
function printSessions(source: AuditTrailSource, all: SessionSummary[], opts: { json?: boolean; limit: number }): void {
  const sessions = all.reverse().slice(0, opts.limit);
  if (opts.json) {
    out(JSON.stringify(sessions, null, 2));
    return;
  }
  if (sessions.length === 0) {
    out(`no sessions recorded in ${source.where}`);
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
}

/** `audit show`: one line per event (statements with their text and parameters), then what is wrong with the stored trail. */
function printTrail(source: AuditTrailSource, trail: SourceTrail, opts: { json?: boolean }): void {
  const { sessionId, payloadErrors } = trail;
  if (opts.json) {
    const extra = payloadErrors ? { payloadErrors } : {};
    out(JSON.stringify({ sessionId, file: trail.file, events: trail.events, badLines: trail.badLines, torn: trail.torn, ...extra }, null, 2));
    return;
  }
  out(`session ${sessionId}  (${source.location(trail)}, ${trail.lines.length} events)`);
  for (const ev of trail.events) out(formatEvent(ev));
  for (const b of trail.badLines) out(`! line ${b.index + 1} is not valid JSON: ${b.error}`);
  for (const p of payloadErrors ?? []) out(`! event #${p.seq}${p.key ? ` (${p.key})` : ''}: ${p.error}`);
  if (trail.torn) out(`! torn last line (${trail.torn.bytes} bytes without newline; a crash during a write)`);
  if (!trail.events.some((e) => e.type === 'seal')) out('(no seal: the session is still open or the gateway stopped before it ended)');
}

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
