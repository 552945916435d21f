/**
 * Local-disk audit sink: one append-only JSONL file per session plus an index.
 *
 * Layout under `dir`:
 *   sessions/<sessionId>.jsonl  one event per line (JSON.stringify of the chained event)
 *   index.jsonl                 one line when a session starts and one when it ends
 *
 * Group commit: append() only chains the event (hash computed synchronously) and buffers the
 * line in memory. A single committer takes every dirty buffer, writes each to its session's
 * FileHandle (opened once per session), fdatasync()s all written files in parallel and then
 * resolves every waiting promise. A durable append asks for a commit at once; while a round
 * runs, further requests coalesce into one next round that starts as soon as it finishes, so
 * many sessions' durable events share one fsync round. Non-durable events are committed by a
 * timer at most `readOnlyWindowMs` after they were appended (earlier if a durable commit
 * happens first).
 *
 * Loss window on a crash: non-durable events appended within the last readOnlyWindowMs plus
 * about one commit round (write + fsync) may be lost; a durable event whose promise resolved
 * is never lost. A torn last line is possible after a crash and is tolerated by the readers.
 *
 * Fail closed: a write or fsync error marks the whole sink failed; waiting and all later
 * appends reject with AuditWriteError (non-durable appends that already resolved cannot be
 * recalled: they are lost with the failure). Failing to create one session's file fails only
 * that session. Going over maxPendingBytes rejects the append without failing the sink.
 */
import { mkdir, open as fsOpen, readFile, readdir, link, unlink, writeFile, chmod } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
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
import { chainEvent, makeSealBody } from '../../core/audit/hash-chain.ts';
import type { ChainLink } from '../../core/audit/hash-chain.ts';
import { AuditWriteError } from '../../core/audit/ports.ts';
import type { AuditSink, SessionAudit } from '../../core/audit/ports.ts';

export interface LocalAuditSinkOptions {
  dir: string;
  /** Max delay before non-durable events are committed. Default 100. */
  readOnlyWindowMs?: number;
  /** Ed25519 private key used to sign seals. */
  signingKey: KeyObject;
  keyId: string;
  /** Buffered + in-flight bytes beyond which append rejects (fail closed). Default 64 MiB. */
  maxPendingBytes?: number;
  /** Opens a session file; for fault injection in tests. Default: fs.promises.open. */
  openFile?: (path: string, flags: string, mode: number) => Promise<FileHandle>;
}

export interface AuditSinkStats {
  /** Commit rounds that wrote something. */
  commits: number;
  /** fdatasync/fsync calls (files and directories). */
  fsyncs: number;
  /** Bytes written to session files and the index. */
  bytes: number;
  /** Events accepted. */
  events: number;
  /** Buffered or in-flight bytes not yet durable. */
  pendingBytes: number;
  openSessions: number;
  failed: boolean;
}

export class AuditReadError extends Error {
  readonly notFound: boolean;
  constructor(message: string, options?: { cause?: unknown; notFound?: boolean }) {
    super(message, options);
    this.name = 'AuditReadError';
    this.notFound = options?.notFound ?? false;
  }
}

export class AuditKeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditKeyError';
  }
}

export const DEFAULT_READ_ONLY_WINDOW_MS = 100;
export const DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const RESOLVED: Promise<void> = Promise.resolve();
const noop = (): void => {};

export function sessionFileName(sessionId: SessionId): string {
  return `sessions/${sessionId}.jsonl`;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
  /** Set when the waiter only depends on one session (its open may fail alone). */
  session?: SessionState;
}

interface SessionState {
  id: SessionId;
  start: SessionStartFields;
  handle: Promise<FileHandle>;
  /** The file was just created: its directory entry still needs an fsync. */
  newFile: boolean;
  buf: string[];
  bufBytes: number;
  indexBuf: string[];
  last: ChainLink;
  ended: boolean;
  failed: AuditWriteError | null;
  principal?: Principal;
}

interface BatchItem {
  s: SessionState;
  data: string;
  index: string;
  bytes: number;
}

export class LocalAuditSink implements AuditSink {
  private readonly dir: string;
  private readonly sessionsDir: string;
  private readonly windowMs: number;
  private readonly maxPendingBytes: number;
  private readonly signingKey: KeyObject;
  private readonly keyId: string;
  private readonly openFile: (path: string, flags: string, mode: number) => Promise<FileHandle>;
  private readonly indexHandle: FileHandle;

  private readonly sessions = new Map<SessionId, SessionState>();
  private readonly dirty = new Set<SessionState>();
  private waiters: Waiter[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private committing = false;
  private commitAgain = false;
  private commitScheduled = false;
  private failure: AuditWriteError | null = null;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private readonly counters = { commits: 0, fsyncs: 0, bytes: 0, events: 0 };

  private constructor(opts: LocalAuditSinkOptions, indexHandle: FileHandle) {
    this.dir = opts.dir;
    this.sessionsDir = join(opts.dir, 'sessions');
    this.windowMs = opts.readOnlyWindowMs ?? DEFAULT_READ_ONLY_WINDOW_MS;
    this.maxPendingBytes = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.signingKey = opts.signingKey;
    this.keyId = opts.keyId;
    this.openFile = opts.openFile ?? ((p, f, m) => fsOpen(p, f, m));
    this.indexHandle = indexHandle;
  }

  /** Creates the directories, opens index.jsonl (terminating a torn last line) and returns the sink. */
  static async open(opts: LocalAuditSinkOptions): Promise<LocalAuditSink> {
    if (opts.signingKey.type !== 'private' || opts.signingKey.asymmetricKeyType !== 'ed25519') {
      throw new AuditKeyError('signingKey must be an Ed25519 private key');
    }
    const sessionsDir = join(opts.dir, 'sessions');
    try {
      await mkdir(sessionsDir, { recursive: true, mode: DIR_MODE });
      const index = await fsOpen(join(opts.dir, 'index.jsonl'), 'a+', FILE_MODE);
      try {
        const { size } = await index.stat();
        if (size > 0) {
          const last = Buffer.alloc(1);
          await index.read(last, 0, 1, size - 1);
          // A crash mid-line left a fragment: end it so our first line is not glued onto it.
          if (last[0] !== 0x0a) {
            await index.write('\n');
            await index.datasync();
          }
        }
        await syncDir(opts.dir);
      } catch (err) {
        await index.close().catch(noop);
        throw err;
      }
      return new LocalAuditSink(opts, index);
    } catch (err) {
      throw new AuditWriteError(`cannot open audit dir ${opts.dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  stats(): AuditSinkStats {
    return {
      ...this.counters,
      pendingBytes: this.pendingBytes,
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
    if (this.pendingBytes + bytes > this.maxPendingBytes) {
      throw new AuditWriteError(`audit buffer full (${this.pendingBytes} bytes pending): refusing new session`);
    }
    // 'ax': append-only, and never mix two chains in one file.
    const handle = this.openFile(join(this.sessionsDir, `${sessionId}.jsonl`), 'ax', FILE_MODE);
    const s: SessionState = {
      id: sessionId,
      start,
      handle,
      newFile: true,
      buf: [],
      bufBytes: 0,
      indexBuf: [],
      last: ev,
      ended: false,
      failed: null,
    };
    handle.catch((err: unknown) => {
      s.failed = new AuditWriteError(`cannot create audit file for session ${sessionId}: ${(err as Error).message}`, { cause: err });
    });
    this.sessions.set(sessionId, s);
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
    let ev: AuditEvent;
    let line: string;
    try {
      ev = chainEvent(s.last, body, { sessionId: s.id });
      line = JSON.stringify(ev) + '\n';
    } catch (err) {
      return Promise.reject(new AuditWriteError(`cannot encode audit event: ${(err as Error).message}`, { cause: err }));
    }
    const bytes = Buffer.byteLength(line);
    if (this.pendingBytes + bytes > this.maxPendingBytes) {
      return Promise.reject(new AuditWriteError(`audit buffer full (${this.pendingBytes} bytes pending, limit ${this.maxPendingBytes})`));
    }
    s.last = ev;
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

  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failedError());
    if (this.dirty.size === 0 && !this.committing && !this.commitScheduled) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.kick();
    });
  }

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
        const handles = [...this.sessions.values()].map((s) => s.handle.then((h) => h.close()).catch(noop));
        this.sessions.clear();
        await Promise.all([...handles, this.indexHandle.close().catch(noop)]);
        if (error) throw error;
      })();
    }
    return this.closePromise;
  }

  // --- internals ---------------------------------------------------------------------------

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
    void this.runCommits();
  }

  private async runCommits(): Promise<void> {
    this.committing = true;
    try {
      do {
        this.commitAgain = false;
        await this.commitRound();
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
    const batch: BatchItem[] = [];
    for (const s of this.dirty) {
      batch.push({ s, data: s.buf.join(''), index: s.indexBuf.join(''), bytes: s.bufBytes });
      s.buf = [];
      s.bufBytes = 0;
      s.indexBuf = [];
    }
    this.dirty.clear();
    // Everything buffered is in this round; lines appended from now on re-arm the timer.
    this.clearTimer();
    if (batch.length === 0) {
      for (const w of waiters) w.resolve();
      return;
    }

    // Sessions whose file could not be created fail alone; their data is dropped.
    const handles = await Promise.all(batch.map((b) => b.s.handle.then((h) => h, () => null)));
    const ok: { b: BatchItem; fh: FileHandle }[] = [];
    const failedSessions = new Set<SessionState>();
    let bytesDone = 0;
    batch.forEach((b, i) => {
      const fh = handles[i];
      if (fh) ok.push({ b, fh });
      else {
        failedSessions.add(b.s);
        bytesDone += b.bytes;
        this.sessions.delete(b.s.id);
      }
    });
    const indexData = ok.map(({ b }) => b.index).join('');

    try {
      const dataBuffers = ok.map(({ b }) => Buffer.from(b.data, 'utf8'));
      const indexBuffer = indexData ? Buffer.from(indexData, 'utf8') : null;
      await Promise.all([
        ...ok.map(({ fh }, i) => writeAll(fh, dataBuffers[i]!)),
        indexBuffer ? writeAll(this.indexHandle, indexBuffer) : RESOLVED,
      ]);
      const syncs: Promise<void>[] = ok.map(({ fh }) => fh.datasync());
      if (indexBuffer) syncs.push(this.indexHandle.datasync());
      // New files' directory entries must be durable too, or the file can vanish in a crash.
      if (ok.some(({ b }) => b.s.newFile)) syncs.push(syncDir(this.sessionsDir));
      this.counters.fsyncs += syncs.length;
      await Promise.all(syncs);
      this.counters.commits++;
      this.counters.bytes += dataBuffers.reduce((n, d) => n + d.length, 0) + (indexBuffer?.length ?? 0);
    } catch (err) {
      this.fail(err, waiters);
      return;
    }

    for (const { b } of ok) {
      b.s.newFile = false;
      bytesDone += b.bytes;
    }
    this.pendingBytes -= bytesDone;
    for (const w of waiters) {
      if (w.session && failedSessions.has(w.session)) w.reject(this.sessionError(w.session)!);
      else w.resolve();
    }
    // Ended sessions cannot get new lines, so their file is complete.
    await Promise.all(
      ok
        .filter(({ b }) => b.s.ended && b.s.buf.length === 0)
        .map(({ b, fh }) => {
          this.sessions.delete(b.s.id);
          return fh.close().catch(noop);
        }),
    );
  }

  private fail(err: unknown, roundWaiters: Waiter[]): void {
    this.failure = new AuditWriteError(`audit write failed, failing closed: ${(err as Error).message}`, { cause: err });
    this.clearTimer();
    const waiters = [...roundWaiters, ...this.waiters];
    this.waiters = [];
    for (const w of waiters) w.reject(this.failedError());
    for (const s of this.sessions.values()) s.handle.then((h) => h.close()).catch(noop);
    this.sessions.clear();
    this.dirty.clear();
  }
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

async function syncDir(path: string): Promise<void> {
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

// --- reading back --------------------------------------------------------------------------

export interface SessionTrail {
  sessionId: SessionId;
  /** Path relative to the audit dir. */
  file: string;
  /** Complete (newline-terminated) lines, without the newline, in file order. */
  lines: string[];
  /** Lines that parse as JSON objects, in file order (not verified: use verifyChainLines). */
  events: AuditEvent[];
  /** Complete lines that did not parse (corruption, not a crash). */
  badLines: { index: number; error: string }[];
  /** Trailing bytes without a newline: a write torn by a crash. */
  torn: { bytes: number; text: string } | null;
}

export async function readSessionEvents(dir: string, sessionId: SessionId | string): Promise<SessionTrail> {
  if (!isSessionId(sessionId)) throw new AuditReadError(`invalid session id ${JSON.stringify(sessionId)}`);
  const file = sessionFileName(sessionId);
  let buf: Buffer;
  try {
    buf = await readFile(join(dir, file));
  } catch (err) {
    const notFound = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new AuditReadError(notFound ? `no audit trail for session ${sessionId}` : `cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
      notFound,
    });
  }
  const { lines, torn } = splitLines(buf);
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
  return { sessionId, file, lines, events, badLines, torn };
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

/** Sessions from index.jsonl, start and end merged, in start order. Unparseable lines are skipped. */
export async function listSessions(dir: string): Promise<SessionSummary[]> {
  let buf: Buffer;
  try {
    buf = await readFile(join(dir, 'index.jsonl'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new AuditReadError(`cannot read index.jsonl: ${(err as Error).message}`, { cause: err });
  }
  const byId = new Map<string, SessionSummary>();
  const { lines } = splitLines(buf);
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

/** Session ids that have a file under sessions/ (includes sessions missing from the index). */
export async function listSessionFiles(dir: string): Promise<SessionId[]> {
  let names: string[];
  try {
    names = await readdir(join(dir, 'sessions'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new AuditReadError(`cannot list sessions: ${(err as Error).message}`, { cause: err });
  }
  return names
    .filter((n) => n.endsWith('.jsonl'))
    .map((n) => n.slice(0, -'.jsonl'.length))
    .filter(isSessionId)
    .sort();
}

// --- signing key ---------------------------------------------------------------------------

export interface AuditSigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  keyId: string;
}

export function auditKeyPaths(stateDir: string): { privateKeyPath: string; publicKeyPath: string } {
  return {
    privateKeyPath: join(stateDir, 'audit', 'audit-signing-key.pem'),
    publicKeyPath: join(stateDir, 'audit', 'audit-signing-key.pub.pem'),
  };
}

/** 'ed25519:' + first 16 hex chars of sha256 over the SPKI DER public key. */
export function auditKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return `ed25519:${createHash('sha256').update(der).digest('hex').slice(0, 16)}`;
}

/**
 * Loads the seal signing key from `${stateDir}/audit/audit-signing-key.pem` (0600), creating an
 * Ed25519 key pair on first use; the public key is kept alongside (audit-signing-key.pub.pem)
 * for `warden audit verify`.
 */
export async function loadOrCreateAuditSigningKey(stateDir: string): Promise<AuditSigningKey> {
  const { privateKeyPath, publicKeyPath } = auditKeyPaths(stateDir);
  await mkdir(join(stateDir, 'audit'), { recursive: true, mode: DIR_MODE });
  let pem: string;
  try {
    pem = await readFile(privateKeyPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditKeyError(`cannot read ${privateKeyPath}: ${(err as Error).message}`, { cause: err });
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    const fresh = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    // Write a temp file, then link(): atomic and never clobbers a key another process just made.
    const tmp = `${privateKeyPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await fsOpen(tmp, 'wx', FILE_MODE);
      try {
        await fh.writeFile(fresh);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, privateKeyPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      await syncDir(join(stateDir, 'audit'));
    } catch (e) {
      throw new AuditKeyError(`cannot create ${privateKeyPath}: ${(e as Error).message}`, { cause: e });
    } finally {
      await unlink(tmp).catch(noop);
    }
    pem = await readFile(privateKeyPath, 'utf8');
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new AuditKeyError(`${privateKeyPath} is not a valid private key`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${privateKeyPath} is not an Ed25519 key`);
  const publicKey = createPublicKey(privateKey);
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  let existing: string | null = null;
  try {
    existing = await readFile(publicKeyPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditKeyError(`cannot read ${publicKeyPath}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (existing === null) {
    await writeFile(publicKeyPath, publicPem, { mode: 0o644 });
  } else if (existing.trim() !== publicPem.trim()) {
    // Verification uses this file; a silent overwrite would hide a swapped key.
    throw new AuditKeyError(`${publicKeyPath} does not match ${privateKeyPath}; move one of them away`);
  }
  await chmod(privateKeyPath, FILE_MODE).catch(noop);
  return { privateKey, publicKey, keyId: auditKeyId(publicKey) };
}

/** Reads a PEM public key (e.g. auditKeyPaths(stateDir).publicKeyPath); null if the file is missing. */
export async function loadAuditPublicKey(path: string): Promise<{ publicKey: KeyObject; keyId: string } | null> {
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AuditKeyError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(pem);
  } catch (err) {
    throw new AuditKeyError(`${path} is not a valid public key`, { cause: err });
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${path} is not an Ed25519 public key`);
  return { publicKey, keyId: auditKeyId(publicKey) };
}
