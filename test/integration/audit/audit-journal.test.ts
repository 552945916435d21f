/**
 * The write-ahead journal under crashes: a crash is simulated by copying the audit dir at the moment
 * durable appends resolve (what a SIGKILL leaves: the page cache survives) and then, to mimic a
 * machine crash, cutting from the copy what was never fsynced (the tracked openFile below records,
 * per file, how many bytes were written and how many were covered by a completed fdatasync).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFileSync,
  cpSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { open as fsOpen } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { AuditEventBodyOf, SessionId } from '../../../core/audit/events.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import type { SessionAudit } from '../../../core/audit/ports.ts';
import {
  listSessionFiles,
  listSessions,
  LocalAuditSink,
  readSessionEvents,
} from '../../../adapters/local/audit-sink.ts';
import type { LocalAuditSinkOptions } from '../../../adapters/local/audit-sink.ts';
import { readJournal, recoverJournal } from '../../../adapters/local/audit-journal.ts';
import { newSessionId, SESSION_END, sessionStart, useAuditSinkFixture } from '../../helpers/audit-sink.ts';

const audit = useAuditSinkFixture({ tempPrefix: 'warden-journal-', readOnlyWindowMs: 20 });
const { tempDir } = audit;
const START = sessionStart();
const END = SESSION_END;
const stmt = (statementId: number, text = `UPDATE t SET n = ${statementId}`): AuditEventBodyOf<'statement'> => ({
  type: 'statement',
  statementId,
  protocol: 'simple',
  text,
  classification: { operation: 'update' },
  decision: { effect: 'allow', policies: ['p'] },
  startedAt: new Date().toISOString(),
});
const newId = newSessionId;

async function openSink(dir: string, extra: Partial<LocalAuditSinkOptions> = {}): Promise<LocalAuditSink> {
  return audit.openSink({ dir, ...extra });
}

const fileOf = (dir: string, id: string) => join(dir, 'sessions', `${id}.jsonl`);
const rawLines = (path: string): string[] => {
  const text = readFileSync(path, 'utf8');
  return text.slice(0, text.lastIndexOf('\n') + 1).split('\n').slice(0, -1);
};
const journalSize = (dir: string) => statSync(join(dir, 'journal.wal')).size;

/** sha256 of every file under dir (to prove the readers never write). */
function digestDir(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else h.update(p.slice(dir.length)).update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest('hex');
}

/** Drops the last n complete lines of a file (an unflushed page cache), optionally leaving a torn fragment. */
function dropLastLines(path: string, n: number, torn = false): void {
  const lines = rawLines(path);
  const keep = lines.slice(0, Math.max(0, lines.length - n));
  const dropped = lines.slice(keep.length);
  writeFileSync(path, keep.map((l) => l + '\n').join('') + (torn && dropped[0] ? dropped[0].slice(0, 17) : ''));
}

interface FileTrack {
  written: number;
  synced: number;
}

/**
 * An openFile that records, per path, the bytes written through the handle and the bytes covered by
 * a completed fdatasync; `onTruncate` runs when the journal is truncated (a checkpoint).
 */
function trackedOpen(onTruncate?: (tracks: Map<string, FileTrack>) => void) {
  const tracks = new Map<string, FileTrack>();
  const openFile = async (path: string, flags: string, mode: number): Promise<FileHandle> => {
    const fh = await fsOpen(path, flags, mode);
    const t: FileTrack = tracks.get(path) ?? { written: 0, synced: 0 };
    if (flags.startsWith('a')) t.written = t.synced = (await fh.stat()).size;
    tracks.set(path, t);
    const h = fh as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const write = fh.write.bind(fh) as (...args: unknown[]) => Promise<{ bytesWritten: number }>;
    const datasync = fh.datasync.bind(fh);
    const truncate = fh.truncate.bind(fh);
    h.write = async (...args) => {
      const r = await write(...args);
      t.written += r.bytesWritten;
      return r;
    };
    h.datasync = async () => {
      const at = t.written;
      await datasync();
      t.synced = Math.max(t.synced, at);
    };
    h.truncate = async (len?: unknown) => {
      onTruncate?.(tracks);
      await truncate(len as number);
      t.written = t.synced = (len as number | undefined) ?? 0;
    };
    return fh;
  };
  return { openFile, tracks };
}

/** What a machine crash may leave of a copy: each tracked file cut somewhere between its synced and written size. */
function loseUnsynced(copy: string, orig: string, tracks: Map<string, FileTrack>, rand: () => number): void {
  for (const [path, t] of tracks) {
    const p = join(copy, path.slice(orig.length));
    let size: number;
    try {
      size = statSync(p).size;
    } catch {
      continue;
    }
    const floor = Math.min(t.synced, size);
    const cut = floor + Math.floor(rand() * (size - floor + 1));
    if (cut < size) truncateSync(p, cut);
  }
}

describe('audit journal: crash recovery', () => {
  it('after a crash, readers show every durable event; open() recovers them into the files', async () => {
    const dir = join(tempDir(), 'audit');
    const copy = join(tempDir(), 'crashed');
    const sink = await openSink(dir, { readOnlyWindowMs: 60_000 });
    const sessions = Array.from({ length: 5 }, () => sink.openSession(newId(), START));
    await Promise.all(sessions.map((s) => s.ready));
    // Some non-durable events, then durable ones from every session at once; two sessions end.
    for (const [k, s] of sessions.entries()) void s.append(stmt(100 + k, `SELECT ${k}`), { durable: false });
    const durable: Promise<void>[] = [];
    for (let i = 1; i <= 5; i++) for (const s of sessions) durable.push(s.append(stmt(i), { durable: true }));
    durable.push(sessions[0]!.end(END), sessions[1]!.end(END));
    await Promise.all(durable);
    cpSync(dir, copy, { recursive: true }); // the crash: right after the durable promises resolved
    await sink.close();

    // Ground truth: the original files, complete after close().
    const truth = new Map(sessions.map((s) => [s.sessionId, rawLines(fileOf(dir, s.sessionId))]));
    for (const lines of truth.values()) assert.ok(lines.length >= 7);

    // Mimic a lost page cache on the copy: lines and index lines gone, a torn fragment, a lost file.
    const [s0, s1, s2, s3, s4] = sessions.map((s) => s.sessionId) as [SessionId, SessionId, SessionId, SessionId, SessionId];
    dropLastLines(fileOf(copy, s0), 4, true);
    dropLastLines(fileOf(copy, s1), 1);
    dropLastLines(fileOf(copy, s2), 6, true);
    unlinkSync(fileOf(copy, s3)); // its directory entry was never fsynced
    dropLastLines(join(copy, 'index.jsonl'), 3, true);
    assert.ok(journalSize(copy) > 0);

    // Readers: the durable truth, without writing anything.
    const before = digestDir(copy);
    assert.deepEqual(await listSessionFiles(copy), [...truth.keys()].sort());
    for (const [id, lines] of truth) {
      const trail = await readSessionEvents(copy, id);
      assert.deepEqual(trail.lines, lines, `session ${id}`);
      assert.equal(trail.torn, null);
      assert.deepEqual(trail.badLines, []);
    }
    assert.ok((await readSessionEvents(copy, s3)).fromJournal > 0);
    const list = await listSessions(copy);
    assert.deepEqual(list.map((x) => x.sessionId).sort(), [...truth.keys()].sort());
    assert.equal(list.filter((x) => x.endTime).length, 2);
    assert.equal(digestDir(copy), before, 'readers never write');

    // Recovery at open().
    const sink2 = await openSink(copy);
    assert.ok(sink2.recovery && sink2.recovery.sessionLines > 0 && sink2.recovery.indexLines >= 3, JSON.stringify(sink2.recovery));
    assert.equal(journalSize(copy), 0, 'the journal is truncated after recovery');
    for (const [id, lines] of truth) {
      assert.deepEqual(rawLines(fileOf(copy, id)), lines, `recovered ${id}`);
      const sealed = id === s0 || id === s1;
      const v = verifyChainLines(lines, audit.key.publicKey, { requireSeal: sealed });
      assert.equal(v.ok, true, JSON.stringify(v));
      if (v.ok) assert.equal(v.sealed, sealed);
    }
    assert.deepEqual(rawLines(join(copy, 'index.jsonl')), rawLines(join(dir, 'index.jsonl')));
    // The recovered dir is usable.
    const s = sink2.openSession(newId(), START);
    await s.append(stmt(1), { durable: true });
    await s.end(END);
    await sink2.close();
    assert.equal((await listSessions(copy)).length, 6);
    void s4;
  });

  it('ignores a torn last journal record and an unsynced zero-filled tail', async () => {
    const dir = join(tempDir(), 'audit');
    const copy = join(tempDir(), 'crashed');
    const sink = await openSink(dir);
    const s = sink.openSession(newId(), START);
    for (let i = 1; i <= 3; i++) await s.append(stmt(i), { durable: true });
    cpSync(dir, copy, { recursive: true });
    await sink.close();
    const truth = rawLines(fileOf(dir, s.sessionId));
    dropLastLines(fileOf(copy, s.sessionId), 2);

    // A record torn mid-write (its round never completed, so nothing acknowledged it).
    const j = join(copy, 'journal.wal');
    appendFileSync(j, `${s.sessionId}\t{"v":1,"type":"statement","sessionId":"${s.sessionId}","seq":4,"te`);
    const trail = await readSessionEvents(copy, s.sessionId);
    assert.deepEqual(trail.lines, truth);

    // Zeros (blocks never written before the crash) followed by something that looks like a record.
    const copy2 = join(tempDir(), 'crashed2');
    cpSync(copy, copy2, { recursive: true });
    appendFileSync(join(copy2, 'journal.wal'), Buffer.concat([Buffer.from('\n'), Buffer.alloc(4096), Buffer.from(`\n${s.sessionId}\t{"seq":99}\n`)]));
    // The session file too: its size reached disk, its last block did not.
    appendFileSync(fileOf(copy2, s.sessionId), Buffer.concat([Buffer.alloc(4000), Buffer.from('\n'), Buffer.alloc(96)]));
    assert.deepEqual((await readSessionEvents(copy2, s.sessionId)).lines, truth);

    for (const d of [copy, copy2]) {
      const sink2 = await openSink(d);
      assert.ok(sink2.recovery!.ignoredBytes > 0);
      await sink2.close();
      assert.deepEqual(rawLines(fileOf(d, s.sessionId)), truth);
      assert.equal(journalSize(d), 0);
      assert.deepEqual(verifyChainLines(truth, audit.key.publicKey, { requireSeal: false }), { ok: true, count: 4, sealed: false });
    }
  });

  it('recovery is idempotent, also after a crash in the middle of it', async () => {
    const dir = join(tempDir(), 'audit');
    const crashed = join(tempDir(), 'crashed');
    const sink = await openSink(dir);
    const sessions = Array.from({ length: 3 }, () => sink.openSession(newId(), START));
    for (let i = 1; i <= 4; i++) await Promise.all(sessions.map((s) => s.append(stmt(i), { durable: true })));
    await sessions[2]!.end(END);
    cpSync(dir, crashed, { recursive: true });
    await sink.close();
    for (const s of sessions) dropLastLines(fileOf(crashed, s.sessionId), 3, true);
    dropLastLines(join(crashed, 'index.jsonl'), 2);

    // A: plain recovery, twice.
    const a = join(tempDir(), 'a');
    cpSync(crashed, a, { recursive: true });
    await (await openSink(a)).close();
    const afterOnce = digestDir(a);
    const again = await openSink(a);
    assert.equal(again.recovery, null, 'nothing left to recover');
    await again.close();
    assert.equal(digestDir(a), afterOnce);

    // B: recovery replayed the journal but "crashed" before truncating it, half-way through a file
    // write; then a second recovery at open().
    const b = join(tempDir(), 'b');
    cpSync(crashed, b, { recursive: true });
    await recoverJournal(b, readFileSync(join(b, 'journal.wal')));
    assert.ok(journalSize(b) > 0);
    dropLastLines(fileOf(b, sessions[1]!.sessionId), 2, true);
    const sinkB = await openSink(b);
    assert.ok(sinkB.recovery);
    await sinkB.close();
    assert.equal(digestDir(b), afterOnce, 'same result as a single recovery');
    for (const s of sessions) {
      const lines = rawLines(fileOf(b, s.sessionId));
      assert.deepEqual(lines, rawLines(fileOf(dir, s.sessionId)));
      assert.equal(verifyChainLines(lines, audit.key.publicKey, { requireSeal: false }).ok, true);
    }
  });

  it('a session that ends while the round holding its previous lines is in flight', async () => {
    const dir = join(tempDir(), 'audit');
    const sink = await openSink(dir, { journalCheckpointBytes: 1 }); // a checkpoint after every round
    for (let k = 0; k < 20; k++) {
      const s = sink.openSession(newId(), START);
      const a = s.append(stmt(1), { durable: true });
      await new Promise((r) => setImmediate(r)); // the round with stmt(1) has started
      const e = s.end(END);
      await Promise.all([s.ready, a, e]);
    }
    await sink.close();
    assert.equal(sink.stats().failed, false);
    const ids = await listSessionFiles(dir);
    assert.equal(ids.length, 20);
    for (const id of ids) {
      const v = verifyChainLines(rawLines(fileOf(dir, id)), audit.key.publicKey);
      assert.deepEqual(v, { ok: true, count: 4, sealed: true, keyId: audit.key.keyId });
    }
  });

  it('checkpoints: at journalCheckpointBytes every written file is fsynced before the journal is truncated', async () => {
    const dir = join(tempDir(), 'audit');
    const violations: string[] = [];
    let truncations = 0;
    const { openFile, tracks } = trackedOpen((all) => {
      truncations++;
      for (const [path, t] of all) {
        if (basename(path) !== 'journal.wal' && t.written > t.synced) violations.push(`${basename(path)}: ${t.written - t.synced} bytes not synced`);
      }
    });
    const sink = await openSink(dir, { journalCheckpointBytes: 4096, openFile });
    const sessions = Array.from({ length: 6 }, () => sink.openSession(newId(), START));
    await Promise.all(sessions.map((s) => s.ready));
    const checkpointsBefore = sink.stats().checkpoints;
    await Promise.all(
      sessions.map(async (s, k) => {
        for (let i = 1; i <= 25; i++) {
          await s.append(stmt(i, `UPDATE t SET n = ${i} WHERE k = ${k}`), { durable: i % 3 !== 0 });
          if (i === 20 && k < 2) await s.end(END);
          if (i >= 20 && k < 2) return;
        }
      }),
    );
    const st = sink.stats();
    assert.ok(st.checkpoints - checkpointsBefore >= 3, `checkpoints: ${st.checkpoints - checkpointsBefore}`);
    assert.ok(st.journalBytes < 4096 + 8192, `journal stays small: ${st.journalBytes}`);
    assert.equal(statSync(join(dir, 'journal.wal')).size, st.journalBytes);
    assert.deepEqual(violations, []);
    assert.ok(truncations >= 3);

    // Everything the journal no longer holds is complete in the files.
    const journal = await readJournal(dir);
    await sink.flush();
    for (const s of sessions) {
      const merged = (await readSessionEvents(dir, s.sessionId)).lines;
      const inJournal = journal.sessions.get(s.sessionId)?.length ?? 0;
      assert.ok(rawLines(fileOf(dir, s.sessionId)).length >= merged.length - inJournal);
      assert.equal(verifyChainLines(merged, audit.key.publicKey, { requireSeal: false }).ok, true);
    }
    await sink.close();
    assert.deepEqual(violations, [], 'close() checkpoints the same way');
    assert.equal(journalSize(dir), 0);
    for (const [path, t] of tracks) assert.equal(t.synced, t.written, `${basename(path)} synced at close`);
    for (const s of sessions) assert.equal(verifyChainLines(rawLines(fileOf(dir, s.sessionId)), audit.key.publicKey, { requireSeal: false }).ok, true);
  });

  it('randomized: interleaved appends, a crash at a random durable resolution, lost unsynced bytes → every resolved durable event recovered, in order', async () => {
    const op = fc.record({
      session: fc.nat({ max: 4 }),
      durable: fc.boolean(),
      wait: fc.boolean(),
      end: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
      size: fc.integer({ min: 0, max: 400 }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          sessions: fc.integer({ min: 1, max: 5 }),
          ops: fc.array(op, { minLength: 1, maxLength: 60 }),
          // The crash: when the k-th durable promise resolves, or right after issuing the k-th op
          // (writes may then be in flight: torn journal records and file lines).
          crash: fc.record({ atResolution: fc.boolean(), frac: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }) }),
          checkpointBytes: fc.constantFrom(700, 3000, 16 * 1024 * 1024),
          fileWriteDelayMs: fc.constantFrom(0, 2, 20),
          seed: fc.integer(),
        }),
        async ({ sessions: n, ops, crash, checkpointBytes, fileWriteDelayMs, seed }) => {
          let rng = seed >>> 0 || 1;
          const rand = () => ((rng = (Math.imul(rng, 1664525) + 1013904223) >>> 0) / 2 ** 32);
          const dir = join(tempDir(), 'audit');
          const copy = join(tempDir(), 'crashed');
          const { openFile, tracks } = trackedOpen();
          const sink = await openSink(dir, { journalCheckpointBytes: checkpointBytes, fileWriteDelayMs, openFile, readOnlyWindowMs: 5 });
          const sessions: SessionAudit[] = [];
          const ended = new Set<number>();
          /** Per session: highest seq whose durable promise resolved before the crash copy. */
          const durableSeq = new Map<SessionId, number>();
          let resolvedCount = 0;
          let snapshot: { tracks: Map<string, FileTrack>; durableSeq: Map<SessionId, number> } | null = null;
          const takeSnapshot = () => {
            if (snapshot) return;
            cpSync(dir, copy, { recursive: true });
            snapshot = { tracks: new Map([...tracks].map(([p, t]) => [p, { ...t }])), durableSeq: new Map(durableSeq) };
          };
          const seqs = new Map<SessionId, number>();
          const watch = (id: SessionId, seq: number, p: Promise<void>) =>
            p.then(() => {
              if (snapshot) return;
              durableSeq.set(id, Math.max(durableSeq.get(id) ?? -1, seq));
              if (crash.atResolution && resolvedCount++ === Math.floor(crash.frac * (ops.filter((o) => o.durable).length + n))) takeSnapshot();
            });
          const crashOp = crash.atResolution ? -1 : Math.floor(crash.frac * ops.length);
          const all: Promise<void>[] = [];
          for (let k = 0; k < n; k++) {
            const s = sink.openSession(newId(), START);
            sessions.push(s);
            seqs.set(s.sessionId, 0);
            all.push(watch(s.sessionId, 0, s.ready));
          }
          for (const [i, o] of ops.entries()) {
            if (i === crashOp) takeSnapshot();
            const k = o.session % n;
            if (ended.has(k)) continue;
            const s = sessions[k]!;
            let p: Promise<void>;
            let seq: number;
            if (o.end) {
              ended.add(k);
              seq = seqs.get(s.sessionId)! + 2;
              p = s.end(END);
            } else {
              seq = seqs.get(s.sessionId)! + 1;
              p = s.append(stmt(seq, 'x'.repeat(o.size)), { durable: o.durable });
            }
            seqs.set(s.sessionId, seq);
            if (o.durable || o.end) all.push(watch(s.sessionId, seq, p));
            if (o.wait) await p;
          }
          await Promise.all(all);
          takeSnapshot();
          await sink.close();
          const snap = snapshot!;

          loseUnsynced(copy, dir, snap.tracks, rand);
          const ids = sessions.map((s) => s.sessionId);
          const listed = new Set(await listSessionFiles(copy));
          const seen = new Map<SessionId, string[]>();
          for (const id of ids) {
            if (!listed.has(id)) {
              assert.equal(snap.durableSeq.has(id), false, `session ${id} had durable events but is not listed`);
              continue;
            }
            seen.set(id, (await readSessionEvents(copy, id)).lines);
          }
          const sink2 = await openSink(copy);
          await sink2.close();
          assert.equal(journalSize(copy), 0);
          for (const id of ids) {
            const truth = rawLines(fileOf(dir, id));
            const want = snap.durableSeq.get(id);
            if (want === undefined && !seen.has(id)) continue;
            const got = rawLines(fileOf(copy, id));
            assert.deepEqual(got, seen.get(id), 'the readers saw what recovery wrote');
            assert.deepEqual(got, truth.slice(0, got.length), 'a prefix of the true trail, in order');
            assert.ok(got.length >= (want ?? -1) + 1, `durable events up to seq ${want} present (got ${got.length} lines)`);
            if (got.length > 0) assert.equal(verifyChainLines(got, audit.key.publicKey, { requireSeal: false }).ok, true);
          }
          const listedAfter = new Set((await listSessions(copy)).map((x) => x.sessionId));
          for (const id of ids) if (snap.durableSeq.has(id)) assert.ok(listedAfter.has(id), `index has ${id}`);
        },
      ),
      { numRuns: 60 },
    );
  });
});
