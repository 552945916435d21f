/**
 * A session's recording in S3: its event lines as JSONL chunks written while it runs, and `seal.json`
 * written once at its end (keys in audit-aws-layout.ts).
 *
 * Lines arrive only once they are in the events table (the system of record); the recording is the
 * write-once copy that Object Lock keeps for the retention period (the lock is set on the bucket by the
 * stack; local S3 emulators have none). A chunk is cut every `chunkEvents` lines, at `chunkBytes`, or
 * `chunkMs` after its first line, whichever comes first; at session end the rest is cut and seal.json
 * names every chunk with its SHA-256. Chunks of one session are written one after another, in order,
 * so seal.json is always the last object of a recording and its presence means the recording is
 * complete. Keys are never reused (chunks are numbered per session) and every put is create-only.
 *
 * A failed put is reported through `onError` (the sink then fails closed); later puts are skipped.
 */
import type { SessionId } from '../../core/audit/events.ts';
import { recordingChunkKey, recordingPrefix, recordingSealKey } from './audit-aws-layout.ts';

export interface RecordingOptions {
  chunkEvents: number;
  chunkBytes: number;
  chunkMs: number;
}

export interface RecordingChunkRef {
  key: string;
  firstSeq: number;
  lastSeq: number;
  events: number;
  bytes: number;
  sha256: string;
}

/** The content of seal.json. */
export interface RecordingSealDocument {
  v: 1;
  sessionId: SessionId;
  /** The seal event's fields: events before the seal, the hash it seals, its signature and key. */
  eventCount: number;
  lastHash: string;
  signature: string;
  keyId: string;
  /** The seal event's own hash (the recording's last line). */
  sealHash: string;
  /** Lines in the recording, the seal's included. */
  events: number;
  chunks: RecordingChunkRef[];
  sealedAt: string;
}

export type RecordingSeal = Omit<RecordingSealDocument, 'v' | 'sessionId' | 'events' | 'chunks'>;

export interface Recording {
  readonly sessionId: SessionId;
  readonly prefix: string;
  lines: string[];
  firstSeq: number;
  bytes: number;
  nextChunk: number;
  written: RecordingChunkRef[];
  timer: NodeJS.Timeout | null;
  /** The chain of this recording's puts; never rejects (errors go to onError). */
  writing: Promise<void>;
  sealed: boolean;
}

export type PutObjectOnce = (key: string, body: string, contentType: string) => Promise<{ sha256: string; bytes: number }>;

export class AuditRecordingWriter {
  /** Bytes of lines accepted and not yet written. */
  bufferedBytes = 0;
  chunksWritten = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly recordings = new Set<Recording>();

  constructor(
    private readonly opts: RecordingOptions,
    private readonly put: PutObjectOnce,
    private readonly onError: (err: unknown) => void,
    private readonly failed: () => boolean,
  ) {}

  open(sessionId: SessionId, startedAt: Date): Recording {
    const rec: Recording = {
      sessionId,
      prefix: recordingPrefix(sessionId, startedAt),
      lines: [],
      firstSeq: 0,
      bytes: 0,
      nextChunk: 1,
      written: [],
      timer: null,
      writing: Promise.resolve(),
      sealed: false,
    };
    this.recordings.add(rec);
    return rec;
  }

  /** Lines durable in the events table, in seq order. */
  add(rec: Recording, events: readonly { seq: number; line: string; bytes: number }[]): void {
    for (const ev of events) {
      if (rec.lines.length === 0) {
        rec.firstSeq = ev.seq;
        if (rec.timer === null && !rec.sealed) {
          rec.timer = setTimeout(() => this.cut(rec), this.opts.chunkMs);
          rec.timer.unref();
        }
      }
      rec.lines.push(ev.line + '\n');
      rec.bytes += ev.bytes + 1;
      this.bufferedBytes += ev.bytes + 1;
      if (rec.lines.length >= this.opts.chunkEvents || rec.bytes >= this.opts.chunkBytes) this.cut(rec);
    }
  }

  /** Writes the lines held so far as the next chunk (after the chunks before it). */
  cut(rec: Recording): void {
    if (rec.timer !== null) {
      clearTimeout(rec.timer);
      rec.timer = null;
    }
    if (rec.lines.length === 0) return;
    const body = rec.lines.join('');
    const key = recordingChunkKey(rec.prefix, rec.nextChunk++);
    const firstSeq = rec.firstSeq;
    const events = rec.lines.length;
    const held = rec.bytes;
    rec.lines = [];
    rec.bytes = 0;
    this.chain(rec, async () => {
      const { sha256, bytes } = await this.put(key, body, 'application/x-ndjson');
      rec.written.push({ key, firstSeq, lastSeq: firstSeq + events - 1, events, bytes, sha256 });
      this.chunksWritten++;
    }, () => {
      this.bufferedBytes -= held;
    });
  }

  /** Cuts the last chunk and writes seal.json after every chunk; resolves when done or failed. */
  seal(rec: Recording, seal: RecordingSeal): Promise<void> {
    this.cut(rec);
    rec.sealed = true;
    this.chain(rec, async () => {
      const events = rec.written.reduce((n, c) => n + c.events, 0);
      const doc: RecordingSealDocument = { v: 1, sessionId: rec.sessionId, ...seal, events, chunks: rec.written };
      await this.put(recordingSealKey(rec.prefix), JSON.stringify(doc) + '\n', 'application/json');
    });
    const done = rec.writing;
    void done.then(() => this.recordings.delete(rec));
    return done;
  }

  /** Resolves when every put started so far has settled. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Stops the chunk timers (close). */
  stop(): void {
    for (const rec of this.recordings) {
      if (rec.timer !== null) clearTimeout(rec.timer);
      rec.timer = null;
    }
  }

  private chain(rec: Recording, write: () => Promise<void>, settled?: () => void): void {
    const p = rec.writing
      .then(async () => {
        if (this.failed()) return;
        await write();
      })
      .catch((err: unknown) => this.onError(err))
      .finally(() => {
        settled?.();
        this.inFlight.delete(p);
      });
    rec.writing = p;
    this.inFlight.add(p);
  }
}
