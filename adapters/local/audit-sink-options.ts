/** Options and statistics of LocalAuditSink (audit-sink.ts), with their defaults. */
import type { FileHandle } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';

export interface LocalAuditSinkOptions {
  dir: string;
  /** Max delay before non-durable events are committed. Default 100. */
  readOnlyWindowMs?: number;
  /** Ed25519 private key used to sign seals. */
  signingKey: KeyObject;
  keyId: string;
  /**
   * Buffered, in-flight and not-yet-written-to-their-files bytes beyond which append rejects
   * (fail closed). Default 64 MiB.
   */
  maxPendingBytes?: number;
  /** Journal size that triggers a checkpoint (files fsynced, journal truncated). Default 16 MiB. */
  journalCheckpointBytes?: number;
  /**
   * How long journaled lines may wait before they are written to their session files and index.jsonl
   * (they are durable already; waiting batches many rounds into one write per file). Default 20;
   * flush(), checkpoints and 1 MiB of waiting lines write them at once.
   */
  fileWriteDelayMs?: number;
  /** Opens session files, journal.wal and index.jsonl; for fault injection in tests. Default: fs.promises.open. */
  openFile?: (path: string, flags: string, mode: number) => Promise<FileHandle>;
}

export interface AuditSinkStats {
  /** Commit rounds that wrote something (one journal write + fdatasync each). */
  commits: number;
  /** fdatasync/fsync calls: journal rounds, session ends, checkpoints (files, directory, journal). */
  fsyncs: number;
  /** Bytes written to the journal. */
  bytes: number;
  /** Bytes written to session files and the index (after the journal). */
  fileBytes: number;
  /** Checkpoints done (journal truncated). */
  checkpoints: number;
  /** Events accepted. */
  events: number;
  /** Buffered or in-flight bytes not yet durable. */
  pendingBytes: number;
  /** Bytes durable in the journal, not yet written to their files. */
  unwrittenBytes: number;
  /** Current journal size. */
  journalBytes: number;
  openSessions: number;
  failed: boolean;
}

export const DEFAULT_READ_ONLY_WINDOW_MS = 100;
export const DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024;
export const DEFAULT_FILE_WRITE_DELAY_MS = 20;
