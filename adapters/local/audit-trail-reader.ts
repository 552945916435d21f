/**
 * Reading an audit dir back: one session's trail (readSessionEvents), the sessions of the index
 * (listSessions), the session ids on disk (listSessionFiles), each merged with journal.wal.
 *
 * The readers never write. They read journal.wal BEFORE the files: a checkpoint truncates the
 * journal only after the files hold (and fsynced) all of it, so whatever the journal held when it
 * was read is in the journal snapshot or in the files read afterwards. Right after a crash (even
 * without a restart) they therefore show every event that was durable; torn last lines are
 * reported (SessionTrail.torn), not fatal.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isSessionId } from '../../core/audit/events.ts';
import type { AuditEvent, Principal, SessionId } from '../../core/audit/events.ts';
import { mergeIndexJournal, mergeSessionJournal, readJournal } from './audit-journal.ts';
import type { JournalContents } from './audit-journal.ts';
import { sessionFileName } from './audit-layout.ts';

export class AuditReadError extends Error {
  readonly notFound: boolean;
  constructor(message: string, options?: { cause?: unknown; notFound?: boolean }) {
    super(message, options);
    this.name = 'AuditReadError';
    this.notFound = options?.notFound ?? false;
  }
}

export interface ReadOptions {
  /** A journal already read with readAuditJournal (to read many sessions with one journal read). */
  journal?: JournalContents;
}

/** Reads journal.wal of an audit dir, read-only (for ReadOptions.journal). */
export async function readAuditJournal(dir: string): Promise<JournalContents> {
  try {
    return await readJournal(dir);
  } catch (err) {
    throw new AuditReadError(`cannot read journal.wal: ${(err as Error).message}`, { cause: err });
  }
}

export interface SessionTrail {
  sessionId: SessionId;
  /** Path relative to the audit dir. */
  file: string;
  /**
   * Complete (newline-terminated) lines, without the newline, in file order, followed by the
   * journal's lines not yet in the file (durable events after a crash, before recovery).
   */
  lines: string[];
  /** Lines that parse as JSON objects, in file order (not verified: use verifyChainLines). */
  events: AuditEvent[];
  /** Complete lines that did not parse (corruption, not a crash). */
  badLines: { index: number; error: string }[];
  /** Trailing bytes without a newline that the journal does not supersede: a write torn by a crash. */
  torn: { bytes: number; text: string } | null;
  /** How many of `lines` come from the journal (0 once the files are complete). */
  fromJournal: number;
}

export async function readSessionEvents(dir: string, sessionId: SessionId | string, opts: ReadOptions = {}): Promise<SessionTrail> {
  if (!isSessionId(sessionId)) throw new AuditReadError(`invalid session id ${JSON.stringify(sessionId)}`);
  const file = sessionFileName(sessionId);
  const journal = opts.journal ?? (await readAuditJournal(dir));
  const journalLines = journal.sessions.get(sessionId) ?? [];
  let buf: Buffer | null;
  try {
    buf = await readFile(join(dir, file));
  } catch (err) {
    const notFound = (err as NodeJS.ErrnoException).code === 'ENOENT';
    if (!notFound || journalLines.length === 0) {
      throw new AuditReadError(notFound ? `no audit trail for session ${sessionId}` : `cannot read ${file}: ${(err as Error).message}`, {
        cause: err,
        notFound,
      });
    }
    buf = null; // created since the last checkpoint and lost in a crash: the journal has it
  }
  const merge = mergeSessionJournal(sessionId, buf, journalLines);
  const { lines, torn } = buf ? splitLines(buf.subarray(0, merge.keep)) : { lines: [], torn: null };
  for (const l of merge.append) lines.push(l);
  const events: AuditEvent[] = [];
  const badLines: { index: number; error: string }[] = [];
  lines.forEach((line, index) => {
    try {
      const v: unknown = JSON.parse(line);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
      events.push(v as AuditEvent);
    } catch (err) {
      badLines.push({ index, error: (err as Error).message });
    }
  });
  return { sessionId, file, lines, events, badLines, torn, fromJournal: merge.append.length };
}

/** Splits at '\n' only (JSON.stringify never emits a raw newline); the unterminated tail is torn. */
function splitLines(buf: Buffer): { lines: string[]; torn: { bytes: number; text: string } | null } {
  const end = buf.lastIndexOf(0x0a);
  const complete = end < 0 ? '' : buf.subarray(0, end).toString('utf8');
  const tail = buf.subarray(end + 1);
  return {
    lines: end < 0 ? [] : complete.split('\n'),
    torn: tail.length > 0 ? { bytes: tail.length, text: tail.toString('utf8') } : null,
  };
}

export interface SessionSummary {
  sessionId: SessionId;
  file: string;
  startTime?: string;
  endTime?: string;
  principal?: Principal;
  target?: string;
  source?: { address: string; port: number };
  protocol?: string;
  startupUser?: string;
  statements?: number;
  reason?: string;
  durationMs?: number;
  eventCount?: number;
  lastHash?: string;
}

/**
 * Sessions from index.jsonl (plus the journal's index lines not yet in it), start and end merged,
 * in start order. Unparseable lines are skipped.
 */
export async function listSessions(dir: string, opts: ReadOptions = {}): Promise<SessionSummary[]> {
  const journal = opts.journal ?? (await readAuditJournal(dir));
  let buf: Buffer | null;
  try {
    buf = await readFile(join(dir, 'index.jsonl'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditReadError(`cannot read index.jsonl: ${(err as Error).message}`, { cause: err });
    }
    buf = null;
  }
  const merge = mergeIndexJournal(buf, journal.index);
  const lines = merge.fileLines;
  for (const l of merge.append) lines.push(l);
  const byId = new Map<string, SessionSummary>();
  for (const line of lines) {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (rec === null || typeof rec !== 'object' || !isSessionId(rec.sessionId)) continue;
    const id = rec.sessionId;
    const sum: SessionSummary = byId.get(id) ?? { sessionId: id, file: sessionFileName(id) };
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
    const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
    if (rec.kind === 'start') {
      sum.startTime = str(rec.time);
      sum.protocol = str(rec.protocol);
      sum.startupUser = str(rec.startupUser);
    } else if (rec.kind === 'end') {
      sum.endTime = str(rec.time);
      if (rec.principal && typeof rec.principal === 'object') sum.principal = rec.principal as Principal;
      sum.eventCount = num(rec.eventCount);
      sum.lastHash = str(rec.lastHash);
      sum.statements = num(rec.statements);
      sum.reason = str(rec.reason);
      sum.durationMs = num(rec.durationMs);
    } else continue;
    sum.target ??= str(rec.target);
    if (!sum.source && rec.source && typeof rec.source === 'object') sum.source = rec.source as SessionSummary['source'];
    byId.set(id, sum);
  }
  return [...byId.values()].sort((a, b) => (a.startTime ?? a.endTime ?? '').localeCompare(b.startTime ?? b.endTime ?? ''));
}

/**
 * Session ids that have a file under sessions/ or lines in the journal (includes sessions missing
 * from the index).
 */
export async function listSessionFiles(dir: string, opts: ReadOptions = {}): Promise<SessionId[]> {
  const journal = opts.journal ?? (await readAuditJournal(dir));
  let names: string[];
  try {
    names = await readdir(join(dir, 'sessions'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditReadError(`cannot list sessions: ${(err as Error).message}`, { cause: err });
    }
    names = [];
  }
  const ids = new Set<SessionId>(
    names
      .filter((n) => n.endsWith('.jsonl'))
      .map((n) => n.slice(0, -'.jsonl'.length))
      .filter(isSessionId),
  );
  for (const id of journal.sessions.keys()) ids.add(id);
  return [...ids].sort();
}
