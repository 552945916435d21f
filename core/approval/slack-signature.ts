/**
 * Slack's request signing (version `v0`): every interaction Slack sends carries
 * `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{raw body}">`
 * keyed with the app's signing secret. Checked over the raw body bytes, before anything in the body is
 * read: a click that cannot prove it came from Slack is never parsed, let alone counted.
 *
 * Bad input is an answer (`{ ok: false, reason }`), never an exception, so the caller can log the reason
 * and refuse with one short text that tells a forger nothing.
 *
 * @see https://api.slack.com/authentication/verifying-requests-from-slack
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const SlackSignatureFailure = {
  missingSecret: 'missing_secret',
  missingTimestamp: 'missing_timestamp',
  missingSignature: 'missing_signature',
  malformedTimestamp: 'malformed_timestamp',
  staleTimestamp: 'stale_timestamp',
  futureTimestamp: 'future_timestamp',
  unsupportedVersion: 'unsupported_version',
  mismatch: 'signature_mismatch',
} as const;
export type SlackSignatureFailure = (typeof SlackSignatureFailure)[keyof typeof SlackSignatureFailure];

export type SlackSignatureResult =
  | { readonly ok: true; readonly timestamp: number }
  | { readonly ok: false; readonly reason: SlackSignatureFailure };

export interface SlackRequestToVerify {
  /** The body exactly as received (bytes, or the same bytes decoded as UTF-8). */
  readonly rawBody: Uint8Array | string;
  /** `X-Slack-Request-Timestamp`: Unix seconds. */
  readonly timestamp: string | undefined;
  /** `X-Slack-Signature`. */
  readonly signature: string | undefined;
  readonly signingSecret: string;
  readonly now: Date;
  /** How old a request may be, in seconds (Slack's recommendation: 5 minutes). Bounds how long a captured request could be replayed. */
  readonly toleranceSeconds?: number;
  /**
   * How far ahead of this clock a timestamp may be, in seconds (default 60). Slack stamps the moment it
   * sends, so a timestamp from the future is clock skew at most; a wide future window would only stretch
   * the replay window beyond `toleranceSeconds`.
   */
  readonly clockSkewSeconds?: number;
}

const VERSION = 'v0';
/** Unix seconds as Slack sends them: digits only (no sign, exponent, fraction or whitespace). */
const TIMESTAMP = /^[0-9]{1,15}$/;

export function verifySlackRequest(input: SlackRequestToVerify): SlackSignatureResult {
  const fail = (reason: SlackSignatureFailure): SlackSignatureResult => ({ ok: false, reason });
  const { timestamp, signature, signingSecret } = input;
  // An empty secret would make every signature computable by anyone.
  if (typeof signingSecret !== 'string' || signingSecret.length === 0) return fail(SlackSignatureFailure.missingSecret);
  if (typeof timestamp !== 'string' || timestamp.length === 0) return fail(SlackSignatureFailure.missingTimestamp);
  if (typeof signature !== 'string' || signature.length === 0) return fail(SlackSignatureFailure.missingSignature);
  if (!TIMESTAMP.test(timestamp)) return fail(SlackSignatureFailure.malformedTimestamp);

  const sentAt = Number(timestamp);
  const nowSeconds = Math.floor(input.now.getTime() / 1000);
  if (nowSeconds - sentAt > (input.toleranceSeconds ?? 300)) return fail(SlackSignatureFailure.staleTimestamp);
  if (sentAt - nowSeconds > (input.clockSkewSeconds ?? 60)) return fail(SlackSignatureFailure.futureTimestamp);
  if (!signature.startsWith(`${VERSION}=`)) return fail(SlackSignatureFailure.unsupportedVersion);

  const expected = signSlackRequest({ rawBody: input.rawBody, timestamp, signingSecret });
  return constantTimeEqual(expected, signature) ? { ok: true, timestamp: sentAt } : fail(SlackSignatureFailure.mismatch);
}

/** The `X-Slack-Signature` value Slack would send for this body and timestamp. */
export function signSlackRequest(input: { readonly rawBody: Uint8Array | string; readonly timestamp: string | number; readonly signingSecret: string }): string {
  const hmac = createHmac('sha256', input.signingSecret);
  hmac.update(`${VERSION}:${input.timestamp}:`);
  hmac.update(typeof input.rawBody === 'string' ? Buffer.from(input.rawBody, 'utf8') : input.rawBody);
  return `${VERSION}=${hmac.digest('hex')}`;
}

/**
 * timingSafeEqual needs equal lengths; comparing SHA-256 digests of both sides keeps the comparison
 * constant-time also when the presented signature has another length (its length is then not leaked
 * by an early return either).
 */
function constantTimeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a, 'utf8').digest();
  const db = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(da, db) && a.length === b.length;
}
