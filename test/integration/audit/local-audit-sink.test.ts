import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, statSync, symlinkSync, existsSync } from 'node:fs';
import { open as fsOpen } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AuditEventBody, AuditEventBodyOf } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { AuditWriteError } from '../../../core/audit/ports.ts';
import {
  auditKeyPaths,
  listSessions,
  loadAuditPublicKey,
  loadOrCreateAuditSigningKey,
  LocalAuditSink,
  readSessionEvents,
} from '../../../adapters/local/audit-sink.ts';
import type { LocalAuditSinkOptions } from '../../../adapters/local/audit-sink.ts';
import { newSessionId, SESSION_END, sessionStart, useAuditSinkFixture } from '../../helpers/audit-sink.ts';

const audit = useAuditSinkFixture({ tempPrefix: 'warden-audit-', readOnlyWindowMs: 50 });
const { tempDir } = audit;
const START = sessionStart();
const END = SESSION_END;

const stmt = (statementId: number, text = `SELECT ${statementId}`): AuditEventBodyOf<'statement'> => ({
  type: 'statement',
  statementId,
  protocol: 'simple',
  text,
  classification: { operation: 'select' },
  decision: { effect: 'allow', policies: ['p'] },
  startedAt: new Date().toISOString(),
});

const newId = newSessionId;

async function openSink(extra: Partial<LocalAuditSinkOptions> = {}): Promise<{ sink: LocalAuditSink; dir: string }> {
  const dir = extra.dir ?? join(tempDir(), 'audit');
  const sink = await audit.openSink({ dir, ...extra });
  return { sink, dir };
}

const fileOf = (dir: string, id: string) => join(dir, 'sessions', `${id}.jsonl`);
const linesOf = (path: string) => readFileSync(path, 'utf8').split('\n').filter(Boolean);
/** The durable trail: the session file merged with the journal (what a reader sees after a crash). */
const trailOf = async (dir: string, id: string) => (await readSessionEvents(dir, id)).lines;
async function waitFor(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('signing key', () => {
  it('creates an Ed25519 key once (0600) with its public key alongside', async () => {
    const { privateKeyPath, publicKeyPath } = auditKeyPaths(audit.stateDir);
    assert.equal(statSync(privateKeyPath).mode & 0o777, 0o600);
    assert.ok(existsSync(publicKeyPath));
    const again = await loadOrCreateAuditSigningKey(audit.stateDir);
    assert.equal(again.keyId, audit.key.keyId);
    assert.match(audit.key.keyId, /^ed25519:[0-9a-f]{16}$/);
    const pub = await loadAuditPublicKey(publicKeyPath);
    assert.equal(pub?.keyId, audit.key.keyId);
  });
});

describe('LocalAuditSink', () => {
  it('writes events in order, seals them, and reads them back', async () => {
    const { sink, dir } = await openSink();
    const id = newId();
    const s = sink.openSession(id, START);
    await s.ready;
    await s.append({ type: 'auth.success', principal: { issuer: 'https://id', subject: 'alice', groups: ['dev'] }, method: 'oidc-jwt' }, { durable: true });
    await s.append(stmt(1), { durable: false });
    await s.append({ type: 'statement.end', statementId: 1, endedAt: new Date().toISOString(), durationMs: 1.5, outcome: 'ok', command: 'SELECT 1', rows: 1 }, { durable: false });
    await s.append(stmt(2, "INSERT INTO t VALUES ('é\n')"), { durable: true });
    await s.end(END);
    assert.equal(sink.stats().openSessions, 0, 'file handle released at session end');

    const trail = await readSessionEvents(dir, id);
    assert.deepEqual(
      trail.events.map((e) => e.type),
      ['session.start', 'auth.success', 'statement', 'statement.end', 'statement', 'session.end', 'seal'],
    );
    assert.deepEqual(trail.events.map((e) => e.seq), [0, 1, 2, 3, 4, 5, 6]);
    assert.equal(trail.torn, null);
    const pub = await loadAuditPublicKey(auditKeyPaths(audit.stateDir).publicKeyPath);
    assert.deepEqual(verifyChainLines(trail.lines, pub!.publicKey), { ok: true, count: 7, sealed: true, keyId: audit.key.keyId });

    await assert.rejects(s.append(stmt(3), { durable: false }), AuditWriteError, 'append after end');
    await assert.rejects(s.end(END), AuditWriteError, 'second end');
    await sink.close();
  });

  it('lists sessions from the index with start and end merged', async () => {
    const { sink, dir } = await openSink();
    const a = newId();
    const b = newId();
    const sa = sink.openSession(a, START);
    const sb = sink.openSession(b, { ...START, target: 'billing', source: { address: '::1', port: 1 } });
    await sa.append({ type: 'auth.success', principal: { issuer: 'https://id', subject: 'alice', groups: [] }, method: 'oidc-jwt' }, { durable: true });
    await sa.end(END);
    await sb.ready;
    const list = await listSessions(dir);
    assert.equal(list.length, 2);
    const la = list.find((x) => x.sessionId === a)!;
    const lb = list.find((x) => x.sessionId === b)!;
    assert.equal(la.principal?.subject, 'alice');
    assert.equal(la.statements, 2);
    assert.equal(la.eventCount, 4);
    const trail = await readSessionEvents(dir, a);
    assert.equal(la.lastHash, trail.events.at(-1)!.hash);
    assert.ok(la.startTime && la.endTime);
    assert.equal(la.file, `sessions/${a}.jsonl`);
    assert.equal(lb.target, 'billing');
    assert.equal(lb.endTime, undefined);
    assert.equal(lb.eventCount, undefined);
    await sink.close();
  });

  it('durable append resolves only once the event is durable (journal, then its file)', async () => {
    const { sink, dir } = await openSink({ readOnlyWindowMs: 10_000 });
    const id = newId();
    const s = sink.openSession(id, START);
    await s.ready;
    assert.equal((await trailOf(dir, id)).length, 1);
    for (let i = 1; i <= 20; i++) {
      await s.append(stmt(i, `UPDATE t SET n = ${i}`), { durable: true });
      // Durable = in journal.wal (fdatasync'ed); the session file gets the line right after, unsynced.
      const journal = readFileSync(join(dir, 'journal.wal'), 'utf8');
      assert.match(journal, new RegExp(`^${id}\t.*UPDATE t SET n = ${i}"`, 'm'));
      const lines = await trailOf(dir, id);
      assert.equal(lines.length, i + 1);
      assert.match(lines.at(-1)!, new RegExp(`UPDATE t SET n = ${i}"`));
    }
    await sink.flush();
    assert.equal(linesOf(fileOf(dir, id)).length, 21, 'flush() also waits for the file writes');
    await sink.close();
    assert.equal(statSync(join(dir, 'journal.wal')).size, 0, 'close() checkpoints: the journal is empty');
    assert.equal(linesOf(fileOf(dir, id)).length, 21);
  });

  it('non-durable events reach the disk within the window', async () => {
    const windowMs = 50;
    const { sink, dir } = await openSink({ readOnlyWindowMs: windowMs });
    const id = newId();
    const s = sink.openSession(id, START);
    await s.ready;
    await s.append(stmt(1), { durable: false });
    assert.equal((await trailOf(dir, id)).length, 1, 'buffered: neither in the journal nor in the file');
    // Window, then the journaled lines go to their file (DEFAULT_FILE_WRITE_DELAY_MS = 20 later).
    await sleep(windowMs * 3);
    assert.equal(linesOf(fileOf(dir, id)).length, 2);
    // A durable append also carries earlier non-durable ones.
    await s.append(stmt(2), { durable: false });
    await s.append(stmt(3), { durable: true });
    assert.equal((await trailOf(dir, id)).length, 4);
    await sink.flush();
    assert.equal(linesOf(fileOf(dir, id)).length, 4);
    await sink.close();
  });

  it('group commit: 20 sessions appending durably at once share commit rounds', async () => {
    const { sink } = await openSink();
    const sessions = Array.from({ length: 20 }, () => sink.openSession(newId(), START));
    await Promise.all(sessions.map((s) => s.ready));
    const before = sink.stats();
    await Promise.all(sessions.map((s, i) => s.append(stmt(i + 1), { durable: true })));
    const afterStats = sink.stats();
    const rounds = afterStats.commits - before.commits;
    console.log(`group commit: 20 durable events from 20 sessions in ${rounds} commit round(s), ${afterStats.fsyncs - before.fsyncs} fsyncs, ${afterStats.bytes - before.bytes} bytes`);
    // One round, one journal write + fdatasync, whatever the number of sessions.
    assert.equal(rounds, 1);
    assert.equal(afterStats.fsyncs - before.fsyncs, 1);
    assert.equal(afterStats.pendingBytes, 0);
    await Promise.all(sessions.map((s) => s.end(END)));
    await sink.close();
  });

  it('durable appends arriving during a commit share the next round', async () => {
    const { sink, dir } = await openSink();
    const sessions = Array.from({ length: 10 }, () => sink.openSession(newId(), START));
    await Promise.all(sessions.map((s) => s.ready));
    const before = sink.stats();
    const first = Promise.all(sessions.map((s) => s.append(stmt(1), { durable: true })));
    await new Promise((r) => setImmediate(r)); // the first round is now writing
    const second = Promise.all(sessions.map((s) => s.append(stmt(2), { durable: true })));
    await Promise.all([first, second]);
    assert.ok(sink.stats().commits - before.commits <= 2, `rounds=${sink.stats().commits - before.commits}`);
    for (const s of sessions) assert.equal((await trailOf(dir, s.sessionId)).length, 3);
    await sink.flush();
    for (const s of sessions) assert.equal(linesOf(fileOf(dir, s.sessionId)).length, 3);
    await sink.close();
  });

  it('fails closed on a journal write error: the failing append and every later one reject', async () => {
    const { sink, dir } = await openSink({
      // The journal is /dev/full: every write fails with ENOSPC.
      openFile: (path, flags, mode) => (path.endsWith('journal.wal') ? fsOpen('/dev/full', 'a+') : fsOpen(path, flags, mode)),
    });
    const good = sink.openSession(newId(), START);
    await assert.rejects(good.ready, (err: Error) => err instanceof AuditWriteError && /ENOSPC/.test(err.message));
    assert.equal(sink.stats().failed, true);
    await assert.rejects(good.append(stmt(1), { durable: true }), AuditWriteError);
    await assert.rejects(good.append(stmt(2), { durable: false }), AuditWriteError);
    assert.throws(() => sink.openSession(newId(), START), AuditWriteError);
    await assert.rejects(sink.flush(), AuditWriteError);
    await assert.rejects(sink.close(), AuditWriteError);
    assert.deepEqual(linesOf(fileOf(dir, good.sessionId)), [], 'nothing reached the file: it only gets journaled lines');
  });

  it('fails closed on a session file write error after the journal: every later append rejects', async () => {
    const bad = newId();
    const { sink, dir } = await openSink({
      // The bad session's file is /dev/full: every write fails with ENOSPC.
      openFile: (path, flags, mode) => (path.includes(bad) ? fsOpen('/dev/full', 'a') : fsOpen(path, flags, mode)),
    });
    const good = sink.openSession(newId(), START);
    await good.ready;
    const b = sink.openSession(bad, START);
    // Durable in the journal, so it resolves; writing it to its file then fails the sink.
    await b.ready;
    await waitFor(() => sink.stats().failed, 'the sink to fail');
    await assert.rejects(good.append(stmt(1), { durable: true }), (err: Error) => err instanceof AuditWriteError && /ENOSPC/.test(err.message));
    await assert.rejects(good.append(stmt(2), { durable: false }), AuditWriteError);
    await assert.rejects(good.end(END), AuditWriteError);
    assert.throws(() => sink.openSession(newId(), START), AuditWriteError);
    await assert.rejects(sink.flush(), AuditWriteError);
    await assert.rejects(sink.close(), AuditWriteError);
    // The journal was not truncated: its lines are still there for the readers and the recovery.
    assert.equal((await trailOf(dir, bad)).length, 1);
  });

  it('fails closed when the index cannot be written', async () => {
    const dir = join(tempDir(), 'audit');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    symlinkSync('/dev/full', join(dir, 'index.jsonl'));
    const { sink } = await openSink({ dir });
    const s = sink.openSession(newId(), START);
    await s.ready; // in the journal; writing the index line afterwards fails the sink
    await waitFor(() => sink.stats().failed, 'the sink to fail');
    await assert.rejects(s.append(stmt(1), { durable: false }), AuditWriteError);
    await sink.close().catch(() => undefined);
  });

  it('a session whose file cannot be created fails alone', async () => {
    const lostId = newId();
    const missing = join(tempDir(), 'missing', 'x.jsonl');
    const { sink } = await openSink({
      // Its file is created in a directory that does not exist: ENOENT.
      openFile: (path, flags, mode) => fsOpen(path.includes(lostId) ? missing : path, flags, mode),
    });
    const ok = sink.openSession(newId(), START);
    await ok.ready;
    const lost = sink.openSession(lostId, START);
    await assert.rejects(lost.ready, (err: Error) => err instanceof AuditWriteError && /ENOENT/.test(err.message));
    await assert.rejects(lost.append(stmt(1), { durable: false }), AuditWriteError);
    await assert.rejects(lost.append(stmt(1), { durable: true }), AuditWriteError);
    // The other session's open file is unaffected.
    await ok.append(stmt(1), { durable: true });
    assert.equal(sink.stats().failed, false);
    await sink.close();
  });

  it('rejects appends over maxPendingBytes without failing the sink', async () => {
    const { sink } = await openSink({ maxPendingBytes: 4096, readOnlyWindowMs: 10_000 });
    const s = sink.openSession(newId(), START);
    await s.ready;
    await assert.rejects(s.append(stmt(1, 'x'.repeat(8192)), { durable: false }), /buffer full/);
    await s.append(stmt(1), { durable: true });
    assert.equal(sink.stats().failed, false);
    await s.end(END);
    await sink.close();
  });

  it('refuses lifecycle events through append and duplicate sessions', async () => {
    const { sink } = await openSink();
    const id = newId();
    const s = sink.openSession(id, START);
    assert.throws(() => sink.openSession(id, START), AuditWriteError);
    await assert.rejects(s.append({ type: 'seal' } as unknown as AuditEventBody, { durable: false }), AuditWriteError);
    await assert.rejects(s.append({ type: 'nonsense' } as unknown as AuditEventBody, { durable: false }), AuditWriteError);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await assert.rejects(s.append({ ...stmt(1), classification: circular }, { durable: false }), AuditWriteError);
    await assert.rejects(s.append({ ...stmt(1), classification: { n: Number.NaN } }, { durable: false }), AuditWriteError);
    await s.end(END);
    await sink.close();
  });

  it('tolerates a torn last line after a crash (session file and index)', async () => {
    const { sink, dir } = await openSink();
    const id = newId();
    const s = sink.openSession(id, START);
    await s.append(stmt(1), { durable: true });
    await sink.close(); // "crash": no session.end / seal
    appendFileSync(fileOf(dir, id), '{"v":1,"type":"statem');
    appendFileSync(join(dir, 'index.jsonl'), '{"sessionId":"torn');

    const trail = await readSessionEvents(dir, id);
    assert.equal(trail.events.length, 2);
    assert.deepEqual(trail.torn, { bytes: 21, text: '{"v":1,"type":"statem' });
    assert.deepEqual(verifyChainLines(trail.lines, audit.key.publicKey, { requireSeal: false }), { ok: true, count: 2, sealed: false });

    assert.deepEqual((await listSessions(dir)).map((x) => x.sessionId), [id]);
    // Reopening terminates the torn index line so new lines stay parseable.
    const { sink: sink2 } = await openSink({ dir });
    const id2 = newId();
    await sink2.openSession(id2, START).end(END);
    await sink2.close();
    assert.deepEqual((await listSessions(dir)).map((x) => x.sessionId), [id, id2]);
  });

  it('measures fdatasync latency on this disk', async () => {
    const dir = tempDir();
    const fh = await fsOpen(join(dir, 'probe'), 'a');
    const samples: number[] = [];
    const line = Buffer.from('x'.repeat(200) + '\n');
    for (let i = 0; i < 200; i++) {
      await fh.write(line);
      const t = process.hrtime.bigint();
      await fh.datasync();
      samples.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    await fh.close();
    samples.sort((a, b) => a - b);
    const pct = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!.toFixed(3);
    console.log(`fdatasync latency (200 x 201-byte appends): p50 ${pct(0.5)} ms, p90 ${pct(0.9)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms`);

    const { sink } = await openSink();
    const s = sink.openSession(newId(), START);
    await s.ready;
    const durable: number[] = [];
    for (let i = 1; i <= 100; i++) {
      const t = process.hrtime.bigint();
      await s.append(stmt(i), { durable: true });
      durable.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    durable.sort((a, b) => a - b);
    console.log(`durable append latency (1 session, sequential): p50 ${durable[50]!.toFixed(3)} ms, p99 ${durable[99]!.toFixed(3)} ms`);
    const t = process.hrtime.bigint();
    for (let i = 101; i <= 10_100; i++) await s.append(stmt(i), { durable: false });
    console.log(`non-durable append: ${(Number(process.hrtime.bigint() - t) / 1e3 / 10_000).toFixed(2)} µs each (hash + buffer)`);
    await s.end(END);
    await sink.close();
  });
});
