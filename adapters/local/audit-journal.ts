/**
 * Write-ahead journal of the local audit sink: `${dir}/journal.wal`.
 *
 * One record per line: `<target>\t<line>\n`, where target is a session id (the line belongs to
 * `sessions/<id>.jsonl`) or `@index` (it belongs to `index.jsonl`), and `<line>` is the exact JSON
 * line of that file (JSON lines never contain a raw newline, tab or NUL). A commit round of the sink
 * appends all its records with ONE write and ONE fdatasync, whatever the number of sessions; the
 * same lines are then written to their files without fsync. A checkpoint fsyncs those files and
 * truncates the journal to 0 (AuditJournal.truncate).
 *
 * Reading rules (parseJournal), shared by recovery and by the read-only readers:
 *  - the records end at the last '\n'; a torn last record (crash mid-write) is ignored;
 *  - they also end before the first record that is malformed (no tab, unknown target, not a JSON
 *    object line) or holds a NUL byte (blocks a crash left as zeros): nothing after such a record
 *    was ever acknowledged, since rounds are written one after the other;
 *  - a session's journal lines are merged into its file after the file's last complete event
 *    (mergeSessionJournal: lines with a higher seq, each checked against its own hash);
 *  - `@index` lines are merged into index.jsonl when not already present (mergeIndexJournal).
 *
 * Recovery (recoverJournal, run by AuditJournal.open): applies those merges to the files, cutting
 * a torn tail off a file first, fsyncs what it touched, then truncates the journal. It is
 * idempotent: a crash during recovery leaves the journal intact and the next run gives the same
 * result.
 */
import { open as fsOpen, mkdir } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { isSessionId } from '../../core/audit/events.ts';
import type { SessionId } from '../../core/audit/events.ts';
import { hashEvent } from '../../core/audit/hash-chain.ts';

export const JOURNAL_FILE = 'journal.wal';
/** Journal target of index.jsonl lines (never a valid session id). */
export const INDEX_TARGET = '@index';
export const DEFAULT_JOURNAL_CHECKPOINT_BYTES = 16 * 1024 * 1024;
const FILE_MODE = 0o600;
const noop = (): void => {};

export type OpenFileFn = (path: string, flags: string, mode: number) => Promise<FileHandle>;
const defaultOpen: OpenFileFn = (p, f, m) => fsOpen(p, f, m);

export interface JournalRecord {
  /** A session id, or INDEX_TARGET. */
  target: SessionId | typeof INDEX_TARGET;
  /** The file line, without its newline. */
  line: string;
}

/** Encodes records as journal text (each record newline-terminated). */
export function encodeJournalRecords(records: readonly JournalRecord[]): string {
  let out = '';
  for (const r of records) out += `${r.target}\t${r.line}\n`;
  return out;
}

/**
 * Journal text for `lines` of one target, each of which already ends with '\n' (the sink's
 * buffered file lines): the same bytes as encodeJournalRecords, built with one join.
 */
export function journalChunk(target: SessionId | typeof INDEX_TARGET, terminatedLines: readonly string[]): string {
  if (terminatedLines.length === 0) return '';
  const prefix = target + '\t';
  return prefix + terminatedLines.join(prefix);
}

export interface RecoveryReport {
  /** Journal bytes found (including a torn or invalid tail). */
  journalBytes: number;
  /** Bytes after the last valid record that were ignored. */
  ignoredBytes: number;
  /** Session files that got lines back, or were created. */
  sessionsRepaired: number;
  /** Session lines appended from the journal. */
  sessionLines: number;
  /** index.jsonl lines appended from the journal. */
  indexLines: number;
  /** Torn or garbage bytes cut off the end of files. */
  cutBytes: number;
}

/**
 * The journal file, kept open. appendRound/appendEncoded: one write + one fdatasync. Not safe for
 * concurrent calls: the sink serializes rounds and checkpoints.
 */
export class AuditJournal {
  readonly path: string;
  private readonly fh: FileHandle;
  private bytes: number;
  /** What recovery found at open (null: the journal was empty). */
  readonly recovered: RecoveryReport | null;

  private constructor(path: string, fh: FileHandle, recovered: RecoveryReport | null) {
    this.path = path;
    this.fh = fh;
    this.bytes = 0;
    this.recovered = recovered;
  }

  /**
   * Opens (creating) `${dir}/journal.wal`, recovers whatever it holds into the session files and
   * index.jsonl (see recoverJournal) and returns it empty. The caller fsyncs `dir` (new file).
   */
  static async open(dir: string, opts: { openFile?: OpenFileFn } = {}): Promise<AuditJournal> {
    const path = join(dir, JOURNAL_FILE);
    const fh = await (opts.openFile ?? defaultOpen)(path, 'a+', FILE_MODE);
    try {
      const st = await fh.stat();
      let recovered: RecoveryReport | null = null;
      // Only a regular file holds records (a device, in fault-injection tests, reads forever).
      if (st.isFile() && st.size > 0) {
        const buf = await readExactly(fh, st.size);
        recovered = await recoverJournal(dir, buf);
        await fh.truncate(0);
        await fh.datasync();
      }
      return new AuditJournal(path, fh, recovered);
    } catch (err) {
      await fh.close().catch(noop);
      throw err;
    }
  }

  /** Bytes appended since the last truncate. */
  get size(): number {
    return this.bytes;
  }

  /** Appends the records of one round: one write, one fdatasync. */
  appendRound(records: readonly JournalRecord[]): Promise<void> {
    return this.appendEncoded(Buffer.from(encodeJournalRecords(records), 'utf8'));
  }

  /** Appends already encoded records (see journalChunk): one write, one fdatasync. */
  async appendEncoded(data: Buffer): Promise<void> {
    if (data.length === 0) return;
    // O_APPEND: the kernel places the write at the end, also right after a truncate.
    await writeAll(this.fh, data);
    this.bytes += data.length;
    await this.fh.datasync();
  }

  /** Empties the journal durably. Only once everything it holds is fsynced in its files. */
  async truncate(): Promise<void> {
    await this.fh.truncate(0);
    this.bytes = 0;
    await this.fh.datasync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

// --- reading and merging -------------------------------------------------------------------

export interface JournalContents {
  /** Journal lines of each session (without newline), in journal order. */
  sessions: Map<SessionId, string[]>;
  /** Journal lines of index.jsonl, in journal order. */
  index: string[];
  /** Bytes of valid records; whatever follows (torn or invalid) is ignored. */
  validBytes: number;
  totalBytes: number;
}

export const EMPTY_JOURNAL: JournalContents = Object.freeze({
  sessions: new Map<SessionId, string[]>(),
  index: [],
  validBytes: 0,
  totalBytes: 0,
}) as JournalContents;

/** Parses journal bytes into records (see the module doc for what ends them). */
export function parseJournal(buf: Buffer): JournalContents {
  let end = buf.lastIndexOf(0x0a) + 1;
  const nul = buf.indexOf(0);
  if (nul >= 0 && nul < end) end = nul === 0 ? 0 : buf.lastIndexOf(0x0a, nul - 1) + 1;
  const text = buf.toString('utf8', 0, end);
  const sessions = new Map<SessionId, string[]>();
  const index: string[] = [];
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    const tab = text.indexOf('\t', pos);
    if (nl < 0 || tab < 0 || tab > nl) break;
    const target = text.slice(pos, tab);
    // The line must at least look like a JSON object line; the merges check the rest.
    if (tab + 1 >= nl || text.charCodeAt(tab + 1) !== 0x7b || text.charCodeAt(nl - 1) !== 0x7d) break;
    const line = text.slice(tab + 1, nl);
    if (target === INDEX_TARGET) index.push(line);
    else if (isSessionId(target)) {
      const list = sessions.get(target);
      if (list) list.push(line);
      else sessions.set(target, [line]);
    } else break;
    pos = nl + 1;
  }
  const validBytes = pos === text.length ? end : Buffer.byteLength(text.slice(0, pos), 'utf8');
  return { sessions, index, validBytes, totalBytes: buf.length };
}

/**
 * Reads `${dir}/journal.wal` without writing anything (readers, the CLI, tests after a crash).
 * A missing journal reads as empty.
 */
export async function readJournal(dir: string): Promise<JournalContents> {
  let fh: FileHandle;
  try {
    fh = await fsOpen(join(dir, JOURNAL_FILE), 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_JOURNAL;
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size === 0) return EMPTY_JOURNAL;
    // A concurrent checkpoint may truncate while we read: we parse what we got.
    return parseJournal(await readExactly(fh, st.size));
  } finally {
    await fh.close().catch(noop);
  }
}

/**
 * Length of `file` up to the end of its last complete line, without trailing lines that hold a NUL
 * byte (blocks that were never written before a crash read as zeros). Our lines never contain NUL.
 */
export function intactLength(file: Buffer): number {
  let cut = file.lastIndexOf(0x0a) + 1;
  while (cut > 0) {
    const prev = cut >= 2 ? file.lastIndexOf(0x0a, cut - 2) + 1 : 0;
    const nul = file.indexOf(0, prev);
    if (nul < 0 || nul >= cut) break;
    cut = prev;
  }
  return cut;
}

export interface FileMerge {
  /** Bytes of the file to keep (the rest is a torn tail, superseded by the journal). */
  keep: number;
  /** Journal lines to add after them, in order (without newline). */
  append: string[];
}

/** seq of the last complete line of `text` that parses as an event of `sessionId`; -1 if none. */
function lastSeqOf(sessionId: string, file: Buffer, keep: number): number {
  let end = keep; // exclusive end of the current line's '\n'
  while (end > 0) {
    const start = end >= 2 ? file.lastIndexOf(0x0a, end - 2) + 1 : 0;
    const line = file.toString('utf8', start, end - 1);
    try {
      const ev = JSON.parse(line) as { sessionId?: unknown; seq?: unknown } | null;
      if (ev && typeof ev === 'object' && ev.sessionId === sessionId && Number.isSafeInteger(ev.seq)) return ev.seq as number;
    } catch {
      // a corrupt line: look further back
    }
    end = start;
  }
  return -1;
}

/**
 * The merge of a session's journal lines into its file (`file` null: the file is missing), the
 * one rule used by recovery (which applies it) and by the readers (which only show it):
 *  - no journal line: the file as it is;
 *  - else the file keeps its complete lines (intactLength: a torn tail is cut, the journal holds
 *    it) and gets, in journal order, the journal lines whose seq is higher than that of its last
 *    complete event. A journal line that does not parse, belongs to another session or does not
 *    match its own hash (a record torn by a concurrent checkpoint, seen by a live reader) ends the
 *    session's journal lines.
 */
export function mergeSessionJournal(sessionId: SessionId, file: Buffer | null, journalLines: readonly string[]): FileMerge {
  if (journalLines.length === 0) return { keep: file?.length ?? 0, append: [] };
  const keep = file ? intactLength(file) : 0;
  let last = file ? lastSeqOf(sessionId, file, keep) : -1;
  const append: string[] = [];
  for (const line of journalLines) {
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(line) as Record<string, unknown>;
      if (ev === null || typeof ev !== 'object' || ev.sessionId !== sessionId || !Number.isSafeInteger(ev.seq)) break;
      if (hashEvent(ev) !== ev.hash) break;
    } catch {
      break;
    }
    const seq = ev.seq as number;
    if (seq > last) {
      append.push(line);
      last = seq;
    }
  }
  return { keep, append };
}

export interface IndexMerge extends FileMerge {
  /** The file's complete lines within `keep` (decoded once, for the readers). */
  fileLines: string[];
}

/**
 * The merge of the journal's index lines into index.jsonl: with journal lines, the file keeps its
 * complete lines (a torn tail is cut) and gets those journal lines not already present (exact
 * comparison), in journal order. A journal line that is not a JSON object ends them.
 */
export function mergeIndexJournal(file: Buffer | null, journalLines: readonly string[]): IndexMerge {
  const keep = file ? (journalLines.length === 0 ? file.length : intactLength(file)) : 0;
  const end = file && keep > 0 ? file.lastIndexOf(0x0a, keep - 1) : -1;
  const fileLines = file && end >= 0 ? file.toString('utf8', 0, end).split('\n') : [];
  if (journalLines.length === 0) return { keep, append: [], fileLines };
  const missing = new Set<string>();
  for (const line of journalLines) {
    try {
      const v: unknown = JSON.parse(line);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) break;
    } catch {
      break;
    }
    missing.add(line);
  }
  // Journal lines, when present, are near the end of the file: look from there.
  for (let i = fileLines.length - 1; i >= 0 && missing.size > 0; i--) missing.delete(fileLines[i]!);
  const append = [...missing];
  return { keep, append, fileLines };
}

// --- recovery ------------------------------------------------------------------------------

/**
 * Replays journal bytes into the session files and index.jsonl under `dir` (see the merges), fsyncs
 * every file it touched (and the sessions dir when it created files). Does not truncate the
 * journal: the caller does that once this resolved.
 */
export async function recoverJournal(dir: string, journal: Buffer): Promise<RecoveryReport> {
  const contents = parseJournal(journal);
  const report: RecoveryReport = {
    journalBytes: contents.totalBytes,
    ignoredBytes: contents.totalBytes - contents.validBytes,
    sessionsRepaired: 0,
    sessionLines: 0,
    indexLines: 0,
    cutBytes: 0,
  };
  const sessionsDir = join(dir, 'sessions');
  let created = false;
  if (contents.sessions.size > 0) await mkdir(sessionsDir, { recursive: true, mode: 0o700 });
  for (const [id, lines] of contents.sessions) {
    const r = await repairFile(join(sessionsDir, `${id}.jsonl`), (buf) => mergeSessionJournal(id, buf, lines));
    if (r.created) created = true;
    if (r.created || r.appended > 0) report.sessionsRepaired++;
    report.sessionLines += r.appended;
    report.cutBytes += r.cut;
  }
  if (contents.index.length > 0) {
    const r = await repairFile(join(dir, 'index.jsonl'), (buf) => mergeIndexJournal(buf, contents.index));
    report.indexLines += r.appended;
    report.cutBytes += r.cut;
    if (r.created) await syncDir(dir);
  }
  if (created) await syncDir(sessionsDir);
  return report;
}

async function repairFile(
  path: string,
  merge: (file: Buffer | null) => FileMerge,
): Promise<{ created: boolean; appended: number; cut: number }> {
  let fh: FileHandle;
  let created = false;
  try {
    fh = await fsOpen(path, 'r+');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    fh = await fsOpen(path, 'wx+', FILE_MODE);
    created = true;
  }
  try {
    const { size } = await fh.stat();
    const buf = created ? null : await readExactly(fh, size);
    const { keep, append } = merge(buf);
    const cut = size - keep;
    if (cut > 0) await fh.truncate(keep);
    if (append.length > 0) {
      const data = Buffer.from(append.join('\n') + '\n', 'utf8');
      let off = 0;
      while (off < data.length) {
        const { bytesWritten } = await fh.write(data, off, data.length - off, keep + off);
        off += bytesWritten;
      }
    }
    if (created || cut > 0 || append.length > 0) await fh.datasync();
    return { created, appended: append.length, cut };
  } finally {
    await fh.close().catch(noop);
  }
}

// --- small fs helpers shared with the sink -------------------------------------------------

async function readExactly(fh: FileHandle, size: number): Promise<Buffer> {
  const buf = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const { bytesRead } = await fh.read(buf, off, size - off, off);
    if (bytesRead === 0) break; // shrank meanwhile (a concurrent truncate)
    off += bytesRead;
  }
  return off === size ? buf : buf.subarray(0, off);
}

export async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

/** fsyncs a directory (new or removed entries); a no-op where directories cannot be synced. */
export async function syncDir(path: string): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await fsOpen(path, 'r');
  } catch (err) {
    // Directories cannot be opened for sync on some platforms (Windows).
    if (process.platform === 'win32') return;
    throw err;
  }
  try {
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw err;
  } finally {
    await fh.close().catch(noop);
  }
}
