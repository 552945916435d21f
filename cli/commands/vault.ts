/**
 * `warden vault reveal|list`: the forensic vault, for an operator who holds the vault key.
 *
 * `reveal` is itself audited, fail closed: it decrypts and verifies the whole record, then writes a
 * `vault.reveal` event durably in an audit session of its own (sealed at once), and only then prints.
 * If the audit trail cannot be written, nothing is printed and the exit code is 1.
 *
 * The audit sink has no lock between processes: like every writer of the local audit dir, `reveal`
 * must not run while a gateway writes the same audit dir (see LocalAuditSink).
 */
import { action, operatorAuditDir } from './audit.ts';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../adapters/local/audit-sink.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { listVaultRecords, loadVaultKey, LocalForensicVault, vaultDir, vaultKeyPath } from '../../adapters/local/forensic-vault.ts';
import type { VaultRecordInfo } from '../../adapters/local/forensic-vault.ts';
import { asSessionId } from '../../core/audit/events.ts';
import type { SessionId, VaultRevealFields } from '../../core/audit/events.ts';
import type { VaultCell, VaultRecord } from '../../core/masking/forensic-vault.ts';

export class VaultCliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultCliError';
  }
}

export function registerVaultCommands(program: Command, getConfig: () => LoadedConfig): Command {
  const vault = program
    .command('vault')
    .description('the forensic vault: originals of masked values, sealed per statement (reveal is audited)');

  vault
    .command('reveal')
    .description("print the originals of a statement's masked cells; the reveal is recorded in the audit trail first")
    .argument('<session-id>', 'the agent session (as in `warden audit sessions`)')
    .argument('<statement-id>', 'the statement number within the session', parsePositiveInt)
    .option('--key <file>', 'vault key file (default: <stateDir>/vault.key)')
    .option('--as <operator>', 'who is revealing, for the audit trail (default: the OS user)')
    .option('--reason <text>', 'why, for the audit trail (e.g. an incident number)')
    .option('--json', 'print the record and its cells as JSON')
    .action(
      action(async (sessionArg: string, statementId: number, opts: { key?: string; as?: string; reason?: string; json?: boolean }) => {
        const loaded = getConfig();
        const key = await loadVaultKey(opts.key ?? vaultKeyPath(loaded.stateDir));
        const record = await new LocalForensicVault({ dir: vaultDir(loaded.stateDir), key }).read(sessionArg, statementId);
        const osUser = currentOsUser();
        const operator = { issuer: `local:${hostname()}`, subject: opts.as ?? osUser };
        const fields: VaultRevealFields = {
          recordSessionId: record.meta.sessionId,
          recordStatementId: record.meta.statementId,
          recordId: record.ref.id,
          recordSha256: record.ref.sha256,
          cells: record.ref.cells,
          operator,
          osUser,
          ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
        };
        const auditSessionId = await recordReveal(loaded, record, fields);
        await write(opts.json ? JSON.stringify(revealJson(record, auditSessionId), null, 2) + '\n' : formatReveal(record, auditSessionId));
      }),
    );

  vault
    .command('list')
    .description('list sealed records (ids, cells, sizes, creation times) without decrypting them')
    .argument('[session-id]', 'only the records of this agent session')
    .option('--json', 'print the records as JSON')
    .action(
      action(async (sessionArg: string | undefined, opts: { json?: boolean }) => {
        const dir = vaultDir(getConfig().stateDir);
        const records = await listVaultRecords(dir, sessionArg);
        if (opts.json) return write(JSON.stringify(records, null, 2) + '\n');
        if (records.length === 0) return write(`no vault records${sessionArg ? ` for session ${sessionArg}` : ''} in ${dir}\n`);
        await write(
          table(
            ['SESSION', 'STATEMENT', 'RECORD', 'CELLS', 'BYTES', 'CREATED', 'TARGET', 'AGENT'],
            records.map((r) => [
              r.sessionId,
              String(r.statementId),
              r.id ?? '-',
              r.cells !== undefined ? String(r.cells) : '-',
              String(r.bytes),
              r.createdAt ?? '-',
              r.target ?? '-',
              r.principal?.subject ?? '-',
            ]),
          ) +
            '\n' +
            problems(records),
        );
      }),
    );

  return vault;
}

/**
 * Writes the reveal to the audit trail: a new session (start, vault.reveal, end, seal), every event
 * durable before this resolves. Throws VaultCliError when any of it fails: the caller prints nothing.
 */
async function recordReveal(loaded: LoadedConfig, record: VaultRecord, fields: VaultRevealFields): Promise<SessionId> {
  const started = Date.now();
  const sessionId = asSessionId(`vault-reveal-${started.toString(36)}-${randomBytes(4).toString('hex')}`);
  let sink: LocalAuditSink | null = null;
  let failure: unknown = null;
  try {
    const signing = await loadOrCreateAuditSigningKey(loaded.stateDir);
    sink = await LocalAuditSink.open({ dir: operatorAuditDir(loaded.auditDir), readOnlyWindowMs: loaded.config.audit.readOnlyWindowMs, signingKey: signing.privateKey, keyId: signing.keyId });
    const session = sink.openSession(sessionId, {
      // SessionStartFields describe a client connection; for an operator action: the record's
      // protocol and target, the operator as the startup user, and a local source.
      protocol: 'postgres',
      source: { address: 'local', port: 0 },
      listener: 'cli:vault-reveal',
      tls: false,
      target: record.meta.target,
      startupUser: fields.operator.subject,
    });
    await session.ready;
    await session.append({ type: 'vault.reveal', ...fields }, { durable: true });
    await session.end({ reason: 'client_terminate', statements: 0, bytesFromClient: 0, bytesToClient: 0, durationMs: Date.now() - started });
  } catch (err) {
    failure = err;
  }
  try {
    await sink?.close();
  } catch (err) {
    failure ??= err;
  }
  if (failure !== null) {
    throw new VaultCliError(`cannot record the reveal in the audit trail (${operatorAuditDir(loaded.auditDir)}), so nothing is shown: ${(failure as Error).message}`, { cause: failure });
  }
  return sessionId;
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

function revealJson(record: VaultRecord, auditSessionId: SessionId): unknown {
  return {
    record: { ...record.meta, id: record.ref.id, cells: record.ref.cells, bytes: record.ref.bytes, sha256: record.ref.sha256 },
    auditSessionId,
    cells: record.cells,
  };
}

function formatReveal(record: VaultRecord, auditSessionId: SessionId): string {
  const { meta, ref } = record;
  const head =
    `vault record ${meta.sessionId}/${meta.statementId}: target '${meta.target}', agent ${meta.principal.subject} @ ${meta.principal.issuer}, created ${meta.createdAt}\n` +
    `${ref.cells} cells, record ${ref.id}, sha256 ${ref.sha256}; reveal recorded in audit session ${auditSessionId}\n`;
  if (record.cells.length === 0) return head;
  // Originals are printed as JSON strings: a value could hold newlines or terminal escape sequences.
  return head + '\n' + table(['ROW', 'COLUMN', 'SOURCE / DETECTOR', 'ORIGINAL'], record.cells.map(cellRow)) + '\n';
}

function cellRow(c: VaultCell): string[] {
  return [
    String(c.row),
    `${JSON.stringify(c.columnName).slice(1, -1)} (#${c.column})`,
    c.source !== undefined ? JSON.stringify(c.source).slice(1, -1) : c.detector !== undefined ? `detector:${c.detector}` : '-',
    c.original === null ? 'NULL' : JSON.stringify(c.original),
  ];
}

function problems(records: VaultRecordInfo[]): string {
  return records
    .filter((r) => r.problem)
    .map((r) => `! ${r.file}: ${r.problem}\n`)
    .join('');
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h) => h.length);
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length))); // no spread: rows may be millions
  const fmt = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

/** Writes to stdout in slices, waiting for the pipe to drain (a record may hold millions of cells). */
async function write(text: string): Promise<void> {
  const SLICE = 1 << 20;
  for (let i = 0; i < text.length; i += SLICE) {
    if (!process.stdout.write(text.slice(i, i + SLICE))) await new Promise<void>((r) => process.stdout.once('drain', r));
  }
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

