/**
 * The RevocationList port: identities (issuer + subject) that may no longer connect, and whose live
 * sessions end when they are revoked. Locally a watched file; on AWS a DynamoDB table, polled.
 *
 * Answers come from an in-memory snapshot, so a login does not wait on a file or a network call; the
 * snapshot's age is bounded by the watch or the poll. A list that cannot be read (not loaded yet, or
 * failing for longer than its tolerance) answers `unavailable`, and the caller refuses: fail closed.
 */
export type RevocationStatus = 'ok' | 'revoked' | 'unavailable';

export interface RevokedIdentity {
  readonly issuer: string;
  readonly subject: string;
  /** ISO-8601. */
  readonly revokedAt: string;
  readonly reason?: string;
  /** Who revoked it (operator). */
  readonly revokedBy?: string;
}

export interface RevocationList {
  /** Resolves once the first snapshot is loaded (or rejects if it cannot be). */
  readonly ready: Promise<void>;
  check(issuer: string, subject: string): RevocationStatus;
  /** Called after every change of the snapshot; returns an unsubscribe function. */
  onChange(listener: () => void): () => void;
  close(): Promise<void>;
}
