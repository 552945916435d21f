/**
 * Where `warden audit` reads a trail from. The commands (audit.ts) print and verify what a source
 * returns, so the local trail and the AWS one (cli/aws/audit-source.ts, loaded only with --aws) give
 * output of the same shape. This file must not import the AWS SDK: the local commands never load it.
 */
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import type { SessionId } from '../../core/audit/events.ts';
import { listSessionFiles, listSessions, loadAuditPublicKey, readAuditJournal, readSessionEvents } from '../../adapters/local/audit-sink.ts';
import type { JournalContents, SessionSummary, SessionTrail } from '../../adapters/local/audit-sink.ts';

/** The public half of the key that signs seals, and its id (explains a signature that does not verify). */
export interface SealKey {
  readonly publicKey: KeyObject;
  readonly keyId: string;
}

export type SealKeyLookup = { readonly key: SealKey } | { readonly key: null; readonly missing: string };

export interface SourceTrail extends SessionTrail {
  /** Stored events whose bytes are missing or do not match what points at them (AWS large events). */
  readonly payloadErrors?: readonly { seq: number; key: string; error: string }[];
}

/** The first broken link a source-specific check found. */
export interface TrailBreak {
  readonly seq: number;
  readonly reason: string;
}

export interface AuditTrailSource {
  /** The trail's place, in messages ("no sessions recorded in …"). */
  readonly where: string;
  /** Where one session's events are, for `show`. */
  location(trail: SourceTrail): string;
  /** The index (sessions with their start and end), in start order. */
  listSessions(): Promise<SessionSummary[]>;
  /** Session ids a session id argument (or its prefix) may name. */
  knownSessionIds(): Promise<SessionId[]>;
  /** Every session with stored events, also one missing from the index (`verify --all`). */
  allSessionIds(): Promise<SessionId[]>;
  /** Rejects with an AuditReadError whose `notFound` is set when the session has no stored events. */
  readSession(sessionId: SessionId): Promise<SourceTrail>;
  /** Why verify reports a session without stored events as broken. */
  missingTrail(sessionId: SessionId): string;
  /** The key that checks seals; without one, verify reports sealed sessions as UNVERIFIED. */
  sealKey(): Promise<SealKeyLookup>;
  /** Checks beyond the chain, on a trail whose chain and index agree (AWS: the S3 recording). */
  crossCheck?(trail: SourceTrail, chain: { count: number; sealed: boolean }, key: SealKey | null): Promise<TrailBreak | null>;
  /** Releases what the source holds open. */
  close(): void;
}

export class AuditSourceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditSourceError';
  }
}

/**
 * The local audit folder. journal.wal is read once per command and shared by every read, so one
 * command sees one snapshot (and `verify --all` does not read megabytes of journal per session).
 */
export function localTrailSource(dir: string, key: { path: string; required: boolean }): AuditTrailSource {
  let journal: Promise<JournalContents> | undefined;
  let summaries: Promise<SessionSummary[]> | undefined;
  const snapshot = (): Promise<JournalContents> => (journal ??= readAuditJournal(dir));
  const index = async (): Promise<SessionSummary[]> => [...(await (summaries ??= snapshot().then((j) => listSessions(dir, { journal: j }))))];
  const ids = async (): Promise<SessionId[]> => {
    const files = await listSessionFiles(dir, { journal: await snapshot() });
    return [...new Set<SessionId>([...(await index()).map((s) => s.sessionId), ...files])].sort();
  };
  return {
    where: dir,
    location: (trail) => join(dir, trail.file),
    listSessions: index,
    knownSessionIds: ids,
    allSessionIds: ids,
    readSession: async (sessionId) => readSessionEvents(dir, sessionId, { journal: await snapshot() }),
    missingTrail: (sessionId) => `audit file for session ${sessionId} is missing`,
    async sealKey() {
      const found = await loadAuditPublicKey(key.path);
      if (found) return { key: found };
      if (key.required) throw new AuditSourceError(`public key ${key.path} not found`);
      return { key: null, missing: `no public key at ${key.path}` };
    },
    close: () => undefined,
  };
}
