/**
 * ForensicVault: where the originals of masked cells go. The agent sees masked values; the originals are
 * sealed, one record per statement, readable only with the vault key, and every reveal is audited
 * (`vault.reveal`). Envelope encryption on every implementation: a random data key per record, wrapped
 * by the vault key (a local key file, or a KMS key on AWS), so the vault key never touches the data.
 *
 * The data path calls `add` once per masked cell, synchronously; an implementation buffers a bounded
 * amount of plaintext, seals it as a frame and writes frames in the background, in order. Memory stays
 * bounded whatever the number of cells.
 */
import { isSessionId } from '../audit/events.ts';
import type { Detector } from './vocabulary.ts';

/** One masked cell's original. */
export interface VaultCell {
  /** Row within the statement's results (as counted by the data path). */
  readonly row: number;
  /** Column index within the row. */
  readonly column: number;
  readonly columnName: string;
  /** `schema.table.column` when a column rule masked it. */
  readonly source?: string;
  /** The detector that found it when no column rule covered the column. */
  readonly detector?: Detector;
  /** The original text; null for SQL NULL. */
  readonly original: string | null;
}

/** Who and what a record belongs to; stored beside the sealed cells (authenticated, not secret). */
export interface VaultRecordMeta {
  readonly sessionId: string;
  /** Per session, 1.. (the audit trail's statement id). */
  readonly statementId: number;
  readonly target: string;
  readonly principal: { issuer: string; subject: string };
  /** ISO-8601. */
  readonly createdAt: string;
}

export interface VaultRecordWriter {
  /**
   * Adds one cell: synchronous and cheap (a copy into the frame buffer; a frame is encrypted when the
   * buffer is full). Never throws because of the disk: a background failure is reported by close().
   * Throws VaultWriterClosedError after close()/abort(), VaultCellError for a malformed cell.
   */
  add(cell: VaultCell): void;
  /** Seals the record; resolves once it is complete and durable. Rejects (VaultWriteError...) otherwise. */
  close(): Promise<VaultRef>;
  /** Drops the record (the statement failed before any cell); nothing stays on disk. */
  abort(): Promise<void>;
}

/** A sealed record, as the audit trail cites it. */
export interface VaultRef {
  /** Random record id (hex); bound into every frame. */
  readonly id: string;
  readonly cells: number;
  /** Size of the sealed record. */
  readonly bytes: number;
  /** SHA-256 (hex) of the sealed record's bytes. */
  readonly sha256: string;
}

export interface ForensicVault {
  /** Starts a record; throws VaultRecordMetaError for bad meta. Writes nothing until there is something to write. */
  open(meta: VaultRecordMeta): VaultRecordWriter;
}

/** A record read back and verified in full (no partial output). */
export interface VaultRecord {
  readonly meta: VaultRecordMeta;
  readonly cells: VaultCell[];
  readonly ref: VaultRef;
}

export interface ForensicVaultReader {
  /**
   * Reads and verifies a whole record. Rejects with VaultRecordNotFoundError, VaultKeyError (sealed
   * under another key) or VaultRecordCorruptError (altered, truncated, reordered frames...).
   */
  read(sessionId: string, statementId: number): Promise<VaultRecord>;
}

// --- errors ----------------------------------------------------------------------------------

/** The vault key is missing, unreadable, malformed, or not the key a record was sealed with. */
export class VaultKeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultKeyError';
  }
}

/** A record failed verification: it was altered, truncated, or assembled from other records' frames. */
export class VaultRecordCorruptError extends Error {
  constructor(
    readonly record: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`vault record ${record} is corrupt: ${problem}`, options);
    this.name = 'VaultRecordCorruptError';
  }
}

export class VaultRecordNotFoundError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultRecordNotFoundError';
  }
}

/** A sealed record for the same session and statement exists already; it is never overwritten. */
export class VaultRecordExistsError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultRecordExistsError';
  }
}

/** The record could not be written (disk error, backlog over its limit): the originals are not sealed. */
export class VaultWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultWriteError';
  }
}

/** add() after close() or abort(), or close() twice: a bug in the caller. */
export class VaultWriterClosedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultWriterClosedError';
  }
}

export class VaultCellError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultCellError';
  }
}

export class VaultRecordMetaError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VaultRecordMetaError';
  }
}

// --- validation ------------------------------------------------------------------------------

/** Record ids name files: the session id follows the audit trail's safe alphabet, the statement id is 1... */
export function checkVaultRecordKey(sessionId: unknown, statementId: unknown): void {
  if (!isSessionId(sessionId)) throw new VaultRecordMetaError(`invalid session id ${JSON.stringify(sessionId)}`);
  if (typeof statementId !== 'number' || !Number.isSafeInteger(statementId) || statementId < 1) {
    throw new VaultRecordMetaError(`invalid statement id ${JSON.stringify(statementId)}: expected an integer >= 1`);
  }
}

export function checkVaultRecordMeta(meta: VaultRecordMeta): void {
  checkVaultRecordKey(meta.sessionId, meta.statementId);
  if (typeof meta.target !== 'string') throw new VaultRecordMetaError('meta.target must be a string');
  if (!meta.principal || typeof meta.principal.issuer !== 'string' || typeof meta.principal.subject !== 'string') {
    throw new VaultRecordMetaError('meta.principal must have a string issuer and subject');
  }
  if (typeof meta.createdAt !== 'string' || Number.isNaN(Date.parse(meta.createdAt))) {
    throw new VaultRecordMetaError(`meta.createdAt must be an ISO-8601 time, got ${JSON.stringify(meta.createdAt)}`);
  }
}
