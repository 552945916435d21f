/**
 * The sealed record format of the S3 forensic vault: the local vault's frames (adapters/local/forensic-vault.ts)
 * behind a header whose data key is wrapped by KMS instead of a local key file.
 *
 * Object layout (integers big-endian):
 *
 *   header
 *     5   magic "WVKM1"
 *     4   u32 n: length of the meta JSON (at most 64 KiB)
 *     n   meta JSON (UTF-8): { sessionId, statementId, target, principal: { issuer, subject }, createdAt }
 *     16  record id (random)
 *     2   u16 a: length of the KMS key ARN
 *     a   the KMS key ARN GenerateDataKey answered with (UTF-8), to name the key a reader needs
 *     2   u16 w: length of the wrapped data key, 1..6144
 *     w   the wrapped data key (KMS CiphertextBlob)
 *   data frames and the end frame: exactly as the local vault's
 *     4 u32 L (1..16 MiB; 0xFFFFFFFF marks the end frame) | 12 IV | L ciphertext | 16 tag,
 *     AES-256-GCM under the data key, AAD = record id || u32 frame index || "D" (data) or "E" || u64 cells (end)
 *
 * The header is authenticated by KMS rather than by a tag of our own: the data key is generated and
 * unwrapped under an encryption context that holds the record id, the session and statement, and the
 * SHA-256 of everything in the header before the ARN. KMS refuses to unwrap (InvalidCiphertextException)
 * when any of it was changed, and CloudTrail shows which record every Decrypt opened. The context is
 * logged in clear by CloudTrail, so it holds ids and a digest, never a value.
 *
 * The plaintext of the data frames is the local vault's entry stream:
 *   column  0x01  u32 column, u32 n, n bytes name, u32 m (0xFFFFFFFF: no source), m bytes `schema.table.column`
 *   cell    0x02  u48 row, u32 column, u8 d (0: no detector), d bytes detector, u32 m (0xFFFFFFFF: NULL), m bytes original
 *
 * @see https://docs.aws.amazon.com/kms/latest/developerguide/encrypt_context.html
 */
import { createCipheriv, createDecipheriv, createHash, type Hash, type KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import {
  checkVaultRecordMeta,
  VaultRecordCorruptError,
  VaultRecordMetaError,
  type VaultCell,
  type VaultRecordMeta,
} from '../../core/masking/forensic-vault.ts';
import type { Detector } from '../../core/masking/vocabulary.ts';

export const KMS_VAULT_MAGIC = Buffer.from('WVKM1', 'latin1');
export const RECORD_ID_BYTES = 16;
/** Largest ciphertext a frame may declare; larger lengths are corruption. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
export const MAX_META_BYTES = 64 * 1024;
/** KMS ciphertext blobs are at most 6144 bytes. */
const MAX_WRAPPED_KEY_BYTES = 6144;
const MAX_KEY_ARN_BYTES = 2048;
export const END_MARKER = 0xffffffff;
export const ABSENT = 0xffffffff;
export const MAX_U48 = 2 ** 48 - 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const FRAME_HEAD_BYTES = 4 + IV_BYTES;
export const END_FRAME_BYTES = FRAME_HEAD_BYTES + 8 + TAG_BYTES;
export const ENTRY_COLUMN = 0x01;
export const ENTRY_CELL = 0x02;
const KIND_DATA = 0x44; // 'D'
const KIND_END = 0x45; // 'E'

// --- header ----------------------------------------------------------------------------------

/** The meta as stored: fixed key order, nothing else. */
export function metaJson(meta: VaultRecordMeta): Buffer {
  const json = Buffer.from(
    JSON.stringify({
      sessionId: meta.sessionId,
      statementId: meta.statementId,
      target: meta.target,
      principal: { issuer: meta.principal.issuer, subject: meta.principal.subject },
      createdAt: meta.createdAt,
    }),
    'utf8',
  );
  if (json.length > MAX_META_BYTES) throw new VaultRecordMetaError(`record meta too large (${json.length} bytes)`);
  return json;
}

/** Magic, meta and record id: the part of the header that the encryption context binds. */
export function headerStart(meta: Buffer, recordId: Buffer): Buffer {
  const out = Buffer.allocUnsafe(KMS_VAULT_MAGIC.length + 4 + meta.length + RECORD_ID_BYTES);
  let o = KMS_VAULT_MAGIC.copy(out, 0);
  o = out.writeUInt32BE(meta.length, o);
  o += meta.copy(out, o);
  recordId.copy(out, o);
  return out;
}

/** The KMS encryption context of a record (also sent with Decrypt; a mismatch is a refusal). */
export function encryptionContext(meta: { sessionId: string; statementId: number }, recordId: Buffer, start: Buffer): Record<string, string> {
  return {
    'warden:vault-record': recordId.toString('hex'),
    'warden:session': meta.sessionId,
    'warden:statement': String(meta.statementId),
    'warden:header-sha256': createHash('sha256').update(start).digest('hex'),
  };
}

export function headerEnd(keyArn: string, wrappedKey: Uint8Array): Buffer {
  const arn = Buffer.from(keyArn, 'utf8');
  if (arn.length === 0 || arn.length > MAX_KEY_ARN_BYTES) throw new RangeError(`unexpected KMS key id length ${arn.length}`);
  if (wrappedKey.length === 0 || wrappedKey.length > MAX_WRAPPED_KEY_BYTES) throw new RangeError(`unexpected wrapped key length ${wrappedKey.length}`);
  const out = Buffer.allocUnsafe(2 + arn.length + 2 + wrappedKey.length);
  let o = out.writeUInt16BE(arn.length, 0);
  o += arn.copy(out, o);
  o = out.writeUInt16BE(wrappedKey.length, o);
  out.set(wrappedKey, o);
  return out;
}

// --- frames ----------------------------------------------------------------------------------

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

/** A data frame: head (length, IV), ciphertext, tag. */
export function sealDataFrame(dataKey: KeyObject, recordId: Buffer, index: number, plain: Buffer): Buffer[] {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(frameAad(recordId, index, KIND_DATA));
  const ct = cipher.update(plain);
  cipher.final();
  const head = Buffer.allocUnsafe(FRAME_HEAD_BYTES);
  head.writeUInt32BE(ct.length, 0);
  iv.copy(head, 4);
  return [head, ct, cipher.getAuthTag()];
}

/** The end frame: the cell count in clear, authenticated, after `index` data frames. */
export function sealEndFrame(dataKey: KeyObject, recordId: Buffer, index: number, cells: number): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(endAad(recordId, index, cells));
  cipher.final();
  const frame = Buffer.allocUnsafe(END_FRAME_BYTES);
  frame.writeUInt32BE(END_MARKER, 0);
  iv.copy(frame, 4);
  frame.writeBigUInt64BE(BigInt(cells), FRAME_HEAD_BYTES);
  cipher.getAuthTag().copy(frame, FRAME_HEAD_BYTES + 8);
  return frame;
}

// --- entries ---------------------------------------------------------------------------------

/** The column entry of `column`, as bytes. */
export function columnEntry(column: number, name: string, source: string | undefined): Buffer {
  const nameLen = Buffer.byteLength(name, 'utf8');
  const sourceLen = source === undefined ? 0 : Buffer.byteLength(source, 'utf8');
  const b = Buffer.allocUnsafe(13 + nameLen + sourceLen);
  b[0] = ENTRY_COLUMN;
  b.writeUInt32BE(column, 1);
  b.writeUInt32BE(nameLen, 5);
  b.write(name, 9, nameLen, 'utf8');
  b.writeUInt32BE(source === undefined ? ABSENT : sourceLen, 9 + nameLen);
  if (source !== undefined) b.write(source, 13 + nameLen, sourceLen, 'utf8');
  return b;
}

/** Size of a cell entry. */
export function cellEntrySize(detLen: number, origLen: number): number {
  return 16 + detLen + origLen;
}

/** Writes a cell entry at `o` (the caller made room: cellEntrySize bytes). */
export function writeCellEntry(b: Buffer, o: number, row: number, column: number, detector: string | undefined, detLen: number, original: string | null, origLen: number): void {
  b[o] = ENTRY_CELL;
  b.writeUIntBE(row, o + 1, 6);
  b.writeUInt32BE(column, o + 7);
  b[o + 11] = detLen;
  if (detLen > 0) b.write(detector!, o + 12, detLen, 'utf8');
  b.writeUInt32BE(original === null ? ABSENT : origLen, o + 12 + detLen);
  if (original !== null && origLen > 0) b.write(original, o + 16 + detLen, origLen, 'utf8');
}

// --- reading ---------------------------------------------------------------------------------

/** Reads exact byte counts from an async stream of chunks (an S3 object body), hashing what it hands out. */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunks: Buffer[] = [];
  private avail = 0;
  private done = false;
  readonly hash: Hash = createHash('sha256');
  /** Bytes handed out so far. */
  position = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Exactly `n` bytes, or fewer at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    while (this.avail < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length > 0) {
        this.chunks.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
        this.avail += r.value.length;
      }
    }
    const take = Math.min(n, this.avail);
    let out: Buffer;
    if (this.chunks.length > 0 && this.chunks[0]!.length >= take) {
      out = this.chunks[0]!.subarray(0, take);
      this.chunks[0] = this.chunks[0]!.subarray(take);
      if (this.chunks[0].length === 0) this.chunks.shift();
    } else {
      out = Buffer.allocUnsafe(take);
      let got = 0;
      while (got < take) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, take - got);
        c.copy(out, got, 0, k);
        got += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.avail -= take;
    this.position += take;
    this.hash.update(out);
    return out;
  }

  async atEnd(): Promise<boolean> {
    if (this.avail > 0) return false;
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length > 0) {
        this.chunks.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
        this.avail += r.value.length;
        return false;
      }
    }
    return true;
  }

  /** Stops reading (the rest of the body is discarded). */
  async cancel(): Promise<void> {
    await this.it.return?.();
  }
}

export interface ParsedHeader {
  meta: VaultRecordMeta;
  recordId: Buffer;
  keyArn: string;
  wrappedKey: Buffer;
  context: Record<string, string>;
}

export async function readHeader(r: ByteReader, name: string): Promise<ParsedHeader> {
  const corrupt = (problem: string, cause?: unknown): VaultRecordCorruptError => new VaultRecordCorruptError(name, problem, cause === undefined ? undefined : { cause });
  const magic = await r.read(KMS_VAULT_MAGIC.length + 4);
  if (magic.length < KMS_VAULT_MAGIC.length || !magic.subarray(0, KMS_VAULT_MAGIC.length).equals(KMS_VAULT_MAGIC)) throw corrupt('not a vault record (bad magic)');
  if (magic.length < KMS_VAULT_MAGIC.length + 4) throw corrupt('truncated header');
  const metaLen = magic.readUInt32BE(KMS_VAULT_MAGIC.length);
  if (metaLen > MAX_META_BYTES) throw corrupt(`header declares ${metaLen} bytes of meta (max ${MAX_META_BYTES})`);
  const metaBuf = await r.read(metaLen);
  const recordId = await r.read(RECORD_ID_BYTES);
  if (metaBuf.length < metaLen || recordId.length < RECORD_ID_BYTES) throw corrupt('truncated header');
  let meta: VaultRecordMeta;
  try {
    meta = JSON.parse(metaBuf.toString('utf8')) as VaultRecordMeta;
    checkVaultRecordMeta(meta);
  } catch (err) {
    throw corrupt(`unreadable meta: ${(err as Error).message}`, err);
  }
  const arnLen = await r.read(2);
  if (arnLen.length < 2) throw corrupt('truncated header');
  const a = arnLen.readUInt16BE(0);
  if (a === 0 || a > MAX_KEY_ARN_BYTES) throw corrupt(`header declares a ${a}-byte key id`);
  const arn = await r.read(a);
  const wLen = await r.read(2);
  if (arn.length < a || wLen.length < 2) throw corrupt('truncated header');
  const w = wLen.readUInt16BE(0);
  if (w === 0 || w > MAX_WRAPPED_KEY_BYTES) throw corrupt(`header declares a ${w}-byte wrapped key`);
  const wrappedKey = await r.read(w);
  if (wrappedKey.length < w) throw corrupt('truncated header');
  const start = headerStart(metaBuf, recordId);
  return { meta, recordId: Buffer.from(recordId), keyArn: arn.toString('utf8'), wrappedKey: Buffer.from(wrappedKey), context: encryptionContext(meta, recordId, start) };
}

/** Reads, authenticates and decodes every frame after the header; returns the cells (nothing partial). */
export async function readFrames(r: ByteReader, name: string, dataKey: KeyObject, recordId: Buffer): Promise<VaultCell[]> {
  const corrupt = (problem: string, cause?: unknown): VaultRecordCorruptError => new VaultRecordCorruptError(name, problem, cause === undefined ? undefined : { cause });
  const decoder = new EntryDecoder(name);
  for (let index = 0; ; index++) {
    const head = await r.read(FRAME_HEAD_BYTES);
    if (head.length === 0) throw corrupt(`truncated after ${index} frames: no end frame`);
    if (head.length < FRAME_HEAD_BYTES) throw corrupt(`truncated in the head of frame ${index}`);
    const len = head.readUInt32BE(0);
    const iv = head.subarray(4);
    if (len === END_MARKER) {
      const rest = await r.read(8 + TAG_BYTES);
      if (rest.length < 8 + TAG_BYTES) throw corrupt('truncated end frame');
      const cells = rest.readBigUInt64BE(0);
      try {
        const d = createDecipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
        d.setAAD(endAad(recordId, index, cells));
        d.setAuthTag(rest.subarray(8));
        d.final();
      } catch (err) {
        throw corrupt(`the end frame (after ${index} data frames) failed authentication: frames were dropped or the count was altered`, err);
      }
      if (!(await r.atEnd())) throw corrupt('bytes after the end frame');
      const out = decoder.finish();
      if (BigInt(out.length) !== cells) throw corrupt(`the end frame counts ${cells} cells, the frames hold ${out.length}`);
      return out;
    }
    if (len === 0 || len > MAX_FRAME_BYTES) throw corrupt(`frame ${index} declares ${len} bytes`);
    const body = await r.read(len + TAG_BYTES);
    if (body.length < len + TAG_BYTES) throw corrupt(`truncated in frame ${index}`);
    let plain: Buffer;
    try {
      const d = createDecipheriv('aes-256-gcm', dataKey, iv, { authTagLength: TAG_BYTES });
      d.setAAD(frameAad(recordId, index, KIND_DATA));
      d.setAuthTag(body.subarray(len));
      plain = d.update(body.subarray(0, len));
      d.final();
    } catch (err) {
      throw corrupt(`frame ${index} failed authentication (altered, out of order, or from another record)`, err);
    }
    decoder.push(plain);
  }
}

/**
 * Decodes the entry stream across frame boundaries. An entry's head (at most a few hundred bytes) is
 * looked at through a small joined view; a large entry is joined once, when all of it is here.
 */
class EntryDecoder {
  private chunks: Buffer[] = [];
  private avail = 0;
  private readonly columns = new Map<number, { name: string; source: string | undefined }>();
  private readonly cells: VaultCell[] = [];

  constructor(private readonly name: string) {}

  push(buf: Buffer): void {
    if (buf.length === 0) return;
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

  private nextEntrySize(): number | null {
    if (this.avail < 1) return null;
    const tag = this.peek(1)[0];
    if (tag === ENTRY_COLUMN) {
      if (this.avail < 9) return null;
      const n = this.peek(9).readUInt32BE(5);
      if (this.avail < 13 + n) return null;
      const m = this.peek(13 + n).readUInt32BE(9 + n);
      return 13 + n + (m === ABSENT ? 0 : m);
    }
    if (tag === ENTRY_CELL) {
      if (this.avail < 12) return null;
      const d = this.peek(12)[11]!;
      if (this.avail < 16 + d) return null;
      const m = this.peek(16 + d).readUInt32BE(12 + d);
      return 16 + d + (m === ABSENT ? 0 : m);
    }
    throw new VaultRecordCorruptError(this.name, `unknown entry type ${tag}`);
  }

  /** The first `n` bytes (n <= avail), joined only when they span chunks. */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - got);
      c.copy(out, got, 0, k);
      got += k;
      if (got === n) break;
    }
    return out;
  }

  private take(n: number): Buffer {
    const out = this.peek(n).subarray(0, n);
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      if (c.length <= left) {
        left -= c.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.avail -= n;
    return out;
  }

  private decode(e: Buffer): void {
    if (e[0] === ENTRY_COLUMN) {
      const column = e.readUInt32BE(1);
      const n = e.readUInt32BE(5);
      const m = e.readUInt32BE(9 + n);
      this.columns.set(column, { name: e.toString('utf8', 9, 9 + n), source: m === ABSENT ? undefined : e.toString('utf8', 13 + n, 13 + n + m) });
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
}
