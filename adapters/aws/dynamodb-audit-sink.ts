/**
 * The audit sink on AWS: DynamoDB holds the trail (a sessions table and an events table), S3 holds
 * large events and each session's recording (layout in audit-aws-layout.ts).
 *
 * Group commit, as in the local sink (adapters/local/audit-sink.ts): append() chains the event (hash
 * computed synchronously) and buffers its line. A single committer runs rounds; a round takes every
 * buffered line of every session and writes them together, and resolves the appends waiting on it
 * once every write of the round has returned. A durable append asks for a round at once (appends of
 * the same turn join it; appends arriving during a round share the next one); non-durable events are
 * committed by a timer at most `readOnlyWindowMs` after they were appended, or earlier with a durable
 * round. Rounds run one after another, so a resolved durable append also means every earlier event of
 * its session is stored.
 *
 * How a round writes: one conditional PutItem (`attribute_not_exists`) per event, in parallel (at
 * most `maxConcurrentWrites` at once). Not BatchWriteItem: it cannot carry conditions, so it could
 * overwrite. Not TransactWriteItems: a transaction is all or nothing across the whole group (one
 * session's conflict would cancel every other session's events), costs twice the write capacity,
 * caps a group at 100 items and 4 MB, and gains nothing here, because a round's atomicity is not what
 * makes the trail safe: the hash chain shows any gap, and a failed round fails the sink. Durability
 * is "the PutItem returned": DynamoDB acknowledges a write once it is stored durably in several
 * Availability Zones. A line over `largeEventBytes` is first put to S3 (events/<sessionId>/<seq>.json)
 * and its item holds a pointer with the object's SHA-256. The sessions-table item is put with the
 * round holding session.start, and updated to `ended` (with the seal) in the round holding the seal,
 * after that round's events: an item marked ended means every event of the session is stored.
 *
 * Recordings: once a round is stored, its lines go to the session's recording in S3, cut into chunks
 * while the session runs and sealed (seal.json) at its end (audit-recording.ts). end() resolves when
 * the seal is in DynamoDB and the recording is sealed.
 *
 * Never overwrite: every item and object is written create-only (audit-aws-writer.ts). The bucket's
 * Object Lock (configured by the stack) keeps objects from deletion and from being replaced by a new
 * version; `If-None-Match: *` makes S3 refuse a put to an existing key at all. Local S3 emulators
 * (s3rver) ignore `If-None-Match` on PUT and have no Object Lock; unique keys keep the sink from
 * reusing one there too.
 *
 * Fail closed: any write that still fails after its retries, a conflict with another writer, or a seal
 * that cannot be signed fails the whole sink: the waiting appends and every later one reject with
 * AuditWriteError (non-durable appends that already resolved cannot be recalled). Each request is
 * time-limited, so an unreachable DynamoDB or S3 rejects within a bounded time instead of hanging.
 * Going over maxPendingBytes (buffered, in flight and not yet recorded) rejects the append without
 * failing the sink.
 */
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { isAuditEventType, isLifecycleEventType, isSessionId } from '../../core/audit/events.ts';
import type { AuditEventBody, AuditEventType, Principal, SessionEndFields, SessionId, SessionStartFields } from '../../core/audit/events.ts';
import { chainEventLine, sealPayload } from '../../core/audit/hash-chain.ts';
import type { ChainLink } from '../../core/audit/hash-chain.ts';
import { AuditWriteError } from '../../core/audit/ports.ts';
import type { AuditSink, SessionAudit } from '../../core/audit/ports.ts';
import { eventItem, largeEventKey, sessionEndAttributes, sessionStartItem } from './audit-aws-layout.ts';
import type { AuditEventRef, SessionEndRecord } from './audit-aws-layout.ts';
import {
  DEFAULT_AWS_READ_ONLY_WINDOW_MS,
  DEFAULT_LARGE_EVENT_BYTES,
  DEFAULT_MAX_CONCURRENT_WRITES,
  DEFAULT_MAX_PENDING_BYTES,
  DEFAULT_RECORDING,
  DEFAULT_RETENTION_SECONDS,
  DEFAULT_SIGN_TIMEOUT_MS,
  MAX_LARGE_EVENT_BYTES,
} from './audit-aws-sink-options.ts';
import type { AwsAuditSinkStats, DynamoDbAuditSinkOptions } from './audit-aws-sink-options.ts';
import { AwsAuditWriter, DEFAULT_WRITE_POLICY, runLimited } from './audit-aws-writer.ts';
import { AuditRecordingWriter } from './audit-recording.ts';
import type { Recording } from './audit-recording.ts';
import { AuditSealError } from './audit-seal-signer.ts';

export * from './audit-aws-sink-options.ts';
export { awsAuditLocationFromEnvironment } from './audit-aws-layout.ts';
export type { AuditEventRef, AwsAuditLocation } from './audit-aws-layout.ts';
export { AuditConflictError, DEFAULT_WRITE_POLICY } from './audit-aws-writer.ts';
export type { AwsWritePolicy } from './audit-aws-writer.ts';
export type { RecordingChunkRef, RecordingOptions, RecordingSealDocument } from './audit-recording.ts';
export { AuditSealError, Ed25519AuditSealSigner, KmsAuditSealSigner, loadKmsSealPublicKey, verifySeal } from './audit-seal-signer.ts';
export type { AuditSealSigner, KmsSealClient, SealToVerify } from './audit-seal-signer.ts';
export { listAwsSessions, readAwsRecording, readAwsSessionEvents } from './audit-aws-reader.ts';
export type { AwsAuditStore, AwsRecording, AwsSessionTrail } from './audit-aws-reader.ts';

const RESOLVED: Promise<void> = Promise.resolve();
const noop = (): void => {};

interface PendingEvent {
  seq: number;
  type: AuditEventType;
  time: string;
  hash: string;
  line: string;
  bytes: number;
}

interface SessionState {
  id: SessionId;
  start: SessionStartFields;
  startedAt: string;
  firstHash: string;
  expiresAt: number;
  buf: PendingEvent[];
  bufBytes: number;
  /** The sessions-table item is still to be put (with session.start). */
  startItem: boolean;
  /** Set with the seal: the sessions-table item is to be marked ended in the seal's round. */
  end: SessionEndRecord | null;
  last: ChainLink;
  ended: boolean;
  principal?: Principal;
  recording: Recording;
  /** Set by the round that stored the seal: the recording's sealing. */
  recordingSealed: Promise<void> | null;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class DynamoDbAuditSink implements AuditSink {
  private readonly o: DynamoDbAuditSinkOptions;
  private readonly writer: AwsAuditWriter;
  private readonly recorder: AuditRecordingWriter;
  private readonly windowMs: number;
  private readonly retentionSeconds: number;
  private readonly largeEventBytes: number;
  private readonly maxPendingBytes: number;
  private readonly maxConcurrent: number;

  /** Sessions that can still append or whose seal is not yet stored. */
  private readonly sessions = new Map<SessionId, SessionState>();
  private readonly dirty = new Set<SessionState>();
  private readonly sealings = new Set<Promise<void>>();
  private waiters: Waiter[] = [];
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
  private readonly counters = { commits: 0, itemWrites: 0, objectWrites: 0, retries: 0, events: 0 };

  constructor(options: DynamoDbAuditSinkOptions) {
    this.o = options;
    this.windowMs = options.readOnlyWindowMs ?? DEFAULT_AWS_READ_ONLY_WINDOW_MS;
    this.retentionSeconds = options.retentionSeconds ?? DEFAULT_RETENTION_SECONDS;
    this.largeEventBytes = options.largeEventBytes ?? DEFAULT_LARGE_EVENT_BYTES;
    this.maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.maxConcurrent = options.maxConcurrentWrites ?? DEFAULT_MAX_CONCURRENT_WRITES;
    if (!(this.largeEventBytes > 0 && this.largeEventBytes <= MAX_LARGE_EVENT_BYTES)) {
      throw new RangeError(`largeEventBytes must be in 1..${MAX_LARGE_EVENT_BYTES} (DynamoDB items hold at most 400 KB)`);
    }
    if (!(this.maxConcurrent >= 1)) throw new RangeError('maxConcurrentWrites must be at least 1');
    const policy = { ...DEFAULT_WRITE_POLICY, ...options.retry };
    // Optional fields (e.g. a session without principal) are left out rather than stored as NULL.
    const doc = DynamoDBDocumentClient.from(options.dynamodb, { marshallOptions: { removeUndefinedValues: true } });
    this.writer = new AwsAuditWriter({ doc, s3: options.s3, bucket: options.recordingsBucket, policy, onRetry: () => this.counters.retries++ });
    this.recorder = new AuditRecordingWriter(
      { ...DEFAULT_RECORDING, ...options.recording },
      async (key, body, contentType) => {
        const r = await this.writer.putObjectNew(key, body, contentType);
        this.counters.objectWrites++;
        return r;
      },
      (err) => this.fail(err, []),
      () => this.failure !== null,
    );
  }

  stats(): AwsAuditSinkStats {
    return {
      ...this.counters,
      pendingBytes: this.pendingBytes,
      recordingBytes: this.recorder.bufferedBytes,
      recordingChunks: this.recorder.chunksWritten,
      openSessions: this.sessions.size,
      failed: this.failure !== null,
    };
  }

  openSession(sessionId: SessionId, start: SessionStartFields, opts: { durable?: boolean } = {}): SessionAudit {
    const unusable = this.unusableError();
    if (unusable) throw unusable;
    if (!isSessionId(sessionId)) throw new AuditWriteError(`invalid session id ${JSON.stringify(sessionId)}`);
    if (this.sessions.has(sessionId)) throw new AuditWriteError(`audit session ${sessionId} is already open`);
    if (this.heldBytes() >= this.maxPendingBytes) throw new AuditWriteError(`audit buffer full (${this.heldBytes()} bytes pending): refusing new session`);
    const startedAt = new Date();
    let first: { link: ChainLink; line: string };
    try {
      first = chainEventLine(null, { type: 'session.start', ...start }, { sessionId, time: startedAt });
    } catch (err) {
      throw new AuditWriteError(`cannot encode session.start: ${(err as Error).message}`, { cause: err });
    }
    const s: SessionState = {
      id: sessionId,
      start,
      startedAt: startedAt.toISOString(),
      firstHash: first.link.hash,
      expiresAt: Math.floor(startedAt.getTime() / 1000) + this.retentionSeconds,
      buf: [],
      bufBytes: 0,
      startItem: true,
      end: null,
      last: first.link,
      ended: false,
      recording: this.recorder.open(sessionId, startedAt),
      recordingSealed: null,
    };
    this.sessions.set(sessionId, s);
    this.enqueue(s, 'session.start', startedAt, first);
    const ready = this.settle(opts.durable ?? true);
    ready.catch(noop);
    return {
      sessionId,
      ready,
      append: (body, o) => this.append(s, body, o.durable),
      end: (fields) => this.end(s, fields),
    };
  }

  /** Hot path: synchronous chaining and buffering; no await for non-durable events. */
  private append(s: SessionState, body: AuditEventBody, durable: boolean): Promise<void> {
    const unusable = this.unusableError() ?? (s.ended ? new AuditWriteError(`audit session ${s.id} has ended`) : null);
    if (unusable) return Promise.reject(unusable);
    const type: unknown = (body as { type?: unknown }).type;
    if (!isAuditEventType(type) || isLifecycleEventType(type)) {
      return Promise.reject(new AuditWriteError(`cannot append an event of type ${JSON.stringify(type)}`));
    }
    const time = new Date();
    let chained: { link: ChainLink; line: string };
    try {
      chained = chainEventLine(s.last, body, { sessionId: s.id, time });
    } catch (err) {
      return Promise.reject(new AuditWriteError(`cannot encode audit event: ${(err as Error).message}`, { cause: err }));
    }
    const bytes = Buffer.byteLength(chained.line);
    if (this.heldBytes() + bytes > this.maxPendingBytes) {
      return Promise.reject(new AuditWriteError(`audit buffer full (${this.heldBytes()} bytes pending, limit ${this.maxPendingBytes})`));
    }
    if (body.type === 'auth.success') s.principal = body.principal;
    this.enqueue(s, type, time, chained, bytes);
    return this.settle(durable);
  }

  private end(s: SessionState, fields: SessionEndFields): Promise<void> {
    const unusable = this.unusableError() ?? (s.ended ? new AuditWriteError(`audit session ${s.id} has ended`) : null);
    if (unusable) return Promise.reject(unusable);
    const time = new Date();
    let endEv: { link: ChainLink; line: string };
    try {
      endEv = chainEventLine(s.last, { type: 'session.end', ...fields }, { sessionId: s.id, time });
    } catch (err) {
      return Promise.reject(new AuditWriteError(`cannot encode session.end: ${(err as Error).message}`, { cause: err }));
    }
    s.ended = true;
    // No pending-bytes limit for the end and the seal: they are small and must not be dropped. The
    // seal follows once signed; no timer for session.end meanwhile.
    this.enqueue(s, 'session.end', time, endEv);
    const sealing = this.seal(s, fields, endEv.link);
    this.sealings.add(sealing);
    void sealing.catch(noop).finally(() => this.sealings.delete(sealing));
    return sealing;
  }

  private async seal(s: SessionState, fields: SessionEndFields, endLink: ChainLink): Promise<void> {
    const eventCount = endLink.seq + 1;
    let signature: Buffer;
    try {
      signature = await deadline(this.o.signer.sign(sealPayload(s.id, eventCount, endLink.hash)), this.o.signTimeoutMs ?? DEFAULT_SIGN_TIMEOUT_MS, 'seal signature');
    } catch (err) {
      // The trail could no longer be sealed: fail closed rather than leave sessions unsealed.
      this.fail(new AuditSealError(`cannot sign the seal of session ${s.id}: ${(err as Error).message}`, { cause: err }), []);
      throw this.failedError();
    }
    if (this.failure) throw this.failedError();
    const time = new Date();
    const body = { type: 'seal', eventCount, lastHash: endLink.hash, signature: signature.toString('base64'), keyId: this.o.signer.keyId } as const;
    let sealEv: { link: ChainLink; line: string };
    try {
      sealEv = chainEventLine(s.last, body, { sessionId: s.id, time });
    } catch (err) {
      this.fail(err, []);
      throw this.failedError();
    }
    s.end = {
      fields,
      principal: s.principal,
      seal: { eventCount, lastHash: endLink.hash, signature: body.signature, keyId: body.keyId, hash: sealEv.link.hash, time: time.toISOString() },
    };
    this.enqueue(s, 'seal', time, sealEv);
    await this.settle(true);
    await s.recordingSealed;
    if (this.failure) throw this.failedError();
  }

  /** Resolves once everything appended before is stored and every recording write started is done. */
  async flush(): Promise<void> {
    if (this.failure) throw this.failedError();
    if (this.dirty.size > 0 || this.committing || this.commitScheduled) {
      await new Promise<void>((resolve, reject) => {
        this.waiters.push({ resolve, reject });
        this.kick();
      });
    }
    await this.recorder.idle();
    if (this.failure) throw this.failedError();
  }

  /**
   * Waits for seals being signed, flushes, writes what open sessions' recordings hold as a last chunk
   * (they stay unsealed, like a session cut by a crash) and stops the timers. Later appends reject.
   * The clients are the caller's: they are not destroyed.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      await Promise.allSettled([...this.sealings]);
      let error: unknown = null;
      try {
        await this.flush();
      } catch (err) {
        error = err;
      }
      this.clearTimer();
      while (this.committing) await this.commitLoop;
      if (!this.failure) {
        for (const s of this.sessions.values()) this.recorder.cut(s.recording);
        await this.recorder.idle();
        if (this.failure) error ??= this.failedError();
      }
      this.recorder.stop();
      this.sessions.clear();
      if (error) throw error;
    })();
    return this.closePromise;
  }

  // --- internals ---------------------------------------------------------------------------

  private heldBytes(): number {
    return this.pendingBytes + this.recorder.bufferedBytes;
  }

  private unusableError(): AuditWriteError | null {
    if (this.failure) return this.failedError();
    if (this.closing) return new AuditWriteError('audit sink is closed');
    return null;
  }

  private failedError(): AuditWriteError {
    const f = this.failure!;
    return new AuditWriteError(f.message, { cause: f });
  }

  private enqueue(s: SessionState, type: AuditEventType, time: Date, ev: { link: ChainLink; line: string }, bytes = Buffer.byteLength(ev.line)): void {
    s.last = ev.link;
    s.buf.push({ seq: ev.link.seq, type, time: time.toISOString(), hash: ev.link.hash, line: ev.line, bytes });
    s.bufBytes += bytes;
    this.pendingBytes += bytes;
    this.counters.events++;
    this.dirty.add(s);
  }

  private settle(durable: boolean): Promise<void> {
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
      this.waiters.push({ resolve, reject });
      this.scheduleCommit();
    });
  }

  /** Durable requests start on the next turn so everything appended in this turn joins the round. */
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
    const batch = [...this.dirty].map((s) => {
      const b = { s, events: s.buf, bytes: s.bufBytes, startItem: s.startItem, end: s.end };
      s.buf = [];
      s.bufBytes = 0;
      s.startItem = false;
      s.end = null;
      return b;
    });
    this.dirty.clear();
    // Everything buffered is in this round; events appended from now on re-arm the timer.
    this.clearTimer();
    if (batch.length > 0) {
      try {
        const first: (() => Promise<void>)[] = [];
        for (const b of batch) {
          if (b.startItem) first.push(() => this.putSessionStart(b.s));
          for (const ev of b.events) first.push(() => this.putEvent(b.s, ev));
        }
        await runLimited(first, this.maxConcurrent);
        const ends = batch.flatMap((b) => (b.end ? [() => this.putSessionEnd(b.s, b.end!)] : []));
        await runLimited(ends, this.maxConcurrent);
      } catch (err) {
        this.fail(err, waiters);
        return;
      }
      if (this.failure) return; // a recording write failed meanwhile: this round's waiters were rejected
      this.counters.commits++;
      for (const b of batch) {
        this.pendingBytes -= b.bytes;
        this.recorder.add(b.s.recording, b.events);
        if (b.end) {
          const { seal } = b.end;
          b.s.recordingSealed = this.recorder.seal(b.s.recording, {
            eventCount: seal.eventCount,
            lastHash: seal.lastHash,
            signature: seal.signature,
            keyId: seal.keyId,
            sealHash: seal.hash,
            sealedAt: seal.time,
          });
          this.sessions.delete(b.s.id);
        }
      }
    }
    this.inflight = [];
    for (const w of waiters) w.resolve();
  }

  private async putSessionStart(s: SessionState): Promise<void> {
    const item = sessionStartItem({
      sessionId: s.id,
      startedAt: s.startedAt,
      start: s.start,
      firstHash: s.firstHash,
      recording: { bucket: this.o.recordingsBucket, prefix: s.recording.prefix },
      expiresAt: s.expiresAt,
    });
    await this.writer.putNew(this.o.sessionsTable, item, { pk: 'sessionId' }, 'firstHash');
    this.counters.itemWrites++;
  }

  private async putEvent(s: SessionState, ev: PendingEvent): Promise<void> {
    let stored: { event: string } | { eventRef: AuditEventRef } = { event: ev.line };
    if (ev.bytes > this.largeEventBytes) {
      // The object first: an item never points at an object that is not there.
      const key = largeEventKey(s.id, ev.seq);
      const { sha256, bytes } = await this.writer.putObjectNew(key, ev.line, 'application/json');
      this.counters.objectWrites++;
      stored = { eventRef: { bucket: this.o.recordingsBucket, key, sha256, bytes } };
    }
    await this.writer.putNew(this.o.eventsTable, eventItem(s.id, ev, stored, s.expiresAt), { pk: 'sessionId', sk: 'seq' }, 'hash');
    this.counters.itemWrites++;
  }

  private async putSessionEnd(s: SessionState, end: SessionEndRecord): Promise<void> {
    await this.writer.updateOnce(this.o.sessionsTable, { sessionId: s.id }, sessionEndAttributes(end), 'endedAt', 'lastHash');
    this.counters.itemWrites++;
  }

  private fail(err: unknown, roundWaiters: Waiter[]): void {
    if (this.failure) return;
    this.failure = new AuditWriteError(`audit write failed, failing closed: ${(err as Error).message}`, { cause: err });
    this.clearTimer();
    this.recorder.stop();
    const waiters = [...roundWaiters, ...this.inflight, ...this.waiters];
    this.waiters = [];
    this.inflight = [];
    for (const w of new Set(waiters)) w.reject(this.failedError());
    this.sessions.clear();
    this.dirty.clear();
  }
}

async function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

