/**
 * S3ForensicVault and S3ForensicVaultReader: S3 is s3rver on 127.0.0.1 (the real S3 client, path-style);
 * KMS is faked at the SDK's HTTP boundary (test/helpers/fake-kms.ts: no KMS emulator runs here), with
 * real wrapping, encryption-context binding and a grant per caller.
 *
 * Proves: records round-trip exactly (NULLs, detectors, multi-byte text, a value larger than a frame, a
 * record without cells, a multipart record larger than a part) and the reader's reference matches the
 * writer's; the bytes on S3 hold no original, no column name and no plaintext data key; the writer role
 * only ever asks for data keys, one per record, bound to the record by its encryption context; writes are
 * create-only; an altered frame, an altered header (meta or wrapped key), reordered or dropped frames and a
 * record moved to another key are all refused as corrupt; a reader without kms:Decrypt, or one insisting
 * on another key, gets VaultKeyError and no cell; a writer whose data key is refused writes nothing;
 * memory per record stays within the frame buffer and the backlog cap.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CopyObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { S3ForensicVault, S3ForensicVaultReader } from '../../../adapters/aws/s3-forensic-vault.ts';
import { KMS_VAULT_MAGIC } from '../../../adapters/aws/kms-vault-record.ts';
import {
  VaultKeyError,
  VaultRecordCorruptError,
  VaultRecordNotFoundError,
  VaultWriteError,
  type VaultCell,
  type VaultRecordMeta,
} from '../../../core/masking/forensic-vault.ts';
import { FakeKms } from '../../helpers/fake-kms.ts';
import { startS3rver, type LocalS3 } from '../../helpers/s3rver.ts';

const BUCKET = 'warden-vault';
const PREFIX = 'records/';
let sessions = 0;

function meta(statementId = 1): VaultRecordMeta {
  sessions += 1;
  return {
    sessionId: `sess-${process.pid}-${sessions}`,
    statementId,
    target: 'billing',
    principal: { issuer: 'https://idp.example.com', subject: 'ci-bot' },
    createdAt: '2030-01-02T03:04:05.006Z',
  };
}

const sampleCells = (): VaultCell[] => [
  { row: 0, column: 1, columnName: 'email', source: 'public.customers.email', original: 'ada.lovelace@example.com' },
  { row: 0, column: 2, columnName: 'card', source: 'public.customers.card', original: '4111 1111 1111 1111' },
  { row: 1, column: 1, columnName: 'email', source: 'public.customers.email', original: null },
  { row: 1, column: 3, columnName: 'notes', detector: 'email', original: 'write to grace.hopper@example.org — ünïcödé ✓' },
  { row: 2, column: 3, columnName: 'notes', detector: 'iban', original: 'DE89 3704 0044 0532 0130 00' },
  { row: 3, column: 4, columnName: 'blob', source: 'public.docs.body', original: `BIGVALUE-${'x'.repeat(3000)}-END` },
];

async function objectBytes(s3: S3Client, key: string): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function putBytes(s3: S3Client, key: string, body: Buffer): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
}

/** Frame boundaries of a sealed object, found without any key (lengths are in clear). */
function frames(obj: Buffer): { headerEnd: number; data: [number, number][]; end: number } {
  let pos = KMS_VAULT_MAGIC.length;
  const metaLen = obj.readUInt32BE(pos);
  pos += 4 + metaLen + 16;
  pos += 2 + obj.readUInt16BE(pos);
  pos += 2 + obj.readUInt16BE(pos);
  const headerEnd = pos;
  const data: [number, number][] = [];
  for (;;) {
    const len = obj.readUInt32BE(pos);
    if (len === 0xffffffff) return { headerEnd, data, end: pos };
    data.push([pos, pos + 16 + len + 16]);
    pos += 16 + len + 16;
  }
}

describe('S3ForensicVault on s3rver with KMS faked at the SDK boundary', { timeout: 60_000 }, () => {
  let s3: LocalS3;
  let kms: FakeKms;
  let vault: S3ForensicVault;
  let reader: S3ForensicVaultReader;
  const ifNoneMatch: (string | undefined)[] = [];

  before(async () => {
    s3 = await startS3rver({ buckets: [BUCKET] });
    kms = new FakeKms();
    const writerS3 = s3.newClient();
    writerS3.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { method?: string; headers?: Record<string, string>; query?: Record<string, unknown> };
        if (req.method === 'PUT' && !req.query?.uploadId) ifNoneMatch.push(req.headers?.['if-none-match']);
        if (req.method === 'POST' && req.query?.uploadId) ifNoneMatch.push(req.headers?.['if-none-match']);
        return next(args);
      },
      { step: 'finalizeRequest', name: 'captureIfNoneMatch' },
    );
    vault = new S3ForensicVault({ s3: writerS3, kms: kms.client('proxy-task', ['GenerateDataKey']), bucket: BUCKET, prefix: PREFIX, keyId: kms.keyArn, frameBytes: 256 });
    reader = new S3ForensicVaultReader({ s3: s3.client, kms: kms.client('vault-operator', ['Decrypt']), bucket: BUCKET, prefix: PREFIX, keyId: kms.keyArn });
  });
  after(async () => {
    await s3?.close();
  });

  async function write(m: VaultRecordMeta, cells: VaultCell[], v: S3ForensicVault = vault) {
    const w = v.open(m);
    for (const c of cells) w.add(c);
    const ref = await w.close();
    return { ref, writer: w };
  }

  test('a record round-trips exactly, and the reader verifies the same reference', async () => {
    const m = meta();
    const cells = sampleCells();
    const before = kms.calls.length;
    const { ref, writer } = await write(m, cells);
    assert.equal(ref.cells, cells.length);
    assert.ok(writer.stats().frames > 3, 'several frames (256-byte frame buffer)');

    const record = await reader.read(m.sessionId, m.statementId);
    assert.deepEqual(record.meta, m);
    assert.deepEqual(record.cells, cells);
    assert.deepEqual(record.ref, ref);

    const writes = kms.calls.slice(before).filter((c) => c.caller === 'proxy-task');
    assert.deepEqual(writes.map((c) => c.operation), ['GenerateDataKey'], 'one data key per record, and the writer never decrypts');
    assert.equal(writes[0]!.encryptionContext?.['warden:vault-record'], ref.id);
    assert.equal(writes[0]!.encryptionContext?.['warden:session'], m.sessionId);
    assert.equal(writes[0]!.encryptionContext?.['warden:statement'], '1');
    assert.ok(!JSON.stringify(writes).includes('ada.lovelace'), 'no value in what KMS (and CloudTrail) sees');
  });

  test('a record without cells round-trips too', async () => {
    const m = meta(7);
    const { ref } = await write(m, []);
    const record = await reader.read(m.sessionId, 7);
    assert.deepEqual(record.cells, []);
    assert.deepEqual(record.ref, ref);
  });

  test('the bytes on S3 hold no original, no column name and no data key in clear', async () => {
    const m = meta();
    const cells = sampleCells();
    await write(m, cells);
    const obj = await objectBytes(s3.client, vault.objectKey(m.sessionId, m.statementId));
    assert.ok(obj.subarray(0, 5).equals(KMS_VAULT_MAGIC));
    for (const c of cells) {
      if (c.original !== null) {
        assert.equal(obj.indexOf(Buffer.from(c.original, 'utf8')), -1, `original of ${c.columnName} in clear`);
        assert.equal(obj.indexOf(Buffer.from(c.original.slice(0, 8), 'utf8')), -1, `a piece of ${c.columnName}'s original in clear`);
      }
      assert.equal(obj.indexOf(Buffer.from(c.source ?? c.columnName)), -1, `${c.source ?? c.columnName} in clear`);
    }
    assert.equal(obj.indexOf(Buffer.from('BIGVALUE')), -1);
    assert.ok(obj.indexOf(Buffer.from(m.sessionId)) > 0, 'the meta is in clear by design (authenticated, not secret)');
  });

  test('writes are create-only: the SDK sends If-None-Match: * on every object write', async () => {
    ifNoneMatch.length = 0;
    await write(meta(), sampleCells());
    assert.deepEqual(ifNoneMatch, ['*']);
  });

  test('a record larger than a part goes out as a multipart upload, with memory bounded', async () => {
    const big = new S3ForensicVault({ s3: s3.client, kms: kms.client('proxy-task', ['GenerateDataKey']), bucket: BUCKET, prefix: PREFIX, keyId: kms.keyArn, partBytes: 5 * 1024 * 1024, maxBacklogBytes: 12 * 1024 * 1024 });
    const m = meta();
    const w = big.open(m);
    const n = 130_000;
    for (let i = 0; i < n; i++) w.add({ row: i, column: 0, columnName: 'email', source: 'public.users.email', original: `user-${String(i).padStart(8, '0')}@example.com` });
    const ref = await w.close();
    const stats = w.stats();
    assert.ok(stats.parts >= 1, `parts: ${stats.parts}`);
    assert.ok(ref.bytes > 5 * 1024 * 1024, `${ref.bytes} bytes`);
    assert.ok(stats.maxBufferedBytes <= 64 * 1024, `frame buffer ${stats.maxBufferedBytes}`);
    assert.ok(stats.maxBacklogBytes <= 12 * 1024 * 1024, `backlog ${stats.maxBacklogBytes}`);

    const record = await reader.read(m.sessionId, m.statementId);
    assert.equal(record.cells.length, n);
    assert.deepEqual(record.cells[n - 1], { row: n - 1, column: 0, columnName: 'email', source: 'public.users.email', original: `user-${String(n - 1).padStart(8, '0')}@example.com` });
    assert.deepEqual(record.ref, ref);
  });

  test('tampering is detected: altered frames, header, wrapped key, order, truncation, a moved record', async () => {
    const m = meta();
    await write(m, sampleCells());
    const key = vault.objectKey(m.sessionId, m.statementId);
    const original = await objectBytes(s3.client, key);
    const f = frames(original);
    assert.ok(f.data.length >= 3);

    const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
      ['a flipped ciphertext byte', (b) => flip(b, f.data[1]![0] + 20), /frame 1 failed authentication/],
      ['a changed target in the meta', (b) => Buffer.from(b.toString('latin1').replace('"target":"billing"', '"target":"billinG"'), 'latin1'), /KMS refused to unwrap/],
      ['a flipped byte of the wrapped key', (b) => flip(b, f.headerEnd - 3), /KMS refused to unwrap/],
      ['two frames swapped', (b) => Buffer.concat([b.subarray(0, f.data[0]![0]), b.subarray(...f.data[1]!), b.subarray(...f.data[0]!), b.subarray(f.data[1]![1])]), /frame 0 failed authentication/],
      ['the end frame dropped', (b) => b.subarray(0, f.end), /no end frame/],
      ['the last data frame dropped', (b) => Buffer.concat([b.subarray(0, f.data.at(-1)![0]), b.subarray(f.end)]), /end frame .* failed authentication/],
      ['bytes after the end', (b) => Buffer.concat([b, Buffer.from([0])]), /after the end frame/],
    ];
    for (const [what, alter, problem] of cases) {
      await putBytes(s3.client, key, alter(Buffer.from(original)));
      await assert.rejects(reader.read(m.sessionId, m.statementId), (err: unknown) => {
        assert.ok(err instanceof VaultRecordCorruptError, `${what}: ${String(err)}`);
        assert.match(err.message, problem, what);
        return true;
      });
    }

    await putBytes(s3.client, key, original);
    await s3.client.send(new CopyObjectCommand({ Bucket: BUCKET, Key: vault.objectKey(m.sessionId, 2), CopySource: `${BUCKET}/${key}` }));
    await assert.rejects(reader.read(m.sessionId, 2), /moved or renamed/);
    assert.equal((await reader.read(m.sessionId, m.statementId)).cells.length, sampleCells().length, 'the untouched record still reads');
  });

  test('a reader without kms:Decrypt, or insisting on another key, gets VaultKeyError and no cell', async () => {
    const m = meta();
    await write(m, sampleCells());
    const withoutDecrypt = new S3ForensicVaultReader({ s3: s3.client, kms: kms.client('auditor', ['GenerateDataKey']), bucket: BUCKET, prefix: PREFIX });
    await assert.rejects(withoutDecrypt.read(m.sessionId, m.statementId), (err: unknown) => err instanceof VaultKeyError && /kms:Decrypt denied/.test(err.message));
    assert.ok(kms.calls.some((c) => c.caller === 'auditor' && c.operation === 'Decrypt'), 'it was KMS that refused');

    kms.addKey('arn:aws:kms:us-east-1:111122223333:key/other-key');
    const otherKey = new S3ForensicVaultReader({ s3: s3.client, kms: kms.client('vault-operator', ['Decrypt']), bucket: BUCKET, prefix: PREFIX, keyId: 'arn:aws:kms:us-east-1:111122223333:key/other-key' });
    await assert.rejects(otherKey.read(m.sessionId, m.statementId), (err: unknown) => err instanceof VaultKeyError && /sealed under KMS key/.test(err.message));
  });

  test('a missing record is VaultRecordNotFoundError', async () => {
    await assert.rejects(reader.read('sess-never-written', 1), VaultRecordNotFoundError);
  });

  test('a writer refused its data key writes nothing; an aborted record leaves nothing and asks KMS for nothing', async () => {
    const refused = new S3ForensicVault({ s3: s3.client, kms: kms.client('misconfigured-task', []), bucket: BUCKET, prefix: PREFIX, keyId: kms.keyArn });
    const m = meta();
    const w = refused.open(m);
    for (const c of sampleCells()) w.add(c);
    await assert.rejects(w.close(), (err: unknown) => err instanceof VaultWriteError && /no data key from KMS \(AccessDeniedException/.test(err.message));
    await assert.rejects(reader.read(m.sessionId, m.statementId), VaultRecordNotFoundError);

    const calls = kms.calls.length;
    const m2 = meta();
    const aborted = vault.open(m2);
    await aborted.abort();
    assert.equal(kms.calls.length, calls);
    await assert.rejects(reader.read(m2.sessionId, m2.statementId), VaultRecordNotFoundError);
  });
});

function flip(b: Buffer, at: number): Buffer {
  b[at] = b[at]! ^ 0x01;
  return b;
}
