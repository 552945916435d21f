/**
 * Shared setup for tests of LocalAuditSink (adapters/local/audit-sink.ts): temp dirs removed after
 * the file's tests, one signing key per test file, opening a sink with it, and session start/end
 * fields.
 */
import { after, before } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { asSessionId } from '../../core/audit/events.ts';
import type { SessionId, SessionStartFields } from '../../core/audit/events.ts';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../adapters/local/audit-sink.ts';
import type { AuditSigningKey, LocalAuditSinkOptions } from '../../adapters/local/audit-sink.ts';

export interface AuditSinkFixture {
  /** A new empty temp dir, removed after the file's tests. */
  tempDir(): string;
  /** The state dir the signing key was created in (set by the fixture's before() hook). */
  readonly stateDir: string;
  /** The seal signing key (set by the fixture's before() hook). */
  readonly key: AuditSigningKey;
  /** Opens a sink on `opts.dir` signed with `key`, with the fixture's readOnlyWindowMs unless overridden. */
  openSink(opts: Partial<LocalAuditSinkOptions> & { dir: string }): Promise<LocalAuditSink>;
}

/**
 * Registers the before()/after() hooks of a test file: before, creates the signing key in a fresh
 * temp state dir; after, removes every temp dir made with tempDir().
 */
export function useAuditSinkFixture(opts: { tempPrefix: string; readOnlyWindowMs: number }): AuditSinkFixture {
  const roots: string[] = [];
  let key: AuditSigningKey | null = null;
  let stateDir: string | null = null;
  const tempDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), opts.tempPrefix));
    roots.push(d);
    return d;
  };
  after(() => {
    for (const d of roots) rmSync(d, { recursive: true, force: true });
  });
  before(async () => {
    stateDir = tempDir();
    key = await loadOrCreateAuditSigningKey(stateDir);
  });
  const ready = <T>(v: T | null, what: string): T => {
    if (v === null) throw new Error(`audit sink fixture: ${what} is set in before(), not yet run`);
    return v;
  };
  return {
    tempDir,
    get stateDir() {
      return ready(stateDir, 'stateDir');
    },
    get key() {
      return ready(key, 'key');
    },
    openSink(sinkOpts) {
      const k = ready(key, 'key');
      return LocalAuditSink.open({ readOnlyWindowMs: opts.readOnlyWindowMs, signingKey: k.privateKey, keyId: k.keyId, ...sinkOpts });
    },
  };
}

/** Session start fields of a Postgres session from 127.0.0.1 to target 'app' (override as needed). */
export function sessionStart(overrides: Partial<SessionStartFields> = {}): SessionStartFields {
  return {
    protocol: 'postgres',
    source: { address: '127.0.0.1', port: 50000 },
    listener: 'postgres:127.0.0.1:6432',
    tls: true,
    target: 'app',
    startupUser: 'alice',
    ...overrides,
  };
}

/** Session end fields: a client-terminated session with 2 statements. */
export const SESSION_END = { reason: 'client_terminate', statements: 2, bytesFromClient: 100, bytesToClient: 200, durationMs: 42 } as const;

export const newSessionId = (): SessionId => asSessionId(randomUUID());
