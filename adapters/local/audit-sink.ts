/**
 * Local-disk audit sink: one append-only JSONL file per session plus an index, written through a
 * write-ahead journal.
 *
 * Layout under `dir`:
 *   sessions/<sessionId>.jsonl  one event per line (the chained event's JSON)
 *   index.jsonl                 one line when a session starts and one when it ends
 *   journal.wal                 write-ahead journal: `<sessionId or @index>\t<line>` (audit-journal.ts)
 *
 * Group commit through the journal: append() only chains the event (hash computed synchronously)
 * and buffers the line in memory. A single committer runs rounds; a round takes every buffered
 * line of every session plus the index lines, appends them to journal.wal with ONE write and ONE
 * fdatasync (the only disk wait on the critical path, whatever the number of sessions), resolves
 * every waiting promise, and only then writes the same lines to their session files and
 * index.jsonl without fsync: a single writer batches the rounds of the last `fileWriteDelayMs`
 * (default 20) into one write per file, in order per file (flush() and checkpoints do not wait for
 * the delay). A durable append asks for a round at once; while a round
 * runs, further requests coalesce into one next round. Non-durable events are committed by a timer
 * at most `readOnlyWindowMs` after they were appended (earlier if a durable round happens first).
 *
 * Session files are fdatasync'ed when their session ends (after the seal is written, off the
 * critical path) and at checkpoints. A checkpoint runs when the journal exceeds
 * `journalCheckpointBytes` and at close(): rounds wait while it fdatasyncs every session file and
 * index.jsonl with unsynced writes (and the sessions dir for new files) and then truncates the
 * journal. open() replays a non-empty journal into the files first (crash recovery), and the
 * readers (audit-trail-reader.ts) merge the journal read-only, so right after a crash (even without
 * a restart) they show every event that was durable.
 *
 * Loss window on a crash (process or machine): non-durable events appended within the last
 * readOnlyWindowMs plus about one round (a journal write + fdatasync) may be lost; a durable event
 * whose promise resolved is in the journal or its fsynced file, never lost. The files themselves
 * may lag behind the journal (by fileWriteDelayMs while running; after a machine crash, by
 * everything since the last checkpoint): read them with the readers (audit-trail-reader.ts), or
 * open() the sink once, never raw. Torn last lines are possible after a crash; the readers and the
 * recovery tolerate them.
 *
 * Fail closed: a journal write or fsync error marks the whole sink failed; waiting and all later
 * appends reject with AuditWriteError (non-durable appends that already resolved cannot be
 * recalled: they are lost with the failure). A session-file or index write/fsync error after the
 * journal was durable fails the sink too (the journal could no longer be truncated safely); the
 * journal then keeps its content for the recovery at the next open(). Failing to create one
 * session's file fails only that session. Going over maxPendingBytes rejects the append without
 * failing the sink. One sink per directory: two processes must not share an audit dir.
 *
 * This module also re-exports the readers (audit-trail-reader.ts), the signing key
 * (audit-signing-key.ts), the options and defaults (audit-sink-options.ts) and sessionFileName
 * (audit-layout.ts), so callers can keep importing everything audit-related from here.
 */
import { mkdir, open as fsOpen } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { isAuditEventType, isLifecycleEventType, isSessionId } from '../../core/audit/events.ts';
import type {
  AuditEvent,
  AuditEventBody,
  Principal,
  SessionEndFields,
  SessionId,
  SessionStartFields,
} from '../../core/audit/events.ts';
import { chainEvent, chainEventLine, makeSealBody } from '../../core/audit/hash-chain.ts';
import type { ChainLink } from '../../core/audit/hash-chain.ts';
import { AuditWriteError } from '../../core/audit/ports.ts';
import type { AuditSink, SessionAudit } from '../../core/audit/ports.ts';
import {
  AuditJournal,
  DEFAULT_JOURNAL_CHECKPOINT_BYTES,
  INDEX_TARGET,
  journalChunk,
  syncDir,
  writeAll,
} from './audit-journal.ts';
import type { RecoveryReport } from './audit-journal.ts';
import { DIR_MODE, FILE_MODE, sessionFileName } from './audit-layout.ts';
import { AuditKeyError } from './audit-signing-key.ts';
import { DEFAULT_FILE_WRITE_DELAY_MS, DEFAULT_MAX_PENDING_BYTES, DEFAULT_READ_ONLY_WINDOW_MS } from './audit-sink-options.ts';
import type { AuditSinkStats, LocalAuditSinkOptions } from './audit-sink-options.ts';

export { DEFAULT_JOURNAL_CHECKPOINT_BYTES } from './audit-journal.ts';
export type { JournalContents, RecoveryReport } from './audit-journal.ts';
export { sessionFileName } from './audit-layout.ts';
export { DEFAULT_FILE_WRITE_DELAY_MS, DEFAULT_MAX_PENDING_BYTES, DEFAULT_READ_ONLY_WINDOW_MS } from './audit-sink-options.ts';
export type { AuditSinkStats, LocalAuditSinkOptions } from './audit-sink-options.ts';
export { AuditReadError, listSessionFiles, listSessions, readAuditJournal, readSessionEvents } from './audit-trail-reader.ts';
export type { ReadOptions, SessionSummary, SessionTrail } from './audit-trail-reader.ts';
export { AuditKeyError, auditKeyId, auditKeyPaths, loadAuditPublicKey, loadOrCreateAuditSigningKey } from './audit-signing-key.ts';
export type { AuditSigningKey } from './audit-signing-key.ts';

/** Lines waiting for their files beyond which they are written without waiting for the delay. */
const FILE_WRITE_BATCH_BYTES = 1024 * 1024;
const RESOLVED: Promise<void> = Promise.resolve();
const noop = (): void => {};

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  /** Set when the waiter only depends on one session (its open may fail alone). */
  session?: SessionState;
  /** flush(): also wait until the lines are written to their files. */
  written?: boolean;
}

interface SessionState {
  id: SessionId;
  start: SessionStartFields;
  handle: Promise<FileHandle>;
  /** The handle, once a round has seen it open. */
  fh: FileHandle | null;
  /** The file was just created: its directory entry still needs an fsync (at a checkpoint). */
  newFile: boolean;
  /** Lines (each with its '\n') not yet in the journal. */
  buf: string[];
  bufBytes: number;
  indexBuf: string[];
  last: ChainLink;
  ended: boolean;
  /** The seal went to the journal: the lines queued for the file are its last ones. */
  sealJournaled: boolean;
  failed: AuditWriteError | null;
  principal?: Principal;
}

interface BatchItem {
  s: SessionState;
  lines: string[];
  bytes: number;
  /** The session had ended when its lines were taken: they include the seal, the file's last line. */
  final: boolean;
}

/** Lines durable in the journal, waiting to be written to one file (each with its '\n'). */
interface FileQueue {
  lines: string[];
}

export class LocalAuditSink implements AuditSink {
  private readonly sessionsDir: string;
  private readonly windowMs: number;
  private readonly maxPendingBytes: number;
  private readonly checkpointBytes: number;
  private readonly fileWriteDelayMs: number;
  private readonly signingKey: KeyObject;
  private readonly keyId: string;
  private readonly openFile: (path: string, flags: string, mode: number) => Promise<FileHandle>;
  private readonly indexHandle: FileHandle;
  private readonly journal: AuditJournal;

  /** Sessions that can still append (not ended, not failed). */
  private readonly sessions = new Map<SessionId, SessionState>();
  /** Sessions whose file handle is (or may be) open. */
  private readonly files = new Set<SessionState>();
  private readonly dirty = new Set<SessionState>();
  private waiters: Waiter[] = [];
  /** Waiters of the round whose journal write is in flight. */
  private inflight: Waiter[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private committing = false;
  private commitLoop: Promise<void> = RESOLVED;
  private commitAgain = false;
  private commitScheduled = false;
  private failure: AuditWriteError | null = null;
  private closing = false;
  private closePromise: Promise<void> | null = null;

  // File writes after the journal (the "apply" side).
  private fileQueue = new Map<SessionState, FileQueue>();
  private indexQueue: string[] = [];
  private unwrittenBytes = 0;
  private applying: Promise<void> | null = null;
  private writeTimer: NodeJS.Timeout | null = null;
  /** A checkpoint waits for the file writes: no delay between batches. */
  private writeUrgent = false;
  private applyGen = 0;
  private appliedGen = 0;
  private applyWaiters: { gen: number; w: Waiter }[] = [];
  // Writes not yet fsynced: what the next checkpoint must sync before truncating the journal.
  private readonly unsynced = new Set<SessionState>();
  private indexUnsynced = false;
  private dirUnsynced = false;
  private readonly endSyncs = new Set<Promise<void>>();

  private readonly counters = { commits: 0, fsyncs: 0, bytes: 0, fileBytes: 0, checkpoints: 0, events: 0 };
  /** What the recovery at open() replayed from the journal (null: the journal was empty). */
  readonly recovery: RecoveryReport | null;

  private constructor(opts: LocalAuditSinkOptions, indexHandle: FileHandle, journal: AuditJournal) {
    this.sessionsDir = join(opts.dir, 'sessions');
    this.windowMs = opts.readOnlyWindowMs ?? DEFAULT_READ_ONLY_WINDOW_MS;
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.checkpointBytes = opts.journalCheckpointBytes ?? DEFAULT_JOURNAL_CHECKPOINT_BYTES;
    this.fileWriteDelayMs = opts.fileWriteDelayMs ?? DEFAULT_FILE_WRITE_DELAY_MS;
    this.signingKey = opts.signingKey;
    this.keyId = opts.keyId;
    this.openFile = opts.openFile ?? ((p, f, m) => fsOpen(p, f, m));
    this.indexHandle = indexHandle;
    this.journal = journal;
    this.recovery = journal.recovered;
  }

  /**
   * Creates the directories, replays a non-empty journal into the files (crash recovery), opens
   * index.jsonl (terminating a torn last line the journal did not cover) and returns the sink.
   */
  static async open(opts: LocalAuditSinkOptions): Promise<LocalAuditSink> {
    if (opts.signingKey.type !== 'private' || opts.signingKey.asymmetricKeyType !== 'ed25519') {
      throw new AuditKeyError('signingKey must be an Ed25519 private key');
    }
    const sessionsDir = join(opts.dir, 'sessions');
    try {
      await mkdir(sessionsDir, { recursive: true, mode: DIR_MODE });
      const journal = await AuditJournal.open(opts.dir, opts.openFile ? { openFile: opts.openFile } : {});
      let index: FileHandle | null = null;
      try {
        index = await (opts.openFile ?? fsOpen)(join(opts.dir, 'index.jsonl'), 'a+', FILE_MODE);
        const { size } = await index.stat();
        if (size > 0) {
          const last = Buffer.alloc(1);
          await index.read(last, 0, 1, size - 1);
          // A fragment the journal did not hold (not ours): end it so our first line is not glued onto it.
          if (last[0] !== 0x0a) {
            await index.write('\n');
            await index.datasync();
          }
        }
        await syncDir(opts.dir);
      } catch (err) {
        await index?.close().catch(noop);
        await journal.close().catch(noop);
        throw err;
      }
      return new LocalAuditSink(opts, index, journal);
    } catch (err) {
      throw new AuditWriteError(`cannot open audit dir ${opts.dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  stats(): AuditSinkStats {
    return {
      ...this.counters,
      pendingBytes: this.pendingBytes,
      unwrittenBytes: this.unwrittenBytes,
      journalBytes: this.journal.size,
      openSessions: this.sessions.size,
      failed: this.failure !== null,
    };
  }

  openSession(sessionId: SessionId, start: SessionStartFields, opts: { durable?: boolean } = {}): SessionAudit {
    const unusable = this.unusableError();
    if (unusable) throw unusable;
    if (!isSessionId(sessionId)) throw new AuditWriteError(`invalid session id ${JSON.stringify(sessionId)}`);
    if (this.sessions.has(sessionId)) throw new AuditWriteError(`audit session ${sessionId} is already open`);
    const ev = chainEvent(null, { type: 'session.start', ...start }, { sessionId });
    const line = JSON.stringify(ev) + '\n';
    const bytes = Buffer.byteLength(line);
    if (this.heldBytes() + bytes > this.maxPendingBytes) {
      throw new AuditWriteError(`audit buffer full (${this.heldBytes()} bytes pending): refusing new session`);
    }
    // 'ax': append-only, and never mix two chains in one file.
    const handle = this.openFile(join(this.sessionsDir, `${sessionId}.jsonl`), 'ax', FILE_MODE);
    const s: SessionState = {
      id: sessionId,
      start,
      handle,
      fh: null,
      newFile: true,
      buf: [],
      bufBytes: 0,
      indexBuf: [],
      last: ev,
      ended: false,
      sealJournaled: false,
      failed: null,
    };
    handle.catch((err: unknown) => {
      s.failed = new AuditWriteError(`cannot create audit file for session ${sessionId}: ${(err as Error).message}`, { cause: err });
    });
    this.sessions.set(sessionId, s);
    this.files.add(s);
    s.indexBuf.push(
      JSON.stringify({
        sessionId,
        kind: 'start',
        time: ev.time,
        target: start.target,
        source: start.source,
        protocol: start.protocol,
        listener: start.listener,
        startupUser: start.startupUser,
        tls: start.tls,
        file: sessionFileName(sessionId),
      }) + '\n',
    );
    this.enqueue(s, line, bytes);
    const ready = this.settle(s, opts.durable ?? true);
    ready.catch(noop);
    const sink = this;
    return {
      sessionId,
      ready,
      append: (body, o) => sink.append(s, body, o.durable),
      end: (fields) => sink.end(s, fields),
    };
  }

  /** Hot path: synchronous chaining and buffering; no await for non-durable events. */
  private append(s: SessionState, body: AuditEventBody, durable: boolean): Promise<void> {
    const unusable = this.unusableError() ?? this.sessionError(s);
    if (unusable) return Promise.reject(unusable);
    const type: unknown = (body as { type?: unknown }).type;
    if (!isAuditEventType(type) || isLifecycleEventType(type)) {
      return Promise.reject(new AuditWriteError(`cannot append an event of type ${JSON.stringify(type)}`));
    }
    let link: ChainLink;
    let line: string;
    try {
      ({ link, line } = chainEventLine(s.last, body, { sessionId: s.id }));
      line += '\n';
    } catch (err) {
      return Promise.reject(new AuditWriteError(`cannot encode audit event: ${(err as Error).message}`, { cause: err }));
    }
    const bytes = Buffer.byteLength(line);
    if (this.heldBytes() + bytes > this.maxPendingBytes) {
      return Promise.reject(new AuditWriteError(`audit buffer full (${this.heldBytes()} bytes pending, limit ${this.maxPendingBytes})`));
    }
    s.last = link;
    if (body.type === 'auth.success') s.principal = body.principal;
    this.enqueue(s, line, bytes);
    return this.settle(s, durable);
  }

  private end(s: SessionState, fields: SessionEndFields): Promise<void> {
    const unusable = this.unusableError() ?? this.sessionError(s);
    if (unusable) return Promise.reject(unusable);
    let endEv: AuditEvent;
    let seal: AuditEvent;
    try {
      endEv = chainEvent(s.last, { type: 'session.end', ...fields }, { sessionId: s.id });
      seal = chainEvent(endEv, makeSealBody(endEv, this.signingKey, this.keyId), { sessionId: s.id });
    } catch (err) {
      return Promise.reject(new AuditWriteError(`cannot seal audit session ${s.id}: ${(err as Error).message}`, { cause: err }));
    }
    s.last = seal;
    s.ended = true;
    // No pending-bytes limit here: the end and seal are small and must not be dropped.
    const endLine = JSON.stringify(endEv) + '\n';
    const sealLine = JSON.stringify(seal) + '\n';
    this.enqueue(s, endLine, Buffer.byteLength(endLine));
    this.enqueue(s, sealLine, Buffer.byteLength(sealLine));
    s.indexBuf.push(
      JSON.stringify({
        sessionId: s.id,
        kind: 'end',
        time: seal.time,
        principal: s.principal,
        target: s.start.target,
        source: s.start.source,
        file: sessionFileName(s.id),
        eventCount: seal.seq + 1,
        lastHash: seal.hash,
        reason: fields.reason,
        statements: fields.statements,
        durationMs: fields.durationMs,
      }) + '\n',
    );
    return this.settle(s, true);
  }

  /** Resolves once everything appended before is durable and written to its file (not fsynced). */
  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failedError());
    if (this.dirty.size === 0 && !this.committing && !this.commitScheduled && this.applying === null && !this.hasQueuedWrites()) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject, written: true });
      this.kick();
    });
  }

  /** Flushes, checkpoints (session files and index fsynced, journal truncated) and releases files. */
  close(): Promise<void> {
    if (!this.closePromise) {
      this.closing = true;
      this.closePromise = (async () => {
        let error: unknown = null;
        try {
          await this.flush();
        } catch (err) {
          error = err;
        }
        this.clearTimer();
        // Take the committer's place: no round may run during the checkpoint.
        while (this.committing) await this.commitLoop;
        if (!this.failure) {
          this.committing = true;
          try {
            await this.checkpoint();
          } catch (err) {
            this.fail(err, []);
            error ??= this.failedError();
          } finally {
            this.committing = false;
          }
        }
        await Promise.all([...this.endSyncs]);
        const handles = [...this.files].map((s) => s.handle.then((h) => h.close()).catch(noop));
        this.files.clear();
        this.sessions.clear();
        await Promise.all([...handles, this.indexHandle.close().catch(noop), this.journal.close().catch(noop)]);
        if (error) throw error;
      })();
    }
    return this.closePromise;
  }

  // --- internals ---------------------------------------------------------------------------

  private heldBytes(): number {
    return this.pendingBytes + this.unwrittenBytes;
  }

  private unusableError(): AuditWriteError | null {
    if (this.failure) return this.failedError();
    if (this.closing) return new AuditWriteError('audit sink is closed');
    return null;
  }

  private sessionError(s: SessionState): AuditWriteError | null {
    if (s.failed) return new AuditWriteError(s.failed.message, { cause: s.failed });
    if (s.ended) return new AuditWriteError(`audit session ${s.id} has ended`);
    return null;
  }

  private failedError(): AuditWriteError {
    const f = this.failure!;
    return new AuditWriteError(f.message, { cause: f });
  }

  private enqueue(s: SessionState, line: string, bytes: number): void {
    s.buf.push(line);
    s.bufBytes += bytes;
    this.pendingBytes += bytes;
    this.counters.events++;
    this.dirty.add(s);
  }

  private settle(s: SessionState, durable: boolean): Promise<void> {
    if (!durable) {
      if (this.timer === null) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.kick();
        }, this.windowMs);
        this.timer.unref();
      }
      return RESOLVED;
    }
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject, session: s });
      this.scheduleCommit();
    });
  }

  /** Durable requests: start on the next turn so everything appended in this turn joins the round. */
  private scheduleCommit(): void {
    if (this.committing) {
      this.commitAgain = true;
      return;
    }
    if (this.commitScheduled) return;
    this.commitScheduled = true;
    setImmediate(() => {
      this.commitScheduled = false;
      this.kick();
    });
  }

  private kick(): void {
    if (this.committing) {
      this.commitAgain = true;
      return;
    }
    if (this.failure) return;
    this.commitLoop = this.runCommits();
  }

  private async runCommits(): Promise<void> {
    this.committing = true;
    try {
      do {
        this.commitAgain = false;
        await this.commitRound();
        if (!this.failure && this.journal.size >= this.checkpointBytes) {
          try {
            await this.checkpoint();
          } catch (err) {
            this.fail(err, []);
          }
        }
      } while (!this.failure && (this.commitAgain || this.waiters.length > 0));
    } finally {
      this.committing = false;
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private async commitRound(): Promise<void> {
    const waiters = this.waiters;
    this.waiters = [];
    this.inflight = waiters;
    const batch: BatchItem[] = [];
    const indexLines: string[] = [];
    for (const s of this.dirty) {
      batch.push({ s, lines: s.buf, bytes: s.bufBytes, final: s.ended });
      s.buf = [];
      s.bufBytes = 0;
    }
    this.dirty.clear();
    // Everything buffered is in this round; lines appended from now on re-arm the timer.
    this.clearTimer();
    if (batch.length === 0) {
      this.inflight = [];
      this.settleRound(waiters, null);
      return;
    }

    // Sessions whose file could not be created fail alone; their data is dropped.
    const handles = await Promise.all(batch.map((b) => b.s.handle.then((h) => h, () => null)));
    if (this.failure) return; // fail() rejected this round's waiters
    const ok: BatchItem[] = [];
    const failedSessions = new Set<SessionState>();
    let bytesDone = 0;
    let okBytes = 0;
    let text = '';
    batch.forEach((b, i) => {
      const fh = handles[i];
      bytesDone += b.bytes;
      if (fh) {
        b.s.fh = fh;
        ok.push(b);
        okBytes += b.bytes;
        text += journalChunk(b.s.id, b.lines);
        for (const l of b.s.indexBuf) indexLines.push(l);
      } else {
        failedSessions.add(b.s);
        this.sessions.delete(b.s.id);
        this.files.delete(b.s);
      }
      b.s.indexBuf = [];
    });
    text += journalChunk(INDEX_TARGET, indexLines);
    const data = Buffer.from(text, 'utf8');
    try {
      await this.journal.appendEncoded(data);
    } catch (err) {
      this.fail(err, waiters);
      return;
    }
    if (this.failure) return; // a file write failed meanwhile: this round's waiters were rejected
    this.inflight = [];
    if (data.length > 0) {
      this.counters.commits++;
      this.counters.fsyncs++;
      this.counters.bytes += data.length;
    }
    this.pendingBytes -= bytesDone;

    for (const b of ok) {
      if (b.s.newFile) {
        b.s.newFile = false;
        this.dirUnsynced = true;
      }
      // Ended sessions cannot get new lines: these are their file's last ones. (A session may have
      // ended after this round took its lines: its seal is then in the next round.)
      if (b.final) {
        b.s.sealJournaled = true;
        this.sessions.delete(b.s.id);
      }
    }
    const indexText = indexLines.join('');
    this.enqueueWrites(ok, indexText, okBytes + Buffer.byteLength(indexText));
    this.settleRound(waiters, failedSessions);
  }

  private settleRound(waiters: Waiter[], failedSessions: Set<SessionState> | null): void {
    const gen = this.applyGen;
    for (const w of waiters) {
      if (w.session && failedSessions?.has(w.session)) w.reject(this.sessionError(w.session)!);
      else if (w.written && this.appliedGen < gen) {
        this.applyWaiters.push({ gen, w });
        this.startWriter(); // flush(): no delay
      } else w.resolve();
    }
  }

  /**
   * Queues journaled lines for their files. A single writer writes them in batches, one write per
   * file per batch (so in order per file), at most every fileWriteDelayMs unless something waits.
   */
  private enqueueWrites(items: BatchItem[], indexText: string, bytes: number): void {
    for (const b of items) {
      const q = this.fileQueue.get(b.s);
      if (q) for (const l of b.lines) q.lines.push(l);
      else this.fileQueue.set(b.s, { lines: b.lines });
    }
    if (indexText) this.indexQueue.push(indexText);
    if (items.length === 0 && !indexText) return;
    this.unwrittenBytes += bytes;
    this.applyGen++;
    this.scheduleWriter();
  }

  private hasQueuedWrites(): boolean {
    return this.fileQueue.size > 0 || this.indexQueue.length > 0;
  }

  private scheduleWriter(): void {
    if (this.applying !== null || this.failure) return; // the running batch reschedules
    if (this.fileWriteDelayMs <= 0 || this.unwrittenBytes >= FILE_WRITE_BATCH_BYTES || this.writeUrgent || this.applyWaiters.length > 0) {
      this.startWriter();
    } else if (this.writeTimer === null) {
      this.writeTimer = setTimeout(() => {
        this.writeTimer = null;
        this.startWriter();
      }, this.fileWriteDelayMs);
      this.writeTimer.unref();
    }
  }

  private startWriter(): void {
    if (this.writeTimer !== null) {
      clearTimeout(this.writeTimer);
      this.writeTimer = null;
    }
    if (this.applying !== null || this.failure || !this.hasQueuedWrites()) return;
    this.applying = this.writeBatch().finally(() => {
      this.applying = null;
      // Lines queued while this batch was written.
      if (this.hasQueuedWrites()) this.scheduleWriter();
    });
  }

  private async writeBatch(): Promise<void> {
    const gen = this.applyGen;
    const queue = this.fileQueue;
    const indexText = this.indexQueue.join('');
    this.fileQueue = new Map();
    this.indexQueue = [];
    const items = [...queue].map(([s, q]) => ({ s, data: Buffer.from(q.lines.join(''), 'utf8') }));
    const indexData = indexText ? Buffer.from(indexText, 'utf8') : null;
    try {
      await Promise.all([
        ...items.map(({ s, data }) => writeAll(s.fh!, data)),
        indexData ? writeAll(this.indexHandle, indexData) : RESOLVED,
      ]);
    } catch (err) {
      this.fail(err, []);
      return;
    }
    let written = indexData?.length ?? 0;
    for (const { s, data } of items) {
      written += data.length;
      if (s.sealJournaled && !this.fileQueue.has(s)) this.endSync(s);
      else this.unsynced.add(s);
    }
    if (indexData) this.indexUnsynced = true;
    this.counters.fileBytes += written;
    this.unwrittenBytes -= written;
    this.appliedGen = gen;
    const ready = this.applyWaiters.filter((x) => x.gen <= gen);
    if (ready.length > 0) {
      this.applyWaiters = this.applyWaiters.filter((x) => x.gen > gen);
      for (const x of ready) x.w.resolve();
    }
  }

  /** A session's file is complete: fdatasync and close it, off the critical path. */
  private endSync(s: SessionState): void {
    this.unsynced.delete(s);
    const fh = s.fh!;
    const p = (async () => {
      try {
        await fh.datasync();
        this.counters.fsyncs++;
      } catch (err) {
        this.fail(err, []);
        return;
      }
      this.files.delete(s);
      await fh.close().catch(noop);
    })();
    this.endSyncs.add(p);
    void p.finally(() => this.endSyncs.delete(p));
  }

  /**
   * Makes every file write durable, then empties the journal. Runs in the committer's place (no
   * round meanwhile, so nothing new enters the journal before it is truncated).
   */
  private async checkpoint(): Promise<void> {
    this.writeUrgent = true;
    try {
      this.startWriter();
      while (this.applying) await this.applying;
    } finally {
      this.writeUrgent = false;
    }
    if (this.failure) throw this.failedError();
    const syncs: Promise<unknown>[] = [...this.endSyncs];
    const files = [...this.unsynced];
    for (const s of files) syncs.push(s.fh!.datasync());
    if (this.indexUnsynced) syncs.push(this.indexHandle.datasync());
    // New files' directory entries must be durable too, or a file could vanish in a crash.
    if (this.dirUnsynced) syncs.push(syncDir(this.sessionsDir));
    this.counters.fsyncs += files.length + (this.indexUnsynced ? 1 : 0) + (this.dirUnsynced ? 1 : 0);
    await Promise.all(syncs);
    if (this.failure) throw this.failedError(); // an end-of-session fsync failed
    this.unsynced.clear();
    this.indexUnsynced = false;
    this.dirUnsynced = false;
    if (this.journal.size > 0) {
      await this.journal.truncate();
      this.counters.fsyncs++;
    }
    this.counters.checkpoints++;
  }

  private fail(err: unknown, roundWaiters: Waiter[]): void {
    if (this.failure) return;
    this.failure = new AuditWriteError(`audit write failed, failing closed: ${(err as Error).message}`, { cause: err });
    this.clearTimer();
    if (this.writeTimer !== null) {
      clearTimeout(this.writeTimer);
      this.writeTimer = null;
    }
    const waiters = [...roundWaiters, ...this.inflight, ...this.waiters, ...this.applyWaiters.map((x) => x.w)];
    this.waiters = [];
    this.inflight = [];
    this.applyWaiters = [];
    for (const w of new Set(waiters)) w.reject(this.failedError());
    // FileHandle.close() waits for a write or fsync still running on the handle.
    for (const s of this.files) s.handle.then((h) => h.close()).catch(noop);
    this.files.clear();
    this.sessions.clear();
    this.dirty.clear();
    this.fileQueue.clear();
    this.indexQueue = [];
  }
}
