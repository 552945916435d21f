/**
 * The revocation list as data: the document an operator edits (locally a JSON file, on AWS the items of a
 * table), validated strictly, and the snapshot a RevocationList answers from.
 *
 * An identity is its issuer and subject exactly as the verified token carries them (the `iss` and the
 * mapped subject claim, as the audit trail shows them): no case folding, no trailing-slash games, because a
 * revocation that matches "almost" the same identity would be a false sense of safety.
 */
import { z } from 'zod';
import type { RevocationStatus, RevokedIdentity } from './revocation.ts';

/** Longest issuer or subject kept in a revocation; longer ones cannot be a verified identity's. */
export const MAX_REVOCATION_FIELD_CHARS = 1024;

/** The DynamoDB partition key (and the CLI's display) of an identity: `<issuer>|<subject>`. */
export function revocationKey(issuer: string, subject: string): string {
  return `${issuer}|${subject}`;
}

const identifier = z.string().min(1).max(MAX_REVOCATION_FIELD_CHARS);

const RevokedIdentitySchema = z
  .object({
    issuer: identifier,
    subject: identifier,
    revokedAt: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO-8601 time'),
    reason: z.string().max(4096).optional(),
    revokedBy: z.string().max(MAX_REVOCATION_FIELD_CHARS).optional(),
  })
  .strict();

/** The local file: `{ "revoked": [ { issuer, subject, revokedAt, reason?, revokedBy? } ] }`. */
export const RevocationDocumentSchema = z.object({ revoked: z.array(RevokedIdentitySchema) }).strict();

export interface RevocationDocument {
  revoked: RevokedIdentity[];
}

/** The document does not have the expected shape; the message names where, never more than the path. */
export class RevocationDocumentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RevocationDocumentError';
  }
}

/** Validates a parsed document; throws RevocationDocumentError naming each problem's path. */
export function parseRevocationDocument(value: unknown): RevocationDocument {
  const r = RevocationDocumentSchema.safeParse(value);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(document)'}: ${i.message}`);
    throw new RevocationDocumentError(problems.join('; ') + (r.error.issues.length > 5 ? `; and ${r.error.issues.length - 5} more` : ''));
  }
  return { revoked: r.data.revoked.map(normalise) };
}

/** Optional fields absent rather than undefined, so documents compare and serialise stably. */
function normalise(e: RevokedIdentity): RevokedIdentity {
  return {
    issuer: e.issuer,
    subject: e.subject,
    revokedAt: e.revokedAt,
    ...(e.reason !== undefined ? { reason: e.reason } : {}),
    ...(e.revokedBy !== undefined ? { revokedBy: e.revokedBy } : {}),
  };
}

/** Adds (or keeps) a revocation; `changed` is false when the identity was revoked already (the first entry stays). */
export function withRevocation(doc: RevocationDocument, entry: RevokedIdentity): { doc: RevocationDocument; changed: boolean; existing?: RevokedIdentity } {
  const existing = doc.revoked.find((e) => e.issuer === entry.issuer && e.subject === entry.subject);
  if (existing) return { doc, changed: false, existing };
  return { doc: { revoked: [...doc.revoked, normalise(entry)] }, changed: true };
}

/** Removes every entry of the identity; `changed` is false when it was not revoked. */
export function withoutRevocation(doc: RevocationDocument, issuer: string, subject: string): { doc: RevocationDocument; changed: boolean; removed: RevokedIdentity[] } {
  const removed = doc.revoked.filter((e) => e.issuer === issuer && e.subject === subject);
  if (removed.length === 0) return { doc, changed: false, removed };
  return { doc: { revoked: doc.revoked.filter((e) => !(e.issuer === issuer && e.subject === subject)) }, changed: true, removed };
}

/**
 * An immutable view of the revoked identities, looked up in O(1) per login. Keys are unambiguous
 * (JSON of the pair), whatever characters an issuer or subject holds.
 */
export class RevocationSnapshot {
  static readonly EMPTY = new RevocationSnapshot([]);
  private readonly byIdentity: ReadonlyMap<string, RevokedIdentity>;
  /** A canonical text of the set, to tell whether a reload changed anything. */
  readonly fingerprint: string;

  constructor(entries: readonly RevokedIdentity[]) {
    const m = new Map<string, RevokedIdentity>();
    for (const e of entries) if (!m.has(pairKey(e.issuer, e.subject))) m.set(pairKey(e.issuer, e.subject), e);
    this.byIdentity = m;
    this.fingerprint = [...m.keys()].sort().join('\n');
  }

  get size(): number {
    return this.byIdentity.size;
  }

  status(issuer: string, subject: string): Exclude<RevocationStatus, 'unavailable'> {
    return this.byIdentity.has(pairKey(issuer, subject)) ? 'revoked' : 'ok';
  }

  get(issuer: string, subject: string): RevokedIdentity | undefined {
    return this.byIdentity.get(pairKey(issuer, subject));
  }

  entries(): RevokedIdentity[] {
    return [...this.byIdentity.values()];
  }
}

function pairKey(issuer: string, subject: string): string {
  return JSON.stringify([issuer, subject]);
}

/** Subscribers of a RevocationList's changes; a throwing listener never stops the others. */
export class RevocationListeners {
  private readonly listeners = new Set<() => void>();

  constructor(private readonly onListenerError: (err: unknown) => void = () => undefined) {}

  add(listener: () => void): () => void {
    // A wrapper per subscription: the same function subscribed twice is called twice and unsubscribed once each.
    const entry = (): void => listener();
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  emit(): void {
    for (const l of [...this.listeners]) {
      try {
        l();
      } catch (err) {
        this.onListenerError(err);
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }
}

/** What a RevocationList implementation reports to (the gateway passes its Logger). */
export interface RevocationLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const SILENT_REVOCATION_LOGGER: RevocationLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/**
 * What a client is told. "Revoked" is said outright: it is only ever shown to someone who presented a
 * valid token of a trusted issuer (the check runs after verification), so it tells an attacker nothing
 * about forging one, and a thief learns only that the theft was noticed. An honest agent's author, told
 * the generic "token was not accepted", would chase clocks, audiences and keys instead of calling the
 * operators. Who revoked it, when and why stay in the audit trail and the operators' list.
 */
export const CLIENT_MESSAGE_REVOKED = 'access for this identity has been revoked; contact the Warden operators';
/** The list cannot be read: a condition of Warden, not of the client, and temporary (SQLSTATE 57P03). */
export const CLIENT_MESSAGE_REVOCATION_UNAVAILABLE = 'Warden cannot check this identity right now; try again later';
/** Sent (FATAL, 57P01) to a live session whose identity has just been revoked. */
export const SESSION_MESSAGE_REVOKED = 'terminating connection: access for this identity has been revoked';
