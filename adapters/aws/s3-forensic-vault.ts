/**
 * S3ForensicVault: the ForensicVault on AWS. One S3 object per statement, `<prefix><sessionId>/<statementId>.sealed`,
 * envelope-encrypted: KMS GenerateDataKey gives each record a fresh AES-256 data key (its plaintext stays in
 * this process, its KMS-wrapped copy is stored in the record's header), and every frame of cells is
 * AES-256-GCM under it. The object never holds an original in clear, and nothing is written to S3 before
 * it is encrypted. The format is in kms-vault-record.ts.
 *
 * Roles: the proxy task needs `kms:GenerateDataKey` on the vault key and `s3:PutObject` on the bucket, and
 * nothing that decrypts. An operator reads with S3ForensicVaultReader, which needs `s3:GetObject` and
 * `kms:Decrypt`; without Decrypt a reader gets VaultKeyError and no cell.
 *
 * Writing: add() packs cells into a plaintext frame buffer (default 64 KiB) and seals it when full. The
 * first add() asks KMS for the data key; frames filled before it answers wait in memory, and none is
 * sealed or sent before it does. Sealed bytes are collected into parts: a record that stays under
 * `partBytes` (default 8 MiB) is one PutObject at close(); a larger one becomes a multipart upload whose
 * parts go out in the background, one at a time, in order. Memory per record is the frame buffer plus the
 * backlog (plaintext frames waiting for the key, sealed bytes waiting for S3), capped by `maxBacklogBytes`
 * (default 32 MiB): past it the record fails and close() rejects, because add() cannot apply backpressure.
 *
 * Writes are create-only (`If-None-Match: *` on PutObject and CompleteMultipartUpload): a record is never
 * replaced. A failed or aborted multipart upload is aborted; the bucket's lifecycle rule for incomplete
 * multipart uploads removes what an abort could not.
 *
 * @see https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKey.html
 * @see https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
 */
import { createHash, createSecretKey, randomBytes, type Hash, type KeyObject } from 'node:crypto';
import { DecryptCommand, GenerateDataKeyCommand, type KMSClient } from '@aws-sdk/client-kms';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  checkVaultRecordKey,
  checkVaultRecordMeta,
  VaultCellError,
  VaultKeyError,
  VaultRecordCorruptError,
  VaultRecordExistsError,
  VaultRecordNotFoundError,
  VaultWriteError,
  VaultWriterClosedError,
  type ForensicVault,
  type ForensicVaultReader,
  type VaultCell,
  type VaultRecord,
  type VaultRecordMeta,
  type VaultRecordWriter,
  type VaultRef,
} from '../../core/masking/forensic-vault.ts';
import {
  ABSENT,
  ByteReader,
  cellEntrySize,
  columnEntry,
  encryptionContext,
  headerEnd,
  headerStart,
  MAX_FRAME_BYTES,
  MAX_U48,
  metaJson,
  readFrames,
  readHeader,
  RECORD_ID_BYTES,
  sealDataFrame,
  sealEndFrame,
  writeCellEntry,
} from './kms-vault-record.ts';

export const DEFAULT_S3_VAULT_FRAME_BYTES = 64 * 1024;
export const DEFAULT_S3_VAULT_PART_BYTES = 8 * 1024 * 1024;
export const DEFAULT_S3_VAULT_MAX_BACKLOG_BYTES = 32 * 1024 * 1024;
/** S3's smallest part (every part but the last). */
const MIN_PART_BYTES = 5 * 1024 * 1024;
const DEFAULT_KMS_TIMEOUT_MS = 10_000;
const noop = (): void => {};

export interface S3ForensicVaultOptions {
  readonly s3: S3Client;
  readonly kms: KMSClient;
  readonly bucket: string;
  /** The vault's KMS key (ARN, alias ARN or id), used for GenerateDataKey. */
  readonly keyId: string;
  /** Object key prefix, empty or ending in '/'. Default ''. */
  readonly prefix?: string;
  /** Plaintext bytes buffered per record before they are sealed as one frame. Default 64 KiB. */
  readonly frameBytes?: number;
  /** Sealed bytes per multipart part (at least 5 MiB); a smaller record is one PutObject. Default 8 MiB. */
  readonly partBytes?: number;
  /** Bytes per record waiting for the data key or for S3 beyond which the record fails. Default 32 MiB. */
  readonly maxBacklogBytes?: number;
  /** A GenerateDataKey call that takes longer fails the record. Default 10 s. */
  readonly kmsTimeoutMs?: number;
}

export function s3VaultObjectKey(prefix: string, sessionId: string, statementId: number): string {
  checkVaultRecordKey(sessionId, statementId);
  return `${prefix}${sessionId}/${statementId}.sealed`;
}

function checkPrefix(prefix: string): string {
  if (prefix !== '' && !prefix.endsWith('/')) throw new RangeError(`prefix must be empty or end with '/', got ${JSON.stringify(prefix)}`);
  return prefix;
}

export class S3ForensicVault implements ForensicVault {
  private readonly o: Required<Omit<S3ForensicVaultOptions, 's3' | 'kms'>> & Pick<S3ForensicVaultOptions, 's3' | 'kms'>;

  constructor(options: S3ForensicVaultOptions) {
    const frameBytes = options.frameBytes ?? DEFAULT_S3_VAULT_FRAME_BYTES;
    const partBytes = options.partBytes ?? DEFAULT_S3_VAULT_PART_BYTES;
    if (!Number.isSafeInteger(frameBytes) || frameBytes < 64 || frameBytes > MAX_FRAME_BYTES) throw new RangeError(`frameBytes must be an integer in 64..${MAX_FRAME_BYTES}`);
    if (!Number.isSafeInteger(partBytes) || partBytes < MIN_PART_BYTES) throw new RangeError(`partBytes must be at least ${MIN_PART_BYTES} (S3's smallest part)`);
    this.o = {
      s3: options.s3,
      kms: options.kms,
      bucket: options.bucket,
      keyId: options.keyId,
      prefix: checkPrefix(options.prefix ?? ''),
      frameBytes,
      partBytes,
      maxBacklogBytes: options.maxBacklogBytes ?? DEFAULT_S3_VAULT_MAX_BACKLOG_BYTES,
      kmsTimeoutMs: options.kmsTimeoutMs ?? DEFAULT_KMS_TIMEOUT_MS,
    };
  }

  objectKey(sessionId: string, statementId: number): string {
    return s3VaultObjectKey(this.o.prefix, sessionId, statementId);
  }

  open(meta: VaultRecordMeta): S3VaultRecordWriter {
    checkVaultRecordMeta(meta);
    return new S3VaultRecordWriter(meta, this.o);
  }
}

// --- writing ---------------------------------------------------------------------------------

export interface S3VaultWriterStats {
  /** The most plaintext ever in the frame buffer (never above frameBytes). */
  readonly maxBufferedBytes: number;
  /** The most bytes ever waiting for the data key or for S3. */
  readonly maxBacklogBytes: number;
  readonly cells: number;
  readonly frames: number;
  /** Parts uploaded (0 for a record written with one PutObject). */
  readonly parts: number;
  readonly bytesWritten: number;
}

type WriterState = 'open' | 'closing' | 'closed' | 'aborted';
type Pending = { kind: 'data'; index: number; plain: Buffer } | { kind: 'end'; index: number; cells: number };

export class S3VaultRecordWriter implements VaultRecordWriter {
  readonly id: string;
  readonly key: string;
  private readonly recordId: Buffer;
  private readonly meta: Buffer;
  private state: WriterState = 'open';
  private failure: Error | null = null;

  // Plaintext: the frame buffer, allocated at the first add() and zeroed when released.
  private buf: Buffer = Buffer.alloc(0);
  private len = 0;
  private maxLen = 0;
  private cellCount = 0;
  private frameIndex = 0;
  private readonly columns = new Map<number, { name: string; source: string | undefined }>();

  // The data key: requested at the first add() (or at close() for a record without cells).
  private dataKey: KeyObject | null = null;
  private keyRequest: Promise<void> | null = null;
  /** Frames filled before the data key arrived (plaintext), sealed in order once it does. */
  private waiting: Pending[] = [];

  // Sealed bytes not yet sent, the multipart upload, and the running digest of everything sealed.
  private sealed: Buffer[] = [];
  private sealedBytes = 0;
  private backlog = 0;
  private maxBacklog = 0;
  private uploadId: string | null = null;
  private readonly parts: CompletedPart[] = [];
  private pumping: Promise<void> | null = null;
  private readonly hash: Hash = createHash('sha256');
  private total = 0;
  private written = 0;

  constructor(
    private readonly metaFields: VaultRecordMeta,
    private readonly o: Required<Omit<S3ForensicVaultOptions, 's3' | 'kms'>> & Pick<S3ForensicVaultOptions, 's3' | 'kms'>,
  ) {
    this.recordId = randomBytes(RECORD_ID_BYTES);
    this.id = this.recordId.toString('hex');
    this.meta = metaJson(metaFields);
    this.key = s3VaultObjectKey(o.prefix, metaFields.sessionId, metaFields.statementId);
  }

  stats(): S3VaultWriterStats {
    return { maxBufferedBytes: this.maxLen, maxBacklogBytes: this.maxBacklog, cells: this.cellCount, frames: this.frameIndex, parts: this.parts.length, bytesWritten: this.written };
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
    if (this.buf.length === 0) this.buf = Buffer.allocUnsafe(this.o.frameBytes);
    this.requestKey();
    this.cellCount++;

    const known = this.columns.get(column);
    if (known === undefined || known.name !== columnName || known.source !== source) {
      this.columns.set(column, { name: columnName, source });
      this.append(columnEntry(column, columnName, source));
    }
    const origLen = original === null ? 0 : Buffer.byteLength(original, 'utf8');
    const size = cellEntrySize(detLen, origLen);
    if (this.len + size > this.o.frameBytes && this.len > 0) this.sealFrame();
    if (size <= this.o.frameBytes) {
      writeCellEntry(this.buf, this.len, row, column, detector, detLen, original, origLen);
      this.grow(size);
    } else {
      // A value larger than a frame: encoded aside, copied in frame-sized slices.
      const big = Buffer.allocUnsafe(size);
      writeCellEntry(big, 0, row, column, detector, detLen, original, origLen);
      this.append(big);
      big.fill(0);
    }
  }

  async close(): Promise<VaultRef> {
    if (this.state !== 'open') throw new VaultWriterClosedError(`vault record ${this.id} is ${this.state}: close() twice or after abort()`);
    this.state = 'closing';
    if (!this.failure) {
      if (this.len > 0) this.sealFrame();
      this.queue({ kind: 'end', index: this.frameIndex, cells: this.cellCount });
    }
    this.releaseBuffer();
    this.requestKey();
    await this.keyRequest;
    await this.drain();
    try {
      if (this.failure) throw this.failure;
      const body = this.takeSealed();
      if (this.uploadId === null) {
        await this.o.s3.send(
          new PutObjectCommand({ Bucket: this.o.bucket, Key: this.key, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream', IfNoneMatch: '*' }),
        );
      } else {
        if (body.length > 0) await this.uploadPart(body);
        await this.o.s3.send(
          new CompleteMultipartUploadCommand({ Bucket: this.o.bucket, Key: this.key, UploadId: this.uploadId, MultipartUpload: { Parts: this.parts }, IfNoneMatch: '*' }),
        );
      }
      this.written += body.length;
      this.state = 'closed';
      this.forgetKey();
      return { id: this.id, cells: this.cellCount, bytes: this.total, sha256: this.hash.digest('hex') };
    } catch (err) {
      this.state = 'closed';
      this.forgetKey();
      await this.abortUpload();
      if (err instanceof VaultWriteError) throw err;
      if (isPreconditionFailed(err)) throw new VaultRecordExistsError(`a vault record already exists at s3://${this.o.bucket}/${this.key}; the new one was dropped`, { cause: err });
      throw new VaultWriteError(`cannot write vault record s3://${this.o.bucket}/${this.key}: ${(err as Error).message}`, { cause: err });
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state !== 'open') throw new VaultWriterClosedError(`vault record ${this.id} is ${this.state}: abort() after close()`);
    this.state = 'aborted';
    this.releaseBuffer();
    this.dropBacklog();
    await this.keyRequest?.catch(noop);
    this.forgetKey();
    await this.drain();
    await this.abortUpload();
  }

  // --- the frame buffer ---

  /** Appends bytes to the frame buffer, sealing it whenever it fills. */
  private append(b: Buffer): void {
    for (let off = 0; off < b.length; ) {
      if (this.len === this.o.frameBytes) this.sealFrame();
      const n = Math.min(this.o.frameBytes - this.len, b.length - off);
      b.copy(this.buf, this.len, off, off + n);
      off += n;
      this.grow(n);
    }
  }

  private grow(n: number): void {
    this.len += n;
    if (this.len > this.maxLen) this.maxLen = this.len;
  }

  private sealFrame(): void {
    const plain = this.buf.subarray(0, this.len);
    const index = this.frameIndex++;
    this.len = 0;
    if (this.dataKey) this.push(sealDataFrame(this.dataKey, this.recordId, index, plain));
    else this.queue({ kind: 'data', index, plain: Buffer.from(plain) }); // a copy: the buffer is reused
  }

  private queue(p: Pending): void {
    if (this.failure) return;
    if (this.dataKey && this.waiting.length === 0) {
      this.push(p.kind === 'data' ? sealDataFrame(this.dataKey, this.recordId, p.index, p.plain) : [sealEndFrame(this.dataKey, this.recordId, p.index, p.cells)]);
      if (p.kind === 'data') p.plain.fill(0);
      return;
    }
    this.waiting.push(p);
    if (p.kind === 'data') this.account(p.plain.length);
  }

  private releaseBuffer(): void {
    this.buf.fill(0);
    this.buf = Buffer.alloc(0);
    this.len = 0;
  }

  // --- the data key ---

  private requestKey(): void {
    if (this.keyRequest || this.state === 'aborted') return;
    const start = headerStart(this.meta, this.recordId);
    const context = encryptionContext(this.metaFields, this.recordId, start);
    this.keyRequest = this.o.kms
      .send(new GenerateDataKeyCommand({ KeyId: this.o.keyId, KeySpec: 'AES_256', EncryptionContext: context }), { abortSignal: AbortSignal.timeout(this.o.kmsTimeoutMs) })
      .then((out) => {
        if (!out.Plaintext || out.Plaintext.length !== 32 || !out.CiphertextBlob || !out.KeyId) throw new Error('GenerateDataKey answered without a 256-bit key');
        const raw = Buffer.from(out.Plaintext);
        out.Plaintext.fill(0);
        if (this.state === 'aborted' || this.failure) {
          raw.fill(0);
          return;
        }
        this.dataKey = createSecretKey(raw);
        raw.fill(0);
        this.push([start, headerEnd(out.KeyId, out.CiphertextBlob)]);
        const waiting = this.waiting;
        this.waiting = [];
        for (const p of waiting) {
          if (p.kind === 'data') {
            this.account(-p.plain.length);
            this.push(sealDataFrame(this.dataKey, this.recordId, p.index, p.plain));
            p.plain.fill(0);
          } else this.push([sealEndFrame(this.dataKey, this.recordId, p.index, p.cells)]);
        }
      })
      .catch((err: unknown) => {
        this.fail(new VaultWriteError(`vault record ${this.id}: no data key from KMS (${(err as Error).name}: ${(err as Error).message}); the originals are not sealed`, { cause: err }));
      });
  }

  private forgetKey(): void {
    this.dataKey = null; // the KeyObject's memory is freed with it; nothing else holds the key
  }

  // --- sealed bytes and S3 ---

  private push(bufs: Buffer[]): void {
    if (this.failure) return;
    for (const b of bufs) {
      this.hash.update(b);
      this.sealed.push(b);
      this.sealedBytes += b.length;
      this.total += b.length;
      this.account(b.length);
    }
    if (this.sealedBytes >= this.o.partBytes) this.kick();
  }

  private account(delta: number): void {
    this.backlog += delta;
    if (this.backlog > this.maxBacklog) this.maxBacklog = this.backlog;
    if (this.backlog > this.o.maxBacklogBytes) {
      this.fail(new VaultWriteError(`vault record ${this.id}: ${this.backlog} bytes wait for KMS or S3 (limit ${this.o.maxBacklogBytes}); the record is dropped`));
    }
  }

  private takeSealed(): Buffer {
    const body = this.sealed.length === 1 ? this.sealed[0]! : Buffer.concat(this.sealed, this.sealedBytes);
    this.sealed = [];
    this.sealedBytes = 0;
    return body;
  }

  private kick(): void {
    if (this.pumping || this.failure || this.state === 'aborted') return;
    this.pumping = this.pump().finally(() => {
      this.pumping = null;
      if (this.sealedBytes >= this.o.partBytes) this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  /** Sends full parts, one at a time, while there are enough sealed bytes for one. */
  private async pump(): Promise<void> {
    try {
      while (this.sealedBytes >= this.o.partBytes && !this.failure && this.state !== 'aborted') {
        if (this.uploadId === null) {
          const created = await this.o.s3.send(new CreateMultipartUploadCommand({ Bucket: this.o.bucket, Key: this.key, ContentType: 'application/octet-stream' }));
          if (!created.UploadId) throw new Error('CreateMultipartUpload answered without an upload id');
          this.uploadId = created.UploadId;
          if ((this.state as WriterState) === 'aborted') return;
        }
        const body = this.takeSealed();
        await this.uploadPart(body);
        this.written += body.length;
      }
    } catch (err) {
      this.fail(new VaultWriteError(`cannot write vault record s3://${this.o.bucket}/${this.key}: ${(err as Error).message}`, { cause: err }));
    }
  }

  private async uploadPart(body: Buffer): Promise<void> {
    const PartNumber = this.parts.length + 1;
    const out = await this.o.s3.send(new UploadPartCommand({ Bucket: this.o.bucket, Key: this.key, UploadId: this.uploadId!, PartNumber, Body: body, ContentLength: body.length }));
    this.account(-body.length);
    this.parts.push({ PartNumber, ETag: out.ETag! });
  }

  private async abortUpload(): Promise<void> {
    const uploadId = this.uploadId;
    this.uploadId = null;
    if (uploadId === null) return;
    // Best effort: the bucket's lifecycle rule removes an upload this could not abort.
    await this.o.s3.send(new AbortMultipartUploadCommand({ Bucket: this.o.bucket, Key: this.key, UploadId: uploadId })).catch(noop);
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.dropBacklog();
  }

  private dropBacklog(): void {
    for (const p of this.waiting) if (p.kind === 'data') p.plain.fill(0);
    this.waiting = [];
    this.sealed = [];
    this.sealedBytes = 0;
    this.backlog = 0;
  }
}

function isPreconditionFailed(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412;
}

// --- reading ---------------------------------------------------------------------------------

export interface S3ForensicVaultReaderOptions {
  readonly s3: S3Client;
  readonly kms: KMSClient;
  readonly bucket: string;
  /** Object key prefix, as the vault writes with. Default ''. */
  readonly prefix?: string;
  /**
   * The vault key (ARN) records must be sealed under; passed to Decrypt, so a record wrapped by any other
   * key is refused. Default: the key named in the record's header.
   */
  readonly keyId?: string;
}

/** An operator's reader: needs s3:GetObject and kms:Decrypt on the vault key. */
export class S3ForensicVaultReader implements ForensicVaultReader {
  private readonly prefix: string;

  constructor(private readonly o: S3ForensicVaultReaderOptions) {
    this.prefix = checkPrefix(o.prefix ?? '');
  }

  async read(sessionId: string, statementId: number): Promise<VaultRecord> {
    const key = s3VaultObjectKey(this.prefix, sessionId, statementId);
    const name = `s3://${this.o.bucket}/${key}`;
    let body: AsyncIterable<Uint8Array>;
    try {
      const out = await this.o.s3.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: key }));
      body = out.Body as unknown as AsyncIterable<Uint8Array>;
      if (!body || typeof body[Symbol.asyncIterator] !== 'function') throw new Error('GetObject answered without a readable body');
    } catch (err) {
      if ((err as Error).name === 'NoSuchKey' || (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) {
        throw new VaultRecordNotFoundError(`no vault record for session ${sessionId} statement ${statementId} (${name})`, { cause: err });
      }
      throw err;
    }
    const r = new ByteReader(body);
    try {
      const header = await readHeader(r, name);
      if (header.meta.sessionId !== sessionId || header.meta.statementId !== statementId) {
        throw new VaultRecordCorruptError(name, `the object holds session ${header.meta.sessionId} statement ${header.meta.statementId}: it was moved or renamed`);
      }
      if (this.o.keyId !== undefined && isArn(this.o.keyId) && header.keyArn !== this.o.keyId) {
        throw new VaultKeyError(`vault record ${name} was sealed under KMS key ${header.keyArn}, not under ${this.o.keyId}`);
      }
      const dataKey = await this.unwrap(name, header.wrappedKey, header.context, header.keyArn);
      const cells = await readFrames(r, name, dataKey, header.recordId);
      return { meta: header.meta, cells, ref: { id: header.recordId.toString('hex'), cells: cells.length, bytes: r.position, sha256: r.hash.digest('hex') } };
    } finally {
      await r.cancel().catch(noop);
    }
  }

  private async unwrap(name: string, wrapped: Buffer, context: Record<string, string>, recordKeyArn: string): Promise<KeyObject> {
    let out;
    try {
      out = await this.o.kms.send(new DecryptCommand({ CiphertextBlob: wrapped, EncryptionContext: context, KeyId: this.o.keyId ?? recordKeyArn }));
    } catch (err) {
      const code = (err as Error).name;
      if (code === 'InvalidCiphertextException') {
        throw new VaultRecordCorruptError(name, 'KMS refused to unwrap the data key: the header (meta, record id or wrapped key) was altered', { cause: err });
      }
      if (code === 'AccessDeniedException') throw new VaultKeyError(`not allowed to decrypt with the vault key ${recordKeyArn} (kms:Decrypt denied): ${name} stays sealed`, { cause: err });
      if (code === 'IncorrectKeyException') throw new VaultKeyError(`vault record ${name} was not sealed under KMS key ${this.o.keyId ?? recordKeyArn}`, { cause: err });
      throw new VaultKeyError(`cannot unwrap the data key of ${name} (${code})`, { cause: err });
    }
    if (!out.Plaintext || out.Plaintext.length !== 32) throw new VaultKeyError(`KMS answered without a 256-bit data key for ${name}`);
    const raw = Buffer.from(out.Plaintext);
    out.Plaintext.fill(0);
    const key = createSecretKey(raw);
    raw.fill(0);
    return key;
  }
}

function isArn(id: string): boolean {
  return id.startsWith('arn:') && !id.includes(':alias/');
}
