/** LocalForensicVault: sealed records round-trip, stay encrypted on disk, and refuse any tampering. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import {
  listVaultRecords,
  loadOrCreateVaultKey,
  loadVaultKey,
  LocalForensicVault,
  VAULT_MAGIC,
  vaultDir,
  vaultKeyPath,
} from '../../../../adapters/local/forensic-vault.ts';
import type { LocalVaultRecordWriter } from '../../../../adapters/local/forensic-vault.ts';
import {
  VaultCellError,
  VaultKeyError,
  VaultRecordCorruptError,
  VaultRecordExistsError,
  VaultRecordMetaError,
  VaultRecordNotFoundError,
  VaultWriteError,
  VaultWriterClosedError,
} from '../../../../core/masking/forensic-vault.ts';
import type { VaultCell, VaultRecordMeta } from '../../../../core/masking/forensic-vault.ts';

const roots: string[] = [];
after(() => roots.forEach((d) => rmSync(d, { recursive: true, force: true })));
function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'warden-vault-'));
  roots.push(d);
  return d;
}

function meta(sessionId: string, statementId: number): VaultRecordMeta {
  return { sessionId, statementId, target: 'billing', principal: { issuer: 'https://idp.example.com', subject: 'ci-bot' }, createdAt: '2026-01-02T03:04:05.006Z' };
}

/** A record's frames, split without the key (the format in adapters/local/forensic-vault.ts). */
function splitRecord(file: Buffer): { header: Buffer; frames: Buffer[]; end: Buffer } {
  const metaLen = file.readUInt32BE(VAULT_MAGIC.length);
  let pos = VAULT_MAGIC.length + 4 + metaLen + 16 + 8 + 12 + 32 + 16;
  const header = file.subarray(0, pos);
  const frames: Buffer[] = [];
  for (;;) {
    const len = file.readUInt32BE(pos);
    if (len === 0xffffffff) return { header, frames, end: file.subarray(pos) };
    frames.push(file.subarray(pos, pos + 4 + 12 + len + 16));
    pos += 4 + 12 + len + 16;
  }
}

/** Writes `n` fixed-size cells (so every frame of every such record has the same length). */
async function writeUniform(vault: LocalForensicVault, sessionId: string, statementId: number, n: number, prefix: string): Promise<void> {
  const w = vault.open(meta(sessionId, statementId));
  for (let i = 0; i < n; i++) w.add({ row: i, column: 0, columnName: 'email', source: 'public.users.email', original: `${prefix}-${String(i).padStart(8, '0')}@example.com` });
  await w.close();
}

describe('LocalForensicVault round trip', () => {
  it('returns 200k cells exactly as added, across many frames, with the writer buffering at most one frame', async () => {
    // Prepare
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir });
    const marker = randomBytes(6).toString('hex');
    const huge = `-----BEGIN PRIVATE KEY-----${marker}${'x'.repeat(300_000)}-----END PRIVATE KEY-----`;
    const cells: VaultCell[] = [];
    for (let i = 0; i < 200_000; i++) {
      const k = i % 5;
      if (k === 0) cells.push({ row: i, column: 0, columnName: 'email', source: 'public.users.email', original: `user${i}.${marker}@example.com` });
      else if (k === 1) cells.push({ row: i, column: 1, columnName: 'note', detector: 'card', original: `4242 4242 4242 ${String(i).padStart(4, '0')} ${marker}` });
      else if (k === 2) cells.push({ row: i, column: 2, columnName: 'ssn', source: 'public.users.ssn', original: null });
      else if (k === 3) cells.push({ row: i, column: 3, columnName: 'bio', detector: 'email', original: `Zoë ☃ ${marker} 𝄞 ${i}` });
      else cells.push({ row: i, column: 4, columnName: 'empty', original: '' });
    }
    cells.splice(100_000, 0, { row: 100_000, column: 5, columnName: 'pem', detector: 'private_key', original: huge });
    // A column whose name changes between results keeps its cells' names.
    cells.push({ row: 0, column: 0, columnName: 'renamed', source: 'public.other.col', original: `late-${marker}` });

    // Act
    const w: LocalVaultRecordWriter = vault.open(meta('sess-1', 7));
    for (let i = 0; i < cells.length; i++) {
      w.add(cells[i]!);
      assert.ok(w.stats().bufferedBytes <= w.stats().frameBytes);
      if (i % 2000 === 0) await tick(); // the data path yields between socket reads
    }
    const stats = w.stats();
    const ref = await w.close();
    const back = await vault.read('sess-1', 7);

    // Assess
    assert.equal(stats.frameBytes, 64 * 1024);
    assert.ok(stats.maxBufferedBytes <= stats.frameBytes, `buffered ${stats.maxBufferedBytes}`);
    assert.ok(stats.frames > 50, `frames ${stats.frames}`);
    assert.ok(stats.maxQueuedBytes < 2 * 1024 * 1024, `queued ${stats.maxQueuedBytes}`);
    assert.equal(ref.cells, cells.length);
    assert.deepEqual(back.cells, cells);
    assert.deepEqual(back.meta, meta('sess-1', 7));
    const file = readFileSync(join(vaultDir(dir), 'sess-1', '7.sealed'));
    assert.deepEqual(back.ref, ref);
    assert.equal(ref.bytes, file.length);
    assert.equal(ref.sha256, createHash('sha256').update(file).digest('hex'));
    assert.equal(ref.id.length, 32);
  });

  it('keeps the originals out of the file: none of them is in its bytes, nor in any other file', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir });
    const secrets = Array.from({ length: 5000 }, (_, i) => `s3cr3t-${i}-${randomBytes(8).toString('hex')}`);
    const w = vault.open(meta('sess-2', 1));
    secrets.forEach((s, i) => w.add({ row: i, column: 0, columnName: 'token', detector: 'api_token', original: s }));
    await w.close();

    const files = readdirSync(join(vaultDir(dir), 'sess-2'));
    assert.deepEqual(files, ['1.sealed'], 'no temp or partial files left');
    const bytes = readFileSync(join(vaultDir(dir), 'sess-2', '1.sealed'));
    assert.ok(bytes.subarray(0, VAULT_MAGIC.length).equals(VAULT_MAGIC));
    for (const s of secrets) {
      assert.equal(bytes.indexOf(s), -1, `${s} in clear`);
      assert.equal(bytes.indexOf(Buffer.from(s, 'utf16le')), -1);
    }
    // Nor a long prefix of one (a partial plaintext write).
    assert.equal(bytes.indexOf('s3cr3t-'), -1);
    const key = readFileSync(vaultKeyPath(dir));
    assert.equal(bytes.indexOf(key), -1, 'the vault key is not in the record');
  });

  it('seals an empty record, and reads a record whose cells all are NULL', async () => {
    const vault = await LocalForensicVault.open({ stateDir: stateDir() });
    const ref = await vault.open(meta('sess-3', 1)).close();
    assert.equal(ref.cells, 0);
    assert.deepEqual((await vault.read('sess-3', 1)).cells, []);
    const w = vault.open(meta('sess-3', 2));
    w.add({ row: 0, column: 0, columnName: 'a', original: null });
    await w.close();
    assert.deepEqual((await vault.read('sess-3', 2)).cells, [{ row: 0, column: 0, columnName: 'a', original: null }]);
  });

  it('uses files 0600 in folders 0700, and a key file 0600 created once', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir });
    await writeUniform(vault, 'sess-4', 1, 10, 'm');
    assert.equal(statSync(vaultDir(dir)).mode & 0o777, 0o700);
    assert.equal(statSync(join(vaultDir(dir), 'sess-4')).mode & 0o777, 0o700);
    assert.equal(statSync(join(vaultDir(dir), 'sess-4', '1.sealed')).mode & 0o777, 0o600);
    assert.equal(statSync(vaultKeyPath(dir)).mode & 0o777, 0o600);
    assert.equal(statSync(vaultKeyPath(dir)).size, 32);
    const again = await loadOrCreateVaultKey(dir);
    assert.equal(again.keyId, vault.keyId);
  });

  it('lists records from their headers and end frames, without the key', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir });
    await writeUniform(vault, 'sess-5', 2, 3000, 'l');
    await writeUniform(vault, 'sess-5', 10, 1, 'l');
    await writeUniform(vault, 'sess-6', 1, 2, 'l');
    const all = await listVaultRecords(vaultDir(dir));
    assert.deepEqual(
      all.map((r) => [r.sessionId, r.statementId, r.cells, r.complete, r.target, r.principal?.subject]),
      [
        ['sess-5', 2, 3000, true, 'billing', 'ci-bot'],
        ['sess-5', 10, 1, true, 'billing', 'ci-bot'],
        ['sess-6', 1, 2, true, 'billing', 'ci-bot'],
      ],
    );
    assert.equal(all[0]!.bytes, statSync(join(vaultDir(dir), 'sess-5', '2.sealed')).size);
    assert.deepEqual((await listVaultRecords(vaultDir(dir), 'sess-6')).map((r) => r.statementId), [1]);
    assert.deepEqual(await listVaultRecords(join(dir, 'nowhere')), []);
  });
});

describe('LocalForensicVault writer lifecycle', () => {
  it('abort() leaves nothing on disk, before and after frames were written', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir, frameBytes: 1024 });
    await vault.open(meta('sess-a', 1)).abort();
    assert.throws(() => statSync(join(vaultDir(dir), 'sess-a')), /ENOENT/);
    const w = vault.open(meta('sess-a', 2));
    for (let i = 0; i < 500; i++) w.add({ row: i, column: 0, columnName: 'c', original: `value-${i}` });
    await tick();
    await w.abort();
    assert.deepEqual(readdirSync(join(vaultDir(dir), 'sess-a')), []);
    assert.throws(() => w.add({ row: 0, column: 0, columnName: 'c', original: 'x' }), VaultWriterClosedError);
  });

  it('refuses add() after close(), a malformed cell and bad meta', async () => {
    const vault = await LocalForensicVault.open({ stateDir: stateDir() });
    const w = vault.open(meta('sess-b', 1));
    assert.throws(() => w.add({ row: -1, column: 0, columnName: 'c', original: 'x' }), VaultCellError);
    assert.throws(() => w.add({ row: 0, column: 1.5, columnName: 'c', original: 'x' }), VaultCellError);
    await w.close();
    assert.throws(() => w.add({ row: 0, column: 0, columnName: 'c', original: 'x' }), VaultWriterClosedError);
    await assert.rejects(w.close(), VaultWriterClosedError);
    assert.throws(() => vault.open(meta('../etc', 1)), VaultRecordMetaError);
    assert.throws(() => vault.open(meta('sess-b', 0)), VaultRecordMetaError);
  });

  it('never overwrites a sealed record: a second one for the same statement fails and the first stays', async () => {
    const vault = await LocalForensicVault.open({ stateDir: stateDir() });
    await writeUniform(vault, 'sess-c', 1, 5, 'first');
    const w = vault.open(meta('sess-c', 1));
    w.add({ row: 0, column: 0, columnName: 'c', original: 'second' });
    await assert.rejects(w.close(), VaultRecordExistsError);
    const back = await vault.read('sess-c', 1);
    assert.equal(back.cells.length, 5);
    assert.match(back.cells[0]!.original!, /^first-/);
  });

  it('fails the record (close rejects, nothing left) when the disk does not keep up with the backlog limit', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir, frameBytes: 4096, maxBacklogBytes: 64 * 1024 });
    const w = vault.open(meta('sess-d', 1));
    // No yield: the background writer never runs, the queue grows past its limit.
    for (let i = 0; i < 20_000; i++) w.add({ row: i, column: 0, columnName: 'c', original: `value-${i}` });
    assert.equal(w.stats().failed, true);
    assert.ok(w.stats().queuedBytes <= 64 * 1024);
    await assert.rejects(w.close(), VaultWriteError);
    assert.deepEqual(readdirSync(join(vaultDir(dir), 'sess-d')).filter((f) => !f.startsWith('.')), []);
  });

  it('fails the record when its folder cannot be created (close rejects with VaultWriteError)', async () => {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir });
    writeFileSync(join(vaultDir(dir), 'sess-e'), 'a file where the session folder should be');
    const w = vault.open(meta('sess-e', 1));
    w.add({ row: 0, column: 0, columnName: 'c', original: 'x' });
    await assert.rejects(w.close(), VaultWriteError);
  });
});

describe('LocalForensicVault refuses a wrong key or a damaged record', () => {
  async function sealed(): Promise<{ dir: string; vault: LocalForensicVault; path: string; file: Buffer }> {
    const dir = stateDir();
    const vault = await LocalForensicVault.open({ stateDir: dir, frameBytes: 1024 });
    await writeUniform(vault, 'sess-t', 1, 400, 'a');
    const path = join(vaultDir(dir), 'sess-t', '1.sealed');
    return { dir, vault, path, file: readFileSync(path) };
  }

  it('a wrong key: VaultKeyError naming both key ids', async () => {
    const { dir } = await sealed();
    const other = join(stateDir(), 'other.key');
    writeFileSync(other, randomBytes(32), { mode: 0o600 });
    const key = await loadVaultKey(other);
    const reader = new LocalForensicVault({ dir: vaultDir(dir), key });
    await assert.rejects(reader.read('sess-t', 1), (e: Error) => e instanceof VaultKeyError && e.message.includes(key.keyId));
  });

  it('a key kept elsewhere as hex reads the record; a key readable by others is refused', async () => {
    const { dir } = await sealed();
    const hexFile = join(stateDir(), 'vault.hex');
    writeFileSync(hexFile, readFileSync(vaultKeyPath(dir)).toString('hex') + '\n', { mode: 0o600 });
    const reader = new LocalForensicVault({ dir: vaultDir(dir), key: await loadVaultKey(hexFile) });
    assert.equal((await reader.read('sess-t', 1)).cells.length, 400);
    chmodSync(hexFile, 0o644);
    await assert.rejects(loadVaultKey(hexFile), /accessible to other users/);
    await assert.rejects(loadVaultKey(join(dir, 'missing.key')), VaultKeyError);
  });

  const corruptions: [string, (f: Buffer) => Buffer, RegExp][] = [
    ['a flipped bit in a frame', (f) => flip(f, splitRecord(f).header.length + 1024), /frame \d+ failed authentication/],
    ['a flipped bit in the header meta', (f) => flip(f, 12), /header|meta/],
    ['a flipped bit in the end frame count', (f) => flip(f, f.length - 20), /end frame/],
    ['a file truncated inside a frame', (f) => f.subarray(0, splitRecord(f).header.length + 1500), /truncated/],
    ['a file truncated right before its end frame', (f) => f.subarray(0, f.length - splitRecord(f).end.length), /truncated|no end frame/],
    ['a file truncated inside its header', (f) => f.subarray(0, 40), /truncated header/],
    [
      'two frames swapped',
      (f) => {
        const { header, frames, end } = splitRecord(f);
        return Buffer.concat([header, frames[1]!, frames[0]!, ...frames.slice(2), end]);
      },
      /frame 0 failed authentication/,
    ],
    [
      'a frame dropped from the middle',
      (f) => {
        const { header, frames, end } = splitRecord(f);
        return Buffer.concat([header, frames[0]!, ...frames.slice(2), end]);
      },
      /frame 1 failed authentication/,
    ],
    [
      'the last data frame dropped (end frame kept)',
      (f) => {
        const { header, frames, end } = splitRecord(f);
        return Buffer.concat([header, ...frames.slice(0, -1), end]);
      },
      /end frame/,
    ],
    ['bytes appended after the end frame', (f) => Buffer.concat([f, Buffer.from('extra')]), /after the end frame/],
    ['another file', () => Buffer.from('not a vault record at all'), /bad magic/],
  ];
  for (const [what, damage, problem] of corruptions) {
    it(`${what}: VaultRecordCorruptError, no cells`, async () => {
      const { vault, path, file } = await sealed();
      writeFileSync(path, damage(file));
      await assert.rejects(vault.read('sess-t', 1), (e: Error) => e instanceof VaultRecordCorruptError && problem.test(e.message));
    });
  }

  it('a frame moved from another record (same key, same frame size, same index): VaultRecordCorruptError', async () => {
    const { vault, path, file } = await sealed();
    await writeUniform(vault, 'sess-t', 2, 400, 'b');
    const other = splitRecord(readFileSync(join(vault.dir, 'sess-t', '2.sealed')));
    const mine = splitRecord(file);
    assert.equal(other.frames[1]!.length, mine.frames[1]!.length);
    writeFileSync(path, Buffer.concat([mine.header, mine.frames[0]!, other.frames[1]!, ...mine.frames.slice(2), mine.end]));
    await assert.rejects(vault.read('sess-t', 1), (e: Error) => e instanceof VaultRecordCorruptError && /frame 1 failed authentication/.test(e.message));
  });

  it("a record renamed to another statement's name: VaultRecordCorruptError", async () => {
    const { vault, file } = await sealed();
    mkdirSync(join(vault.dir, 'sess-u'), { mode: 0o700 });
    writeFileSync(join(vault.dir, 'sess-u', '3.sealed'), file, { mode: 0o600 });
    await assert.rejects(vault.read('sess-u', 3), (e: Error) => e instanceof VaultRecordCorruptError && /moved or renamed/.test(e.message));
  });

  it('a missing record: VaultRecordNotFoundError', async () => {
    const { vault } = await sealed();
    await assert.rejects(vault.read('sess-t', 99), VaultRecordNotFoundError);
  });
});

function flip(buf: Buffer, at: number): Buffer {
  const out = Buffer.from(buf);
  out[at] = out[at]! ^ 0x04;
  return out;
}
