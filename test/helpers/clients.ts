/**
 * Helpers for end-to-end tests that drive real PostgreSQL clients (psql, pgbench, psycopg2, JDBC,
 * node-postgres) once directly against the target and once through Warden, then compare.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { listSessions, readSessionEvents, type SessionSummary } from '../../adapters/local/audit-sink.ts';
import type { AuditEvent, AuditEventOf } from '../../core/audit/events.ts';
import { TARGET_PASSWORD, TARGET_USER, type TestWarden } from './warden.ts';

// ---- processes ------------------------------------------------------------------------------------

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout as received (for output that is not UTF-8). */
  stdoutBytes: Buffer;
  durationMs: number;
  timedOut: boolean;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  /** Written to stdin, then stdin is closed (stdin is closed at once when absent). */
  input?: string | Buffer;
  cwd?: string;
  /** Kills the process (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
}

export interface Running {
  child: ChildProcess;
  /** Settles when the process has exited and its output streams have closed. */
  done: Promise<RunResult>;
}

/** Starts a process with captured output and a hard timeout. */
export function start(cmd: string, args: readonly string[], o: RunOptions = {}): Running {
  const started = Date.now();
  const child = spawn(cmd, args, {
    cwd: o.cwd,
    env: { ...process.env, ...o.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (c: Buffer) => out.push(c));
  child.stderr!.on('data', (c: Buffer) => err.push(c));
  child.stdin!.on('error', () => undefined);
  if (o.input !== undefined) child.stdin!.end(o.input);
  else child.stdin!.end();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, o.timeoutMs ?? 30_000);
  const done = new Promise<RunResult>((resolve, reject) => {
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stdoutBytes: Buffer.concat(out),
        stderr: Buffer.concat(err).toString('utf8'),
        durationMs: Date.now() - started,
        timedOut,
      });
    });
  });
  return { child, done };
}

/** Runs a process to completion; never throws for a non-zero exit (check `code`). */
export function run(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  return start(cmd, args, o).done;
}

/** Formats a result for assertion messages. */
export function describeRun(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ' TIMED OUT' : ''} after ${r.durationMs} ms\n--- stdout\n${r.stdout.slice(-4000)}\n--- stderr\n${r.stderr.slice(-4000)}`;
}

// ---- finding binaries -------------------------------------------------------------------------------

function executable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The absolute path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const p = join(dir, name);
    if (executable(p)) return p;
  }
  return undefined;
}

/** PostgreSQL client binaries of the newest installed version (/usr/lib/postgresql/N/bin), else PATH. */
export function findPgBinary(name: string): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
    for (const v of versions) {
      const p = join(root, v, 'bin', name);
      if (executable(p)) return p;
    }
  }
  return which(name);
}

export const pgbenchPath = (): string | undefined => findPgBinary('pgbench');
export const psqlPath = (): string | undefined => findPgBinary('psql');

/** The system python (Debian's, where apt installs python3-psycopg2), if psycopg2 imports there. */
export function pythonWithPsycopg2(): string | undefined {
  for (const p of ['/usr/bin/python3', which('python3')]) {
    if (!p || !executable(p)) continue;
    const r = spawnSync(p, ['-c', 'import psycopg2'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0) return p;
  }
  return undefined;
}

export const PGJDBC_JAR = '/usr/share/java/postgresql.jar';

// ---- connection parameters --------------------------------------------------------------------------

export interface Endpoint {
  label: 'direct' | 'warden';
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** The target itself, as the role Warden logs in with. */
export function directEndpoint(w: TestWarden): Endpoint {
  return { label: 'direct', host: '127.0.0.1', port: w.pg.port, user: TARGET_USER, password: TARGET_PASSWORD, database: 'appdb' };
}

/** Warden, with a fresh token for `sub` as the password. */
export async function wardenEndpoint(w: TestWarden, sub: string): Promise<Endpoint> {
  return { label: 'warden', host: '127.0.0.1', port: w.port, user: sub, password: await w.token(sub), database: 'appdb' };
}

/** libpq conninfo (without the password) plus the PGPASSWORD env. */
export function libpq(e: Endpoint, extra = ''): { conninfo: string; env: Record<string, string | undefined> } {
  return {
    conninfo: `host=${e.host} port=${e.port} user=${e.user} dbname=${e.database} ${extra}`.trim(),
    env: { ...CLEAN_PG_ENV, PGPASSWORD: e.password },
  };
}

/** Unsets the libpq variables of the developer's environment that would change what the clients do. */
export const CLEAN_PG_ENV: Record<string, string | undefined> = Object.fromEntries(
  ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSSLMODE', 'PGSERVICE', 'PGSERVICEFILE', 'PGOPTIONS', 'PGAPPNAME', 'PGTZ', 'PGDATESTYLE', 'PGCLIENTENCODING', 'PGPASSFILE', 'PGCONNECT_TIMEOUT'].map((k) => [k, undefined]),
);

// ---- audit trail --------------------------------------------------------------------------------------

export type StatementEvent = AuditEventOf<'statement'>;
export type StatementEndEvent = AuditEventOf<'statement.end'>;

export interface RecordedStatement {
  statement: StatementEvent;
  end: StatementEndEvent | undefined;
}

export interface SessionRecord {
  summary: SessionSummary;
  events: AuditEvent[];
  /** Statement events paired with their statement.end, in statement order. */
  statements: RecordedStatement[];
}

function subjectOf(s: SessionSummary): string | undefined {
  return s.principal?.subject ?? s.startupUser;
}

/**
 * Ended sessions of `sub` in start order, waiting (up to `timeoutMs`) until at least `atLeast` of them
 * have ended; Warden seals a session shortly after the client disconnects.
 */
export async function sessionsOf(w: TestWarden, sub: string, o: { atLeast?: number; timeoutMs?: number } = {}): Promise<SessionRecord[]> {
  const atLeast = o.atLeast ?? 1;
  const deadline = Date.now() + (o.timeoutMs ?? 5000);
  for (;;) {
    const ended = (await listSessions(w.loaded.auditDir)).filter((s) => subjectOf(s) === sub && s.endTime !== undefined);
    if (ended.length >= atLeast || Date.now() > deadline) {
      if (ended.length < atLeast) throw new Error(`expected ${atLeast} ended session(s) of ${sub} in the audit trail, found ${ended.length}`);
      return Promise.all(ended.map((s) => loadSession(w, s)));
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The latest ended session of `sub`. */
export async function latestSession(w: TestWarden, sub: string, timeoutMs?: number): Promise<SessionRecord> {
  const all = await sessionsOf(w, sub, timeoutMs === undefined ? {} : { timeoutMs });
  return all[all.length - 1]!;
}

async function loadSession(w: TestWarden, summary: SessionSummary): Promise<SessionRecord> {
  const trail = await readSessionEvents(w.loaded.auditDir, summary.sessionId);
  const ends = new Map<number, StatementEndEvent>();
  const statements: RecordedStatement[] = [];
  for (const ev of trail.events) {
    if (ev.type === 'statement.end') ends.set(ev.statementId, ev);
  }
  for (const ev of trail.events) {
    if (ev.type === 'statement') statements.push({ statement: ev, end: ends.get(ev.statementId) });
  }
  return { summary, events: trail.events, statements };
}

/** The recorded statements whose text matches (substring or regexp), in order. */
export function findStatements(s: SessionRecord, text: string | RegExp): RecordedStatement[] {
  return s.statements.filter((r) => (typeof text === 'string' ? r.statement.text.includes(text) : text.test(r.statement.text)));
}

/** Compact view of a session's statements for assertion messages. */
export function describeStatements(s: SessionRecord): string {
  return s.statements
    .map(
      (r) =>
        `#${r.statement.statementId} ${r.statement.protocol} ${JSON.stringify(r.statement.text.slice(0, 120))}${r.statement.params ? ` params=${JSON.stringify(r.statement.params).slice(0, 80)}` : ''} -> ${r.end ? `${r.end.outcome} ${r.end.command ?? ''} rows=${r.end.rows ?? '-'}${r.end.sqlstate ? ` ${r.end.sqlstate}` : ''}` : 'NO END'}`,
    )
    .join('\n');
}

/** Every statement event has its statement.end. */
export function unendedStatements(s: SessionRecord): RecordedStatement[] {
  return s.statements.filter((r) => !r.end);
}
