import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { asSessionId } from '../../../../core/audit/events.ts';
import type { SessionId } from '../../../../core/audit/events.ts';
import { chainEvent, chainEventLine } from '../../../../core/audit/hash-chain.ts';
import type { ChainLink } from '../../../../core/audit/hash-chain.ts';
import {
  encodeJournalRecords,
  INDEX_TARGET,
  intactLength,
  journalChunk,
  mergeIndexJournal,
  mergeSessionJournal,
  parseJournal,
} from '../../../../adapters/local/audit-journal.ts';

const A = asSessionId('sess-a');
const B = asSessionId('sess-b');

/** n chained event lines of one session (without newline). */
function chain(id: SessionId, n: number): string[] {
  const start = chainEvent(null, { type: 'session.start', protocol: 'postgres', source: { address: '::1', port: 1 }, listener: 'l', tls: false, target: 't', startupUser: 'u' }, { sessionId: id });
  const lines = [JSON.stringify(start)];
  let last: ChainLink = start;
  for (let i = 1; i < n; i++) {
    const r = chainEventLine(last, { type: 'statement', statementId: i, protocol: 'simple', text: `SELECT ${i}`, classification: { operation: 'select' }, decision: { effect: 'allow', policies: [] }, startedAt: 't' }, { sessionId: id });
    lines.push(r.line);
    last = r.link;
  }
  return lines;
}
const file = (lines: string[], tail = '') => Buffer.from(lines.map((l) => l + '\n').join('') + tail);

describe('journal records', () => {
  it('journalChunk encodes newline-terminated lines like encodeJournalRecords', () => {
    const lines = ['{"a":1}', '{"b":2}'];
    assert.equal(
      journalChunk(A, lines.map((l) => l + '\n')),
      encodeJournalRecords(lines.map((line) => ({ target: A, line }))),
    );
    assert.equal(journalChunk(INDEX_TARGET, ['{"x":1}\n']), '@index\t{"x":1}\n');
    assert.equal(journalChunk(A, []), '');
  });

  it('parses records by target, in order, ignoring a torn last record', () => {
    const text = encodeJournalRecords([
      { target: A, line: '{"n":1}' },
      { target: INDEX_TARGET, line: '{"i":1}' },
      { target: B, line: '{"n":2}' },
      { target: A, line: '{"n":3}' },
    ]);
    const j = parseJournal(Buffer.from(text + 'sess-a\t{"n":4'));
    assert.deepEqual(j.sessions.get(A), ['{"n":1}', '{"n":3}']);
    assert.deepEqual(j.sessions.get(B), ['{"n":2}']);
    assert.deepEqual(j.index, ['{"i":1}']);
    assert.equal(j.validBytes, Buffer.byteLength(text));
    assert.equal(j.totalBytes, Buffer.byteLength(text) + 13);
  });

  it('stops at the first malformed record or NUL byte (an unsynced tail after a crash)', () => {
    const good = encodeJournalRecords([{ target: A, line: '{"n":1}' }]);
    const after = encodeJournalRecords([{ target: A, line: '{"n":9}' }]);
    for (const bad of ['no tab here\n', 'bad id!\t{"n":2}\n', 'sess-a\tnot json\n', `sess-a\t{"n":\0\0}\n`, '\0\0\0\0\n']) {
      const j = parseJournal(Buffer.from(good + bad + after));
      assert.deepEqual(j.sessions.get(A), ['{"n":1}'], JSON.stringify(bad));
      assert.equal(j.validBytes, good.length);
    }
    assert.equal(parseJournal(Buffer.alloc(4096)).validBytes, 0);
    assert.equal(parseJournal(Buffer.alloc(0)).sessions.size, 0);
  });

  it('keeps multi-byte UTF-8 intact and counts valid bytes', () => {
    const text = encodeJournalRecords([{ target: A, line: '{"t":"é—😀"}' }]);
    const j = parseJournal(Buffer.from(text + 'sess-a\t{"t":"é'));
    assert.deepEqual(j.sessions.get(A), ['{"t":"é—😀"}']);
    assert.equal(j.validBytes, Buffer.byteLength(text));
  });
});

describe('intactLength', () => {
  it('cuts a torn tail and trailing lines with NUL bytes', () => {
    assert.equal(intactLength(Buffer.from('a\nb\n')), 4);
    assert.equal(intactLength(Buffer.from('a\nb\nc')), 4);
    assert.equal(intactLength(Buffer.from('a\n\0\0\0\n\0\0')), 2);
    assert.equal(intactLength(Buffer.from('a\nb\0b\n')), 2);
    assert.equal(intactLength(Buffer.from('\0\0\n')), 0);
    assert.equal(intactLength(Buffer.from('')), 0);
    assert.equal(intactLength(Buffer.from('\n\n')), 2);
  });
});

describe('mergeSessionJournal', () => {
  const lines = chain(A, 6);

  it('appends the journal lines after the last complete event, cutting a torn tail', () => {
    const m = mergeSessionJournal(A, file(lines.slice(0, 3), lines[3]!.slice(0, 10)), lines.slice(1));
    assert.equal(m.keep, file(lines.slice(0, 3)).length);
    assert.deepEqual(m.append, lines.slice(3));
  });

  it('missing file: every journal line; no journal line: the file untouched', () => {
    assert.deepEqual(mergeSessionJournal(A, null, lines.slice(0, 2)), { keep: 0, append: lines.slice(0, 2) });
    const f = file(lines, '{"torn');
    assert.deepEqual(mergeSessionJournal(A, f, []), { keep: f.length, append: [] });
  });

  it('nothing to add when the file is complete (idempotent)', () => {
    const f = file(lines);
    assert.deepEqual(mergeSessionJournal(A, f, lines.slice(2)), { keep: f.length, append: [] });
  });

  it('looks past trailing garbage lines for the last event', () => {
    const f = Buffer.concat([file(lines.slice(0, 2)), Buffer.alloc(100), Buffer.from('\n')]);
    const m = mergeSessionJournal(A, f, lines);
    assert.equal(m.keep, file(lines.slice(0, 2)).length);
    assert.deepEqual(m.append, lines.slice(2));
  });

  it('keeps a gap visible rather than hiding journal lines', () => {
    // The file lost seq 2 (cannot happen with checkpoints, but the evidence must not be dropped).
    const m = mergeSessionJournal(A, file(lines.slice(0, 2)), lines.slice(3));
    assert.deepEqual(m.append, lines.slice(3));
  });

  it("stops at a journal line that is not the session's or does not match its hash", () => {
    const other = chain(B, 3);
    assert.deepEqual(mergeSessionJournal(A, file(lines.slice(0, 2)), [lines[2]!, other[1]!, lines[3]!]).append, [lines[2]]);
    const forged = lines[3]!.replace('SELECT 3', 'SELECT 4');
    assert.deepEqual(mergeSessionJournal(A, file(lines.slice(0, 2)), [lines[2]!, forged, lines[4]!]).append, [lines[2]]);
    assert.deepEqual(mergeSessionJournal(A, file(lines.slice(0, 2)), [lines[2]!, '{"sessionId":"sess-a"', lines[3]!]).append, [lines[2]]);
  });
});

describe('mergeIndexJournal', () => {
  it('adds the journal lines not present, cutting a torn tail', () => {
    const f = Buffer.from('{"i":1}\n{"i":2}\n{"i":3');
    const m = mergeIndexJournal(f, ['{"i":2}', '{"i":3}', '{"i":4}']);
    assert.equal(m.keep, 16);
    assert.deepEqual(m.fileLines, ['{"i":1}', '{"i":2}']);
    assert.deepEqual(m.append, ['{"i":3}', '{"i":4}']);
  });

  it('no journal line: the file untouched (its torn tail is not a line)', () => {
    const f = Buffer.from('{"i":1}\n{"i":2');
    assert.deepEqual(mergeIndexJournal(f, []), { keep: f.length, append: [], fileLines: ['{"i":1}'] });
    assert.deepEqual(mergeIndexJournal(null, ['{"i":1}']), { keep: 0, append: ['{"i":1}'], fileLines: [] });
    assert.deepEqual(mergeIndexJournal(Buffer.alloc(0), ['{"i":1}']), { keep: 0, append: ['{"i":1}'], fileLines: [] });
  });

  it('stops at a journal line that is not a JSON object', () => {
    assert.deepEqual(mergeIndexJournal(null, ['{"i":1}', '{"i":', '{"i":3}']).append, ['{"i":1}']);
  });
});
