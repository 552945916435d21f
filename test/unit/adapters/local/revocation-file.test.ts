/**
 * LocalRevocationFile: a missing file is an empty list; a change (an atomic replace, a removal) is picked up
 * by the folder watch within milliseconds and by polling alone when the watch is off; a corrupt, empty or
 * ill-shaped file makes every check `unavailable` (fail closed) with one clear log line naming the file and
 * what is wrong, and fixing it restores the answers; a file corrupt at start rejects `ready`.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalRevocationFile, RevocationFileError, readRevocationFile, writeRevocationFile } from '../../../../adapters/local/revocation-file.ts';
import type { RevocationLogger } from '../../../../core/identity/revocation-document.ts';
import type { RevokedIdentity } from '../../../../core/identity/revocation.ts';

const roots: string[] = [];
after(() => roots.forEach((d) => rmSync(d, { recursive: true, force: true })));
function fileIn(): string {
  const d = mkdtempSync(join(tmpdir(), 'warden-revocations-'));
  roots.push(d);
  return join(d, 'revocations.json');
}

const ISS = 'https://idp.example.com';
const entry = (subject: string): RevokedIdentity => ({ issuer: ISS, subject, revokedAt: '2030-01-01T00:00:00.000Z', reason: 'key leaked', revokedBy: 'alice' });

interface Line {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}
function capture(): RevocationLogger & { lines: Line[] } {
  const lines: Line[] = [];
  return {
    lines,
    info: (msg, fields) => void lines.push({ level: 'info', msg, ...(fields ? { fields } : {}) }),
    warn: (msg, fields) => void lines.push({ level: 'warn', msg, ...(fields ? { fields } : {}) }),
    error: (msg, fields) => void lines.push({ level: 'error', msg, ...(fields ? { fields } : {}) }),
  };
}

/** Resolves at the next change notification; rejects after `ms`. */
function nextChange(list: LocalRevocationFile, ms = 3000): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no change within ${ms} ms`));
    }, ms);
    const off = list.onChange(() => {
      clearTimeout(timer);
      off();
      resolve(Date.now() - started);
    });
  });
}

describe('LocalRevocationFile', () => {
  test('a missing file is an empty list: every identity is ok', async () => {
    const list = new LocalRevocationFile({ path: fileIn() });
    try {
      await list.ready;
      assert.equal(list.check(ISS, 'ci-bot'), 'ok');
    } finally {
      await list.close();
    }
  });

  test('the folder watch picks up a revocation written atomically, then its removal', async () => {
    const path = fileIn();
    const list = new LocalRevocationFile({ path, pollIntervalMs: 60_000 }); // the watch alone
    try {
      await list.ready;
      const changed = nextChange(list);
      await writeRevocationFile(path, { revoked: [entry('ci-bot')] });
      const ms = await changed;
      assert.equal(list.check(ISS, 'ci-bot'), 'revoked');
      assert.equal(list.check(ISS, 'other-bot'), 'ok');
      assert.equal(list.check('https://other-idp.example.com', 'ci-bot'), 'ok', 'an identity is issuer and subject together');
      assert.ok(ms < 1000, `picked up after ${ms} ms`);

      const lifted = nextChange(list);
      await writeRevocationFile(path, { revoked: [] });
      await lifted;
      assert.equal(list.check(ISS, 'ci-bot'), 'ok');
    } finally {
      await list.close();
    }
  });

  test('polling alone picks up a change when the watch is off, and a deleted file empties the list', async () => {
    const path = fileIn();
    await writeRevocationFile(path, { revoked: [entry('ci-bot')] });
    const list = new LocalRevocationFile({ path, watch: false, pollIntervalMs: 50 });
    try {
      await list.ready;
      assert.equal(list.check(ISS, 'ci-bot'), 'revoked');
      const changed = nextChange(list);
      unlinkSync(path);
      await changed;
      assert.equal(list.check(ISS, 'ci-bot'), 'ok');
    } finally {
      await list.close();
    }
  });

  test('a corrupt file makes every check unavailable (fail closed), logged once; fixing it restores the answers', async () => {
    const path = fileIn();
    await writeRevocationFile(path, { revoked: [entry('ci-bot')] });
    const log = capture();
    const list = new LocalRevocationFile({ path, log, pollIntervalMs: 50 });
    try {
      await list.ready;
      const broken = nextChange(list);
      writeFileSync(path, '{"revoked": [ {"issuer": "https://idp.example.com", "subj');
      await broken;
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      assert.equal(list.check(ISS, 'anyone'), 'unavailable');
      await new Promise((r) => setTimeout(r, 300)); // several polls while it stays broken
      const errors = log.lines.filter((l) => l.level === 'error');
      assert.equal(errors.length, 1, JSON.stringify(log.lines));
      assert.match(errors[0]!.msg, /unavailable.*fail closed/);
      assert.equal(errors[0]!.fields?.path, path);
      assert.match(String(errors[0]!.fields?.problem), /not valid JSON/);

      const fixed = nextChange(list);
      await writeRevocationFile(path, { revoked: [entry('ci-bot')] });
      await fixed;
      assert.equal(list.check(ISS, 'ci-bot'), 'revoked');
      assert.equal(list.check(ISS, 'anyone'), 'ok');
      assert.ok(log.lines.some((l) => l.level === 'info' && /readable again/.test(l.msg)));
    } finally {
      await list.close();
    }
  });

  test('an empty file and an entry without a subject are invalid too (a truncating writer never un-revokes everyone)', async () => {
    const path = fileIn();
    const log = capture();
    const list = new LocalRevocationFile({ path, log, pollIntervalMs: 50 });
    try {
      await list.ready;
      const changed = nextChange(list);
      writeFileSync(path, '');
      await changed;
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      assert.match(String(log.lines.at(-1)?.fields?.problem), /empty/);

      writeFileSync(path, JSON.stringify({ revoked: [{ issuer: ISS, revokedAt: '2030-01-01T00:00:00Z' }] }));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      assert.match(String(log.lines.at(-1)?.fields?.problem), /revoked\.0\.subject/);
    } finally {
      await list.close();
    }
  });

  test('a file corrupt at start rejects ready with the path and the problem', async () => {
    const path = fileIn();
    writeFileSync(path, '{"revoked": {}}');
    const list = new LocalRevocationFile({ path });
    try {
      await assert.rejects(list.ready, (err: unknown) => err instanceof RevocationFileError && err.path === path && /revoked/.test(err.problem));
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      await assert.rejects(readRevocationFile(path), RevocationFileError);
    } finally {
      await list.close();
    }
  });

  test('after close no listener is called', async () => {
    const path = fileIn();
    const list = new LocalRevocationFile({ path, pollIntervalMs: 20 });
    await list.ready;
    let calls = 0;
    list.onChange(() => calls++);
    await list.close();
    await writeRevocationFile(path, { revoked: [entry('ci-bot')] });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(calls, 0);
  });
});
