/**
 * LocalForensicVault: the embedded ForensicVault. One sealed file per statement, envelope-encrypted the
 * way the AWS one is with KMS: a random 256-bit data key per record, wrapped by the vault key
 * (`<stateDir>/vault.key`, 32 random bytes, 0600). Plaintext never reaches the disk, not even a temp file.
 *
 * Layout: `<stateDir>/vault/<sessionId>/<statementId>.sealed` (folders 0700, files 0600). A record is
 * written as `<statementId>.<random>.partial` and linked to its final name once complete and fsynced,
 * so a `.sealed` file is always whole and never overwritten (link() fails on an existing name).
 *
 * File format (integers big-endian):
 *
 *   header
 *     5   magic "WVLT1"
 *     4   u32 n: length of the meta JSON (at most 64 KiB)
 *     n   meta JSON (UTF-8): { sessionId, statementId, target, principal: { issuer, subject }, createdAt }
 *     16  record id (random)
 *     8   vault key id: the first 8 bytes of SHA-256(vault key)
 *     12  wrap IV (random)
 *     32  wrapped data key: AES-256-GCM under the vault key, AAD = every header byte above
 *     16  wrap tag
 *   data frames, i = 0, 1, ...
 *     4   u32 L: ciphertext length, 1..16 MiB
 *     12  IV (random)
 *     L   ciphertext: AES-256-GCM under the data key, AAD = record id || u32 i || "D"
 *     16  tag
 *   end frame, i = the number of data frames
 *     4   0xFFFFFFFF (end marker: never a data length)
 *     12  IV (random)
 *     8   u64 cell count, in clear so `warden vault list` needs no key, but authenticated:
 *     16  tag: AES-256-GCM under the data key of an empty plaintext, AAD = record id || u32 i || "E" || u64 count
 *   nothing after the end frame.
 *
 * Why: the key id tells a wrong key from a damaged file; the meta is in the wrap's AAD, so editing it
 * breaks the record; the frame index in the AAD catches reordered or dropped frames, the record id (and
 * the per-record data key) frames moved from another record, and the end frame truncation.
 *
 * Plaintext: the data frames' plaintexts, concatenated, are a stream of entries (an entry may span frames):
 *   column  0x01  u32 column, u32 n, n bytes name, u32 m (0xFFFFFFFF: no source), m bytes `schema.table.column`
 *   cell    0x02  u48 row, u32 column, u8 d (0: no detector), d bytes detector, u32 m (0xFFFFFFFF: NULL), m bytes original
 * A column entry comes before the first cell of its column and again when its name or source change, so a
 * million cells of one column do not repeat its name.
 *
 * Writing: add() copies the cell into a fixed frame buffer (default 64 KiB); when the next entry does not
 * fit, the buffer is encrypted as one frame and queued, and a single background writer appends queued
 * frames in order. Memory per record: the frame buffer plus the queue, which is capped (default 32 MiB;
 * past it the record fails and close() rejects) because add() cannot apply backpressure.
 */
import { createCipheriv, createDecipheriv, createHash, createSecretKey, randomBytes } from 'node:crypto';
import type { Hash, KeyObject } from 'node:crypto';
import { link, mkdir, open as fsOpen, readdir, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isSessionId } from '../../core/audit/events.ts';
import {
  checkVaultRecordKey,
  checkVaultRecordMeta,
  VaultCellError,
  VaultKeyError,
  VaultRecordCorruptError,
  VaultRecordExistsError,
  VaultRecordMetaError,
  VaultRecordNotFoundError,
  VaultWriteError,
  VaultWriterClosedError,
} from '../../core/masking/forensic-vault.ts';
import type {
  ForensicVault,
  ForensicVaultReader,
  VaultCell,
  VaultRecord,
  VaultRecordMeta,
  VaultRecordWriter,
  VaultRef,
} from '../../core/masking/forensic-vault.ts';
import type { Detector } from '../../core/masking/vocabulary.ts';
import { syncDir } from './audit-journal.ts';
import { KEY_ID_BYTES, loadOrCreateVaultKey, VAULT_KEY_BYTES, vaultDir, type VaultKey } from './vault-key.ts';

export { loadOrCreateVaultKey, loadVaultKey, VAULT_KEY_BYTES, vaultDir, vaultKeyId, vaultKeyPath, type VaultKey } from './vault-key.ts';

export const VAULT_MAGIC = Buffer.from('WVLT1', 'latin1');
export const DEFAULT_FRAME_BYTES = 64 * 1024;
export const DEFAULT_MAX_BACKLOG_BYTES = 32 * 1024 * 1024;
/** Largest ciphertext a frame may declare; larger lengths are corruption. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
const MAX_META_BYTES = 64 * 1024;
const END_MARKER = 0xffffffff;
const ABSENT = 0xffffffff;
const MAX_U48 = 2 ** 48 - 1;
const RECORD_ID_BYTES = 16;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const FRAME_HEAD_BYTES = 4 + IV_BYTES;
const END_FRAME_BYTES = FRAME_HEAD_BYTES + 8 + TAG_BYTES;
/** Fixed bytes of the header after the meta JSON. */
const HEADER_TAIL_BYTES = RECORD_ID_BYTES + KEY_ID_BYTES + IV_BYTES + VAULT_KEY_BYTES + TAG_BYTES;
/** A cell entry's bytes before the detector name: type, u48 row, u32 column, u8 detector length; plus the u32 original length. */
const CELL_HEAD_BYTES = 1 + 6 + 4 + 1 + 4;
/** Values up to this many characters try the ASCII fast path in add(). */
const ASCII_FAST_PATH_CHARS = 128;
const ENTRY_COLUMN = 0x01;
const ENTRY_CELL = 0x02;
const KIND_DATA = 0x44; // 'D'
const KIND_END = 0x45; // 'E'
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** Buffers per writev (below IOV_MAX). */
const WRITEV_BATCH = 512;
const SEALED_RE = /^([1-9][0-9]{0,15})\.sealed$/;
const PARTIAL_RE = /^([1-9][0-9]{0,15})\.[0-9a-f]+\.partial$/;
const noop = (): void => {};
const NO_BUFFER = Buffer.alloc(0);

// --- the vault -------------------------------------------------------------------------------

export interface LocalForensicVaultOptions {
  /** Folder of the records (vaultDir(stateDir)). */
  dir: string;
  key: VaultKey;
  /** Plaintext bytes buffered per record before they are encrypted as one frame. Default 64 KiB. */
  frameBytes?: number;
  /** Encrypted bytes per record waiting for the disk beyond which the record fails. Default 32 MiB. */
  maxBacklogBytes?: number;
}

export class LocalForensicVault implements ForensicVault, ForensicVaultReader {
  readonly dir: string;
  readonly keyId: string;
  private readonly key: KeyObject;
  private readonly frameBytes: number;
  private readonly maxBacklogBytes: number;

  constructor(opts: LocalForensicVaultOptions) {
    const frameBytes = opts.frameBytes ?? DEFAULT_FRAME_BYTES;
    if (!Number.isSafeInteger(frameBytes) || frameBytes < 64 || frameBytes > MAX_FRAME_BYTES) {
      throw new RangeError(`frameBytes must be an integer in 64..${MAX_FRAME_BYTES}`);
    }
    this.dir = opts.dir;
    this.key = opts.key.secret;
    this.keyId = opts.key.keyId;
    this.frameBytes = frameBytes;
    this.maxBacklogBytes = opts.maxBacklogBytes ?? DEFAULT_MAX_BACKLOG_BYTES;
  }

  /** The gateway's vault: `<stateDir>/vault` (created 0700) under `<stateDir>/vault.key` (created on first use). */
  static async open(opts: { stateDir: string; key?: VaultKey; frameBytes?: number; maxBacklogBytes?: number }): Promise<LocalForensicVault> {
    const key = opts.key ?? (await loadOrCreateVaultKey(opts.stateDir));
    const dir = vaultDir(opts.stateDir);
    try {
      const made = await mkdir(dir, { recursive: true, mode: DIR_MODE });
      if (made !== undefined) await syncDir(dirname(dir));
    } catch (err) {
      throw new VaultWriteError(`cannot create the vault folder ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const vaultOpts: LocalForensicVaultOptions = { dir, key };
    if (opts.frameBytes !== undefined) vaultOpts.frameBytes = opts.frameBytes;
    if (opts.maxBacklogBytes !== undefined) vaultOpts.maxBacklogBytes = opts.maxBacklogBytes;
    return new LocalForensicVault(vaultOpts);
  }

  recordPath(sessionId: string, statementId: number): string {
    checkVaultRecordKey(sessionId, statementId);
    return join(this.dir, sessionId, `${statementId}.sealed`);
  }

  open(meta: VaultRecordMeta): LocalVaultRecordWriter {
    checkVaultRecordMeta(meta);
    return new LocalVaultRecordWriter(meta, this.dir, this.key, this.keyId, this.frameBytes, this.maxBacklogBytes);
  }

  async read(sessionId: string, statementId: number): Promise<VaultRecord> {
    const path = this.recordPath(sessionId, statementId);
    const name = `${sessionId}/${statementId}`;
    let fh: FileHandle;
    try {
      fh = await fsOpen(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new VaultRecordNotFoundError(`no vault record for session ${sessionId} statement ${statementId} (${path})`, { cause: err });
      }
      throw err;
    }
    try {
      return await readRecord(fh, name, this.key, this.keyId, sessionId, statementId);
    } finally {
      await fh.close().catch(noop);
    }
  }
}

// --- writing ---------------------------------------------------------------------------------

export interface VaultWriterStats {
  /** The bound on buffered plaintext (frameBytes). */
  readonly frameBytes: number;
  /** Plaintext bytes in the frame buffer now. */
  readonly bufferedBytes: number;
  /** The most plaintext ever buffered (never above frameBytes). */
  readonly maxBufferedBytes: number;
  /** Encrypted bytes waiting for the disk now, and the most ever. */
  readonly queuedBytes: number;
  readonly maxQueuedBytes: number;
  readonly cells: number;
  /** Data frames sealed so far. */
  readonly frames: number;
  readonly bytesWritten: number;
  readonly failed: boolean;
}

type WriterState = 'open' | 'closing' | 'closed' | 'aborted';

export class LocalVaultRecordWriter implements VaultRecordWriter {
  readonly id: string;
  private readonly recordId: Buffer;
  private readonly dataKey: KeyObject;
  private readonly sessionDir: string;
  private readonly finalPath: string;
  private readonly partialPath: string;
  /** The frame buffer: allocated at the first add(), released (zeroed) at close() or abort(). */
  private buf: Buffer = NO_BUFFER;
  private len = 0;
  private maxLen = 0;
  private cellCount = 0;
  private frameIndex = 0;
  /** The last column entry written per column index. */
  private readonly columns = new Map<number, { name: string; source: string | undefined }>();
  private state: WriterState = 'open';
  private failure: Error | null = null;

  // Background writing: queued buffers (header, frames) are appended in order by one pump.
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private maxQueued = 0;
  private pumping: Promise<void> | null = null;
  private fh: FileHandle | null = null;
  private created = false;
  private readonly hash: Hash = createHash('sha256');
  private written = 0;

  constructor(
    meta: VaultRecordMeta,
    dir: string,
    vaultKey: KeyObject,
    keyId: string,
    private readonly frameBytes: number,
    private readonly maxBacklogBytes: number,
  ) {
    this.recordId = randomBytes(RECORD_ID_BYTES);
    this.id = this.recordId.toString('hex');
    this.sessionDir = join(dir, meta.sessionId);
    this.finalPath = join(this.sessionDir, `${meta.statementId}.sealed`);
    this.partialPath = join(this.sessionDir, `${meta.statementId}.${this.id.slice(0, 12)}.partial`);
    const rawKey = randomBytes(VAULT_KEY_BYTES);
    this.dataKey = createSecretKey(rawKey);
    this.enqueue([buildHeader(meta, this.recordId, keyId, vaultKey, rawKey)]);
    rawKey.fill(0);
  }

  stats(): VaultWriterStats {
    return {
      frameBytes: this.frameBytes,
      bufferedBytes: this.len,
      maxBufferedBytes: this.maxLen,
      queuedBytes: this.queuedBytes,
      maxQueuedBytes: this.maxQueued,
      cells: this.cellCount,
      frames: this.frameIndex,
      bytesWritten: this.written,
      failed: this.failure !== null,
    };
  }

  add(cell: VaultCell): void {
    if (this.state !== 'open') throw new VaultWriterClosedError(`vault record ${this.id} is ${this.state}: add() after close() or abort()`);
    const { row, column, columnName, source, detector, original } = cell;
    if (!Number.isSafeInteger(row) || row < 0 || row > MAX_U48) throw new VaultCellError(`invalid row ${row}`);
    if (!Number.isSafeInteger(column) || column < 0 || column >= ABSENT) throw new VaultCellError(`invalid column ${column}`);
    if (typeof columnName !== 'string' || (source !== undefined && typeof source !== 'string')) throw new VaultCellError('columnName and source must be strings');
    if (original !== null && typeof original !== 'string') throw new VaultCellError('original must be a string or null');
    const detLen = detector === undefined ? 0 : Buffer.byteLength(detector, 'utf8');
    if (detLen > 255) throw new VaultCellError('detector name too long');
    if (this.failure) return; // close() reports it; the data path must not fail on a cell
    if (this.buf === NO_BUFFER) this.buf = Buffer.allocUnsafe(this.frameBytes);
    this.cellCount++;

    const known = this.columns.get(column);
    if (known === undefined || known.name !== columnName || known.source !== source) {
      this.columns.set(column, { name: columnName, source });
      const nameLen = Buffer.byteLength(columnName, 'utf8');
      const sourceLen = source === undefined ? 0 : Buffer.byteLength(source, 'utf8');
      const size = 1 + 4 + 4 + nameLen + 4 + sourceLen;
      const [b, o] = this.reserve(size);
      b[o] = ENTRY_COLUMN;
      b.writeUInt32BE(column, o + 1);
      b.writeUInt32BE(nameLen, o + 5);
      b.write(columnName, o + 9, nameLen, 'utf8');
      b.writeUInt32BE(source === undefined ? ABSENT : sourceLen, o + 9 + nameLen);
      if (source !== undefined) b.write(source, o + 13 + nameLen, sourceLen, 'utf8');
      this.commit(b, size);
    }

    // Fast path: a short ASCII value (most masked values: emails, card numbers, tokens) goes straight into
    // the frame buffer; Buffer#write costs more than the copy itself for strings this short.
    const head = CELL_HEAD_BYTES + detLen;
    if (original !== null && original.length <= ASCII_FAST_PATH_CHARS && this.len + head + original.length <= this.frameBytes) {
      const o = this.len;
      const n = putAscii(this.buf, original, o + head);
      if (n >= 0) {
        putCellHead(this.buf, o, row, column, detector, detLen, n);
        this.commit(this.buf, head + n);
        return;
      }
    }
    const origLen = original === null ? 0 : Buffer.byteLength(original, 'utf8');
    const size = head + origLen;
    const [b, o] = this.reserve(size);
    putCellHead(b, o, row, column, detector, detLen, original === null ? ABSENT : origLen);
    if (original !== null && origLen > 0) b.write(original, o + head, origLen, 'utf8');
    this.commit(b, size);
  }

  async close(): Promise<VaultRef> {
    if (this.state !== 'open') throw new VaultWriterClosedError(`vault record ${this.id} is ${this.state}: close() twice or after abort()`);
    this.state = 'closing';
    if (!this.failure) {
      if (this.len > 0) this.sealFrame();
      this.enqueue(this.endFrame());
    }
    this.releaseBuffer();
    await this.drain();
    try {
      if (this.failure) throw this.failure;
      const fh = this.fh!;
      try {
        await fh.sync();
      } finally {
        this.fh = null;
        await fh.close().catch(noop);
      }
      try {
        await link(this.partialPath, this.finalPath);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new VaultRecordExistsError(`a vault record already exists at ${this.finalPath}; the new one was dropped`, { cause: err });
        }
        throw err;
      }
      await unlink(this.partialPath);
      await syncDir(this.sessionDir);
      this.state = 'closed';
      return { id: this.id, cells: this.cellCount, bytes: this.written, sha256: this.hash.digest('hex') };
    } catch (err) {
      this.state = 'closed';
      await this.discard();
      if (err instanceof VaultWriteError || err instanceof VaultRecordExistsError) throw err;
      throw new VaultWriteError(`cannot seal vault record ${this.finalPath}: ${(err as Error).message}`, { cause: err });
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state !== 'open') throw new VaultWriterClosedError(`vault record ${this.id} is ${this.state}: abort() after close()`);
    this.state = 'aborted';
    this.queue = [];
    this.queuedBytes = 0;
    this.releaseBuffer();
    await this.drain();
    await this.discard();
  }

  // --- frame buffer ---

  /** Where an entry of `size` bytes goes: the frame buffer (sealing it first if it is too full), or a scratch buffer. */
  private reserve(size: number): [Buffer, number] {
    if (this.len + size > this.frameBytes && this.len > 0) this.sealFrame();
    if (size <= this.frameBytes) return [this.buf, this.len];
    return [Buffer.allocUnsafe(size), 0]; // a value larger than a frame: copied in frame-sized slices
  }

  private commit(b: Buffer, size: number): void {
    if (b === this.buf) {
      this.len += size;
      if (this.len > this.maxLen) this.maxLen = this.len;
      return;
    }
    for (let off = 0; off < size; ) {
      const n = Math.min(this.frameBytes - this.len, size - off);
      b.copy(this.buf, this.len, off, off + n);
      this.len += n;
      off += n;
      if (this.len > this.maxLen) this.maxLen = this.len;
      if (this.len === this.frameBytes) this.sealFrame();
    }
  }

  private sealFrame(): void {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.dataKey, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(frameAad(this.recordId, this.frameIndex, KIND_DATA));
    const ct = cipher.update(this.buf.subarray(0, this.len));
    cipher.final();
    const head = Buffer.allocUnsafe(FRAME_HEAD_BYTES);
    head.writeUInt32BE(ct.length, 0);
    iv.copy(head, 4);
    this.len = 0;
    this.frameIndex++;
    this.enqueue([head, ct, cipher.getAuthTag()]);
  }

  private endFrame(): Buffer[] {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.dataKey, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(endAad(this.recordId, this.frameIndex, this.cellCount));
    cipher.final();
    const frame = Buffer.allocUnsafe(END_FRAME_BYTES);
    frame.writeUInt32BE(END_MARKER, 0);
    iv.copy(frame, 4);
    frame.writeBigUInt64BE(BigInt(this.cellCount), FRAME_HEAD_BYTES);
    cipher.getAuthTag().copy(frame, FRAME_HEAD_BYTES + 8);
    return [frame];
  }

  // --- background writing ---

  private enqueue(bufs: Buffer[]): void {
    if (this.failure) return; // the record is dropped already
    for (const b of bufs) {
      this.queue.push(b);
      this.queuedBytes += b.length;
    }
    if (this.queuedBytes > this.maxQueued) this.maxQueued = this.queuedBytes;
    if (this.queuedBytes > this.maxBacklogBytes) {
      this.fail(new VaultWriteError(`vault record ${this.id}: ${this.queuedBytes} bytes wait for the disk (limit ${this.maxBacklogBytes}); the record is dropped`));
      return;
    }
    // The header alone does not open the file: a record aborted before its first frame leaves nothing.
    if (this.frameIndex > 0 || this.state === 'closing') this.kick();
  }

  private kick(): void {
    if (this.pumping || this.failure || this.state === 'aborted') return;
    this.pumping = this.pump().finally(() => {
      this.pumping = null;
      // A frame queued between the pump's last look at the queue and now.
      if (this.queue.length > 0) this.kick();
    });
  }

  /** Waits until the queue is written (or the writer failed or was aborted). */
  private async drain(): Promise<void> {
    if (this.queue.length > 0) this.kick();
    while (this.pumping) await this.pumping;
  }

  private async pump(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.failure && this.state !== 'aborted') {
        if (!this.fh) {
          const made = await mkdir(this.sessionDir, { recursive: true, mode: DIR_MODE });
          if (made !== undefined) {
            await syncDir(dirname(made));
            if (made !== this.sessionDir) await syncDir(dirname(this.sessionDir));
          }
          this.created = true;
          this.fh = await fsOpen(this.partialPath, 'wx', FILE_MODE);
          if ((this.state as WriterState) === 'aborted') return; // abort() ran while the file was opening
        }
        const batch = this.queue.splice(0, WRITEV_BATCH);
        let bytes = 0;
        for (const b of batch) {
          this.hash.update(b);
          bytes += b.length;
        }
        await writevAll(this.fh, batch, bytes);
        this.queuedBytes -= bytes;
        this.written += bytes;
      }
    } catch (err) {
      this.fail(new VaultWriteError(`cannot write vault record ${this.partialPath}: ${(err as Error).message}`, { cause: err }));
    }
  }

  /** Plaintext does not linger in a buffer nobody uses any more. */
  private releaseBuffer(): void {
    this.buf.fill(0);
    this.buf = NO_BUFFER;
    this.len = 0;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.queue = [];
    this.queuedBytes = 0;
    this.len = 0;
  }

  /** Closes and removes the unfinished file, if any. */
  private async discard(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(noop);
    if (this.created) await unlink(this.partialPath).catch(noop);
  }
}

/** Writes a cell entry's head (everything before the original's bytes) at `o`. */
function putCellHead(b: Buffer, o: number, row: number, column: number, detector: string | undefined, detLen: number, origLen: number): void {
  b[o] = ENTRY_CELL;
  const hi = Math.floor(row / 0x100000000);
  b[o + 1] = hi >>> 8;
  b[o + 2] = hi & 0xff;
  putU32(b, o + 3, row >>> 0);
  putU32(b, o + 7, column);
  b[o + 11] = detLen;
  if (detLen > 0 && putAscii(b, detector!, o + 12) < 0) b.write(detector!, o + 12, detLen, 'utf8');
  putU32(b, o + 12 + detLen, origLen);
}

function putU32(b: Buffer, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** Copies `s` to `o` if it is all ASCII and returns its length; -1 (bytes left half-written) otherwise. */
function putAscii(b: Buffer, s: string, o: number): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return -1;
    b[o + i] = c;
  }
  return n;
}

function buildHeader(meta: VaultRecordMeta, recordId: Buffer, keyId: string, vaultKey: KeyObject, dataKey: Buffer): Buffer {
  const metaJson = Buffer.from(
    JSON.stringify({
      sessionId: meta.sessionId,
      statementId: meta.statementId,
      target: meta.target,
      principal: { issuer: meta.principal.issuer, subject: meta.principal.subject },
      createdAt: meta.createdAt,
    }),
    'utf8',
  );
  if (metaJson.length > MAX_META_BYTES) throw new VaultRecordMetaError(`record meta too large (${metaJson.length} bytes)`);
  const aadLen = VAULT_MAGIC.length + 4 + metaJson.length + RECORD_ID_BYTES + KEY_ID_BYTES;
  const header = Buffer.allocUnsafe(aadLen + IV_BYTES + VAULT_KEY_BYTES + TAG_BYTES);
  let o = VAULT_MAGIC.copy(header, 0);
  o = header.writeUInt32BE(metaJson.length, o);
  o += metaJson.copy(header, o);
  o += recordId.copy(header, o);
  o += Buffer.from(keyId, 'hex').copy(header, o);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', vaultKey, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(header.subarray(0, aadLen));
  const wrapped = Buffer.concat([cipher.update(dataKey), cipher.final()]);
  o += iv.copy(header, o);
  o += wrapped.copy(header, o);
  cipher.getAuthTag().copy(header, o);
  return header;
}

function frameAad(recordId: Buffer, index: number, kind: number): Buffer {
  const aad = Buffer.allocUnsafe(RECORD_ID_BYTES + 5);
  recordId.copy(aad, 0);
  aad.writeUInt32BE(index, RECORD_ID_BYTES);
  aad[RECORD_ID_BYTES + 4] = kind;
  return aad;
}

function endAad(recordId: Buffer, index: number, cells: number | bigint): Buffer {
  const aad = Buffer.allocUnsafe(RECORD_ID_BYTES + 5 + 8);
  frameAad(recordId, index, KIND_END).copy(aad, 0);
  aad.writeBigUInt64BE(BigInt(cells), RECORD_ID_BYTES + 5);
  return aad;
}

async function writevAll(fh: FileHandle, bufs: Buffer[], total: number): Promise<void> {
  let { bytesWritten } = await fh.writev(bufs);
  while (bytesWritten < total) {
    // A short write (rare on regular files): continue from where it stopped.
    let skip = bytesWritten;
    let i = 0;
    while (skip >= bufs[i]!.length) skip -= bufs[i++]!.length;
    const rest = [bufs[i]!.subarray(skip), ...bufs.slice(i + 1)];
    bufs = rest;
    total -= bytesWritten;
    ({ bytesWritten } = await fh.writev(bufs));
  }
}

// --- reading ---------------------------------------------------------------------------------

interface Header {
  meta: VaultRecordMeta;
  recordId: Buffer;
  keyId: string;
  /** Offset of the first frame. */
  end: number;
  /** The wrap part, for unwrapping. */
  aad: Buffer;
  iv: Buffer;
  wrapped: Buffer;
  tag: Buffer;
}

/** Parses the header from the file's first bytes; null when `buf` is too short (the caller reads more). */
function parseHeader(buf: Buffer, name: string): Header | null {
  const corrupt = (problem: string): VaultRecordCorruptError => new VaultRecordCorruptError(name, problem);
  if (buf.length < VAULT_MAGIC.length + 4) {
    if (!VAULT_MAGIC.subarray(0, buf.length).equals(buf.subarray(0, VAULT_MAGIC.length))) throw corrupt('not a vault record (bad magic)');
    return null;
  }
  if (!buf.subarray(0, VAULT_MAGIC.length).equals(VAULT_MAGIC)) throw corrupt('not a vault record (bad magic)');
  const metaLen = buf.readUInt32BE(VAULT_MAGIC.length);
  if (metaLen > MAX_META_BYTES) throw corrupt(`header declares ${metaLen} bytes of meta (max ${MAX_META_BYTES})`);
  const metaStart = VAULT_MAGIC.length + 4;
  const end = metaStart + metaLen + HEADER_TAIL_BYTES;
  if (buf.length < end) return null;
  let meta: VaultRecordMeta;
  try {
    meta = JSON.parse(buf.subarray(metaStart, metaStart + metaLen).toString('utf8')) as VaultRecordMeta;
    checkVaultRecordMeta(meta);
  } catch (err) {
    throw new VaultRecordCorruptError(name, `unreadable meta: ${(err as Error).message}`, { cause: err });
  }
  let o = metaStart + metaLen;
  const recordId = buf.subarray(o, (o += RECORD_ID_BYTES));
  const keyId = buf.subarray(o, (o += KEY_ID_BYTES)).toString('hex');
  const aad = buf.subarray(0, o);
  const iv = buf.subarray(o, (o += IV_BYTES));
  const wrapped = buf.subarray(o, (o += VAULT_KEY_BYTES));
  const tag = buf.subarray(o, (o += TAG_BYTES));
  return { meta, recordId, keyId, end, aad, iv, wrapped, tag };
}

/** Reads exactly `n` bytes at `pos`; fewer only at the end of the file. */
async function readAt(fh: FileHandle, pos: number, n: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === n ? buf : buf.subarray(0, got);
}

async function readRecord(fh: FileHandle, name: string, vaultKey: KeyObject, vaultKeyId: string, sessionId: string, statementId: number): Promise<VaultRecord> {
  const corrupt = (problem: string, cause?: unknown): VaultRecordCorruptError =>
    new VaultRecordCorruptError(name, problem, cause === undefined ? undefined : { cause });
  const size = (await fh.stat()).size;
  const headBuf = await readAt(fh, 0, Math.min(size, VAULT_MAGIC.length + 4 + MAX_META_BYTES + HEADER_TAIL_BYTES));
  const header = parseHeader(headBuf, name);
  if (!header) throw corrupt(`truncated header (${size} bytes)`);
  if (header.keyId !== vaultKeyId) {
    throw new VaultKeyError(`vault record ${name} was sealed under vault key ${header.keyId}, not under the key given (${vaultKeyId})`);
  }
  let dataKey: KeyObject;
  try {
    const d = createDecipheriv('aes-256-gcm', vaultKey, header.iv, { authTagLength: TAG_BYTES });
    d.setAAD(header.aad);
    d.setAuthTag(header.tag);
    const raw = Buffer.concat([d.update(header.wrapped), d.final()]);
    dataKey = createSecretKey(raw);
    raw.fill(0);
  } catch (err) {
    // The key id matched, so the key is right: the header was altered.
    throw corrupt('the header failed authentication (its meta, record id or wrapped key was altered)', err);
  }
  if (header.meta.sessionId !== sessionId || header.meta.statementId !== statementId) {
    throw corrupt(`the file holds session ${header.meta.sessionId} statement ${header.meta.statementId}: it was moved or renamed`);
  }
  const hash = createHash('sha256').update(headBuf.subarray(0, header.end));
  const decoder = new EntryDecoder(name);
  let pos = header.end;
  for (let index = 0; ; index++) {
    if (pos === size) throw corrupt(`truncated after ${index} frames: no end frame`);
    const head = await readAt(fh, pos, FRAME_HEAD_BYTES);
    if (head.length < FRAME_HEAD_BYTES) throw corrupt(`truncated in the head of frame ${index}`);
    const len = head.readUInt32BE(0);
    const iv = head.subarray(4);
    hash.update(head);
    if (len === END_MARKER) {
      const rest = await readAt(fh, pos + FRAME_HEAD_BYTES, 8 + TAG_BYTES);
      if (rest.length < 8 + TAG_BYTES) throw corrupt('truncated end frame');
      hash.update(rest);
      const cells = rest.readBigUInt64BE(0);
      try {
        const d = createDecipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
        d.setAAD(endAad(header.recordId, index, cells));
        d.setAuthTag(rest.subarray(8));
        d.final();
      } catch (err) {
        throw corrupt(`the end frame (after ${index} data frames) failed authentication: frames were dropped or the count was altered`, err);
      }
      pos += END_FRAME_BYTES;
      if (pos !== size) throw corrupt(`${size - pos} bytes after the end frame`);
      const out = decoder.finish();
      if (BigInt(out.length) !== cells) throw corrupt(`the end frame counts ${cells} cells, the frames hold ${out.length}`);
      return {
        meta: header.meta,
        cells: out,
        ref: { id: header.recordId.toString('hex'), cells: out.length, bytes: size, sha256: hash.digest('hex') },
      };
    }
    if (len === 0 || len > MAX_FRAME_BYTES) throw corrupt(`frame ${index} declares ${len} bytes`);
    const body = await readAt(fh, pos + FRAME_HEAD_BYTES, len + TAG_BYTES);
    if (body.length < len + TAG_BYTES) throw corrupt(`truncated in frame ${index}`);
    hash.update(body);
    let plain: Buffer;
    try {
      const d = createDecipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
      d.setAAD(frameAad(header.recordId, index, KIND_DATA));
      d.setAuthTag(body.subarray(len));
      plain = d.update(body.subarray(0, len));
      d.final();
    } catch (err) {
      throw corrupt(`frame ${index} failed authentication (altered, out of order, or from another record)`, err);
    }
    decoder.push(plain);
    pos += FRAME_HEAD_BYTES + len + TAG_BYTES;
  }
}

/** Decodes the entry stream across frame boundaries; copies only the entries that span frames. */
class EntryDecoder {
  private chunks: Buffer[] = [];
  private head = 0;
  private avail = 0;
  private readonly columns = new Map<number, { name: string; source: string | undefined }>();
  private readonly cells: VaultCell[] = [];

  constructor(private readonly name: string) {}

  push(buf: Buffer): void {
    this.chunks.push(buf);
    this.avail += buf.length;
    for (;;) {
      const size = this.nextEntrySize();
      if (size === null || size > this.avail) return;
      this.decode(this.take(size));
    }
  }

  finish(): VaultCell[] {
    if (this.avail > 0) throw new VaultRecordCorruptError(this.name, `${this.avail} bytes of an unfinished entry at the end`);
    return this.cells;
  }

  /** The size of the next entry, or null while its length fields are not all here. */
  private nextEntrySize(): number | null {
    if (this.avail < 1) return null;
    const tag = this.u8(0);
    if (tag === ENTRY_COLUMN) {
      if (this.avail < 9) return null;
      const n = this.u32(5);
      if (this.avail < 13 + n) return null;
      const m = this.u32(9 + n);
      return 13 + n + (m === ABSENT ? 0 : m);
    }
    if (tag === ENTRY_CELL) {
      if (this.avail < 12) return null;
      const d = this.u8(11);
      if (this.avail < 16 + d) return null;
      const m = this.u32(12 + d);
      return 16 + d + (m === ABSENT ? 0 : m);
    }
    throw new VaultRecordCorruptError(this.name, `unknown entry type ${tag}`);
  }

  private decode(e: Buffer): void {
    if (e[0] === ENTRY_COLUMN) {
      const column = e.readUInt32BE(1);
      const n = e.readUInt32BE(5);
      const m = e.readUInt32BE(9 + n);
      this.columns.set(column, {
        name: e.toString('utf8', 9, 9 + n),
        source: m === ABSENT ? undefined : e.toString('utf8', 13 + n, 13 + n + m),
      });
      return;
    }
    const row = e.readUIntBE(1, 6);
    const column = e.readUInt32BE(7);
    const d = e[11]!;
    const m = e.readUInt32BE(12 + d);
    const col = this.columns.get(column);
    if (!col) throw new VaultRecordCorruptError(this.name, `a cell of column ${column} comes before the column's entry`);
    const cell: { -readonly [K in keyof VaultCell]: VaultCell[K] } = {
      row,
      column,
      columnName: col.name,
      original: m === ABSENT ? null : e.toString('utf8', 16 + d, 16 + d + m),
    };
    if (col.source !== undefined) cell.source = col.source;
    if (d > 0) cell.detector = e.toString('utf8', 12, 12 + d) as Detector;
    this.cells.push(cell);
  }

  private u8(at: number): number {
    return this.byteAt(at);
  }

  private u32(at: number): number {
    return ((this.byteAt(at) << 24) | (this.byteAt(at + 1) << 16) | (this.byteAt(at + 2) << 8) | this.byteAt(at + 3)) >>> 0;
  }

  private byteAt(at: number): number {
    let i = 0;
    let off = this.head + at;
    while (off >= this.chunks[i]!.length) off -= this.chunks[i++]!.length;
    return this.chunks[i]![off]!;
  }

  /** Removes and returns the next n bytes (a view when they lie in one chunk). */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.head += n;
    } else {
      out = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length - this.head, n - got);
        c.copy(out, got, this.head, this.head + k);
        got += k;
        this.head += k;
        if (this.head === c.length) {
          this.chunks.shift();
          this.head = 0;
        }
      }
    }
    if (this.chunks.length > 0 && this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
    this.avail -= n;
    return out;
  }
}

// --- listing ---------------------------------------------------------------------------------

/** A record as `warden vault list` shows it: from its header and end frame, NOT verified (reveal verifies). */
export interface VaultRecordInfo {
  sessionId: string;
  statementId: number;
  /** Path relative to the vault folder. */
  file: string;
  bytes: number;
  /** False for a `.partial` file (a writer stopped before sealing) or a file without an end frame. */
  complete: boolean;
  id?: string;
  cells?: number;
  keyId?: string;
  target?: string;
  principal?: { issuer: string; subject: string };
  createdAt?: string;
  /** Why the header or end frame could not be read. */
  problem?: string;
}

/** Lists the records of one session, or of every session, without the key. Sorted by session, then statement. */
export async function listVaultRecords(dir: string, sessionId?: string): Promise<VaultRecordInfo[]> {
  let sessions: string[];
  if (sessionId !== undefined) {
    if (!isSessionId(sessionId)) throw new VaultRecordMetaError(`invalid session id ${JSON.stringify(sessionId)}`);
    sessions = [sessionId];
  } else {
    try {
      sessions = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && isSessionId(e.name)).map((e) => e.name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }
  const out: VaultRecordInfo[] = [];
  for (const s of sessions.sort()) {
    let names: string[];
    try {
      names = await readdir(join(dir, s));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    for (const n of names) {
      const sealed = SEALED_RE.exec(n);
      const partial = sealed ? null : PARTIAL_RE.exec(n);
      const m = sealed ?? partial;
      if (!m) continue;
      out.push(await describeRecord(join(dir, s, n), s, Number(m[1]), `${s}/${n}`, sealed !== null));
    }
  }
  return out.sort((a, b) => (a.sessionId < b.sessionId ? -1 : a.sessionId > b.sessionId ? 1 : a.statementId - b.statementId || a.file.localeCompare(b.file)));
}

async function describeRecord(path: string, sessionId: string, statementId: number, file: string, sealed: boolean): Promise<VaultRecordInfo> {
  const info: VaultRecordInfo = { sessionId, statementId, file, bytes: 0, complete: false };
  let fh: FileHandle;
  try {
    fh = await fsOpen(path, 'r');
  } catch (err) {
    info.problem = `cannot open: ${(err as Error).message}`;
    return info;
  }
  try {
    info.bytes = (await fh.stat()).size;
    const header = parseHeader(await readAt(fh, 0, Math.min(info.bytes, VAULT_MAGIC.length + 4 + MAX_META_BYTES + HEADER_TAIL_BYTES)), file);
    if (!header) {
      info.problem = 'truncated header';
      return info;
    }
    info.id = header.recordId.toString('hex');
    info.keyId = header.keyId;
    info.target = header.meta.target;
    info.principal = header.meta.principal;
    info.createdAt = header.meta.createdAt;
    if (!sealed) {
      info.problem = 'unfinished: the writer stopped before sealing it';
      return info;
    }
    if (info.bytes >= header.end + END_FRAME_BYTES) {
      const end = await readAt(fh, info.bytes - END_FRAME_BYTES, END_FRAME_BYTES);
      if (end.readUInt32BE(0) === END_MARKER) {
        info.cells = Number(end.readBigUInt64BE(FRAME_HEAD_BYTES));
        info.complete = true;
      }
    }
    if (!info.complete) info.problem = 'no end frame (truncated)';
  } catch (err) {
    info.problem = (err as Error).message;
  } finally {
    await fh.close().catch(noop);
  }
  return info;
}
