/**
 * `warden revocations list`, `warden revoke`, `warden unrevoke`: the embedded default's revocation list
 * (`revocations.file`, default `<stateDir>/revocations.json`), which a running gateway watches: a revoke
 * refuses the identity's new logins and ends its live sessions within about a second.
 *
 * The file is replaced atomically (temp file + rename) under a lock file, so two operators never lose
 * each other's change and the gateway never reads half a file. Every revoke and unrevoke, including one
 * that changes nothing, is an `identity.revocation` event in the operators' audit trail, in an audit
 * session of its own (sealed at once). The session is opened before the file is touched, so a trail that
 * cannot be written changes nothing (fail closed): an unaudited unrevoke would restore access silently.
 *
 * With `--aws` (or `--aws-table <name>`) the commands work on an AWS deployment's revocation table
 * instead (cli/aws/revocation-table.ts, loaded only then), which the proxy tasks read every 15 s by
 * default; the change is still recorded in the local operators' trail, the same way.
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { withFileLock } from '../../adapters/local/approval-files.ts';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../adapters/local/audit-sink.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { readRevocationFile, revocationsFilePath, writeRevocationFile } from '../../adapters/local/revocation-file.ts';
import { asSessionId } from '../../core/audit/events.ts';
import type { IdentityRevocationFields, SessionId } from '../../core/audit/events.ts';
import type { SessionAudit } from '../../core/audit/ports.ts';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
import type { RevokedIdentity } from '../../core/identity/revocation.ts';
import { MAX_REVOCATION_FIELD_CHARS, withoutRevocation, withRevocation } from '../../core/identity/revocation-document.ts';
import type { RevocationTable } from '../aws/revocation-table.ts';
import { action, operatorAuditDir } from './audit.ts';

export class RevocationsCliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RevocationsCliError';
  }
}

interface TableOptions {
  aws?: boolean;
  awsTable?: string;
}

interface ChangeOptions extends TableOptions {
  issuer: string;
  sub: string;
  reason?: string;
  as?: string;
}

const ISSUER_HELP = "the token issuer, exactly as in the tokens' `iss` (and in `warden audit show`)";
const SUB_HELP = 'the subject, exactly as the identity is mapped (the `sub` claim unless identity.claims.subject says otherwise)';
const AS_HELP = 'who is acting, for the audit trail and the list (default: the OS user)';
const AWS_HELP = "an AWS deployment's revocation table instead of the local file (region and credentials from the AWS SDK's usual chain)";
const AWS_TABLE_HELP = 'the AWS revocation table (stack output RevocationsTable; given on the command line it implies --aws)';

/** --aws and --aws-table, on each command that reads or changes the list. */
function withTableOptions(command: Command): Command {
  return command.option('--aws', AWS_HELP).addOption(new Option('--aws-table <name>', AWS_TABLE_HELP).env(AwsEnvironment.revocationsTable));
}

/**
 * The AWS table the options name, or undefined for the local file. The environment variable only names
 * the table: it never switches from the file to AWS by itself.
 */
async function openTable(opts: TableOptions, command: Command): Promise<RevocationTable | undefined> {
  if (!opts.aws && command.getOptionValueSource('awsTable') !== 'cli') return undefined;
  if (!opts.awsTable) throw new RevocationsCliError(`with --aws, give --aws-table or set ${AwsEnvironment.revocationsTable} (stack output RevocationsTable)`);
  const { revocationTable } = await import('../aws/revocation-table.ts');
  return revocationTable(opts.awsTable);
}

async function withTable(opts: TableOptions, command: Command, fn: (table: RevocationTable | undefined) => Promise<void>): Promise<void> {
  const table = await openTable(opts, command);
  try {
    await fn(table);
  } finally {
    table?.close();
  }
}

export function registerRevocationCommands(program: Command, getConfig: () => LoadedConfig): void {
  const list = program
    .command('revocations')
    .description('the identities that may no longer connect (revoke / unrevoke change it; both are audited)')
    .command('list')
    .description('list revoked identities (issuer, subject, when, by whom, why)')
    .option('--json', 'print the list as JSON');
  withTableOptions(list).action(
    action(async (opts: TableOptions & { json?: boolean }, command: Command) =>
      withTable(opts, command, async (aws) => {
        let revoked: readonly RevokedIdentity[];
        let where: string;
        if (aws) {
          const read = await aws.list();
          revoked = read.revoked;
          where = `table ${aws.tableName}`;
          for (const bad of read.invalid) {
            process.stderr.write(`warning: item ${oneLine(JSON.stringify(bad.identity) ?? '?')} is not a revocation (${oneLine(bad.problem)}); proxy tasks cannot read the table while it is there and refuse every login after a minute\n`);
          }
          if (read.invalid.length > 0) process.exitCode = 1;
        } else {
          where = revocationsFilePath(getConfig());
          revoked = (await readRevocationFile(where)).revoked;
        }
        if (opts.json) return out(JSON.stringify(revoked, null, 2));
        if (revoked.length === 0) return out(`no revoked identities in ${where}`);
        out(
          table(
            ['ISSUER', 'SUBJECT', 'REVOKED AT', 'BY', 'REASON'],
            revoked.map((e) => [oneLine(e.issuer), oneLine(e.subject), e.revokedAt, e.revokedBy !== undefined ? oneLine(e.revokedBy) : '-', e.reason !== undefined ? oneLine(e.reason) : '-']),
          ),
        );
      }),
    ),
  );

  const revoke = program
    .command('revoke')
    .description("revoke an identity: its new logins are refused and a running gateway ends its live sessions (audited)")
    .requiredOption('--issuer <url>', ISSUER_HELP, identifier)
    .requiredOption('--sub <subject>', SUB_HELP, identifier)
    .requiredOption('--reason <text>', 'why (kept in the list and the audit trail; never shown to the agent)', reasonText)
    .option('--as <operator>', AS_HELP, identifier);
  withTableOptions(revoke).action(
    action(async (opts: ChangeOptions, command: Command) => withTable(opts, command, async (aws) => change(getConfig(), 'revoke', opts, aws))),
  );

  const unrevoke = program
    .command('unrevoke')
    .description('lift a revocation: the identity may log in again (audited)')
    .requiredOption('--issuer <url>', ISSUER_HELP, identifier)
    .requiredOption('--sub <subject>', SUB_HELP, identifier)
    .option('--reason <text>', 'why, for the audit trail', reasonText)
    .option('--as <operator>', AS_HELP, identifier);
  withTableOptions(unrevoke).action(
    action(async (opts: ChangeOptions, command: Command) => withTable(opts, command, async (aws) => change(getConfig(), 'unrevoke', opts, aws))),
  );
}

/** Changes the local file, or `aws` (an AWS deployment's table) when given. */
async function change(loaded: LoadedConfig, verb: 'revoke' | 'unrevoke', opts: ChangeOptions, aws: RevocationTable | undefined): Promise<void> {
  const path = revocationsFilePath(loaded);
  const osUser = currentOsUser();
  const operator = { issuer: `local:${hostname()}`, subject: opts.as ?? osUser };
  // The local configuration's issuers say nothing about a deployment's (its configuration lives in the stack).
  const known = configuredIssuers(loaded);
  if (!aws && !known.includes(opts.issuer)) {
    process.stderr.write(`warning: ${JSON.stringify(opts.issuer)} is not a configured issuer (${known.map((i) => JSON.stringify(i)).join(', ') || 'none'}); the entry only matches tokens whose iss is exactly this\n`);
  }
  const result = await withOperatorTrail(loaded, osUser, async (trail) => {
    const entry: RevokedIdentity = { issuer: opts.issuer, subject: opts.sub, revokedAt: new Date().toISOString(), ...(opts.reason !== undefined ? { reason: opts.reason } : {}), revokedBy: operator.subject };
    const outcome = aws
      ? await (verb === 'revoke' ? aws.revoke(entry) : aws.unrevoke(opts.issuer, opts.sub))
      : await withFileLock(
          `${path}.lock`,
          async () => {
            const doc = await readRevocationFile(path).catch((err: unknown) => {
              throw new RevocationsCliError(`${(err as Error).message}; fix or remove the file first (the gateway refuses every login while it is invalid)`, { cause: err });
            });
            if (verb === 'revoke') {
              const r = withRevocation(doc, entry);
              if (r.changed) await writeRevocationFile(path, r.doc);
              return { changed: r.changed, existing: r.existing };
            }
            const r = withoutRevocation(doc, opts.issuer, opts.sub);
            if (r.changed) await writeRevocationFile(path, r.doc);
            return { changed: r.changed, existing: undefined };
          },
          { staleMs: 30_000, timeoutMs: 60_000 },
        );
    const fields: IdentityRevocationFields = {
      action: verb,
      identity: { issuer: opts.issuer, subject: opts.sub },
      changed: outcome.changed,
      operator,
      osUser,
      ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
    };
    try {
      await trail.append({ type: 'identity.revocation', ...fields }, { durable: true });
    } catch (err) {
      throw new RevocationsCliError(`${outcome.changed ? `the ${verb} took effect` : 'nothing changed'}, but recording it in the audit trail failed: ${(err as Error).message}`, { cause: err });
    }
    return outcome;
  });

  const who = `${oneLine(opts.sub)} @ ${oneLine(opts.issuer)}`;
  const recorded = `recorded in audit session ${result.sessionId} (warden audit --operator show ${result.sessionId})`;
  const where = aws ? ` in table ${aws.tableName}` : '';
  if (verb === 'revoke') {
    if (!result.value.changed) {
      const e = result.value.existing;
      return out(`${who} is revoked already${where}${e ? ` (since ${e.revokedAt}${e.revokedBy !== undefined ? ` by ${oneLine(e.revokedBy)}` : ''})` : ''}; nothing changed; ${recorded}`);
    }
    if (aws) return out(`revoked ${who}${where}: the proxy tasks refuse its new logins and end its live sessions at their next read of the table (every 15 s by default); ${recorded}`);
    return out(`revoked ${who}: new logins are refused and a running gateway ends its live sessions; ${recorded}`);
  }
  if (!result.value.changed) return out(`${who} is not revoked${where}; nothing changed; ${recorded}`);
  if (aws) return out(`unrevoked ${who}${where}: it may log in again once the proxy tasks next read the table (every 15 s by default); ${recorded}`);
  out(`unrevoked ${who}: it may log in again; ${recorded}`);
}

/** Issuers a token may come from under this configuration (the development issuer's URL included). */
function configuredIssuers(loaded: LoadedConfig): string[] {
  const { identity } = loaded.config;
  const out = identity.issuers.map((i) => i.issuer);
  if (identity.devIssuer.enabled) out.push(`http://${identity.devIssuer.host}:${identity.devIssuer.port}`);
  return out;
}

/**
 * Opens an audit session in the operators' trail, runs `fn`, then ends and seals the session. The
 * operators' commands share one writer lock on that folder (the audit sink allows one writer per folder).
 * Nothing has changed when the session cannot be opened, and the error says so.
 */
async function withOperatorTrail<T>(loaded: LoadedConfig, osUser: string, fn: (trail: SessionAudit) => Promise<T>): Promise<{ value: T; sessionId: SessionId }> {
  const dir = operatorAuditDir(loaded.auditDir);
  const started = Date.now();
  const sessionId: SessionId = asSessionId(`revocation-${started.toString(36)}-${randomBytes(4).toString('hex')}`);
  let acting = false;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const value = await withFileLock(
      join(dir, '.writer.lock'),
      async () => {
        const signing = await loadOrCreateAuditSigningKey(loaded.stateDir);
        const sink = await LocalAuditSink.open({ dir, readOnlyWindowMs: loaded.config.audit.readOnlyWindowMs, signingKey: signing.privateKey, keyId: signing.keyId });
        let result: { ok: true; value: T } | { ok: false; error: unknown };
        try {
          const session = sink.openSession(sessionId, {
            // SessionStartFields describe a client connection; for an operator's change: no target, the
            // OS account as the startup user, and a local source.
            protocol: 'postgres',
            source: { address: 'local', port: 0 },
            listener: 'cli:revocations',
            tls: false,
            target: '-',
            startupUser: osUser,
          });
          await session.ready;
          acting = true;
          try {
            result = { ok: true, value: await fn(session) };
          } catch (err) {
            result = { ok: false, error: err };
          }
          await session.end({ reason: 'client_terminate', statements: 0, bytesFromClient: 0, bytesToClient: 0, durationMs: Date.now() - started }).catch((err: unknown) => {
            if (result.ok) result = { ok: false, error: new RevocationsCliError(`the change was made, but sealing its audit session ${sessionId} in ${dir} failed: ${(err as Error).message}`, { cause: err }) };
          });
        } finally {
          await sink.close().catch(() => undefined);
        }
        if (!result.ok) throw result.error;
        return result.value;
      },
      { staleMs: 30_000, timeoutMs: 60_000 },
    );
    return { value, sessionId };
  } catch (err) {
    if (acting) throw err;
    throw new RevocationsCliError(`cannot record the change in the audit trail (${dir}), so nothing was changed: ${(err as Error).message}`, { cause: err });
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

// --- arguments and output --------------------------------------------------------------------

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

/** An issuer, subject or operator name: what a verified identity could be, nothing that spoofs a terminal. */
function identifier(value: string): string {
  if (value.length === 0 || value.length > MAX_REVOCATION_FIELD_CHARS) throw new InvalidArgumentError(`expected 1 to ${MAX_REVOCATION_FIELD_CHARS} characters`);
  if (CONTROL.test(value)) throw new InvalidArgumentError('control or bidirectional characters are not allowed');
  return value;
}

function reasonText(value: string): string {
  const v = value.trim();
  if (v.length === 0 || v.length > 4096) throw new InvalidArgumentError('expected 1 to 4096 characters');
  return v;
}

/** One line, control characters shown escaped (entries may have been written by hand). */
function oneLine(text: string): string {
  return text
    .replace(/[\t\n]+/g, ' ')
    .replace(new RegExp(CONTROL.source, 'g'), (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

function out(text: string): void {
  process.stdout.write(text + '\n');
}
