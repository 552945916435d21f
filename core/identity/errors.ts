// Identity errors. `message` is for operators (logs, audit) and may be detailed;
// only clientMessageFor() output may be sent to the connecting client.

export const VerificationReason = {
  malformed: 'malformed',
  unsigned: 'unsigned',
  algorithm_not_allowed: 'algorithm_not_allowed',
  unknown_issuer: 'unknown_issuer',
  bad_signature: 'bad_signature',
  unknown_key: 'unknown_key',
  expired: 'expired',
  not_yet_valid: 'not_yet_valid',
  bad_audience: 'bad_audience',
  missing_claim: 'missing_claim',
  jwks_unavailable: 'jwks_unavailable',
  claims_invalid: 'claims_invalid',
} as const;

export type VerificationReason = (typeof VerificationReason)[keyof typeof VerificationReason];

export class IdentityVerificationError extends Error {
  readonly reason: VerificationReason;

  constructor(reason: VerificationReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityVerificationError';
    this.reason = reason;
  }
}

export type ClaimProblem = 'missing' | 'invalid';

/** A verified token whose claims cannot be mapped to a principal. */
export class IdentityClaimsError extends Error {
  readonly claim: string;
  readonly problem: ClaimProblem;

  constructor(claim: string, problem: ClaimProblem, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityClaimsError';
    this.claim = claim;
    this.problem = problem;
  }
}

/** Invalid verifier / issuer configuration (raised at construction, never per token). */
export class IdentityConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityConfigError';
  }
}

export const CLIENT_MESSAGE_GENERIC = 'authentication failed: the token was not accepted';
export const CLIENT_MESSAGE_EXPIRED = 'authentication failed: the token has expired; obtain a new one';
export const CLIENT_MESSAGE_MALFORMED = 'authentication failed: the password must be an OIDC access token (JWT)';

/**
 * Text safe to send to the client. Only "expired" and "malformed" get specific
 * text: they help an honest user and tell an attacker nothing they don't know.
 */
export function clientMessageFor(err: unknown): string {
  if (err instanceof IdentityVerificationError) {
    if (err.reason === VerificationReason.expired) return CLIENT_MESSAGE_EXPIRED;
    if (err.reason === VerificationReason.malformed) return CLIENT_MESSAGE_MALFORMED;
  }
  return CLIENT_MESSAGE_GENERIC;
}
