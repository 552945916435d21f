import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import type { CryptoKey, FlattenedJWSInput, JWSHeaderParameters, JWTPayload, JWTVerifyOptions, RemoteJWKSet } from 'jose';
import {
  IdentityClaimsError,
  IdentityConfigError,
  IdentityVerificationError,
} from '../../core/identity/errors.ts';
import type { VerificationReason } from '../../core/identity/errors.ts';
import { mapClaimsToPrincipal, resolveClaimMapping } from '../../core/identity/principal.ts';
import type { ClaimMapping, Principal } from '../../core/identity/principal.ts';

export interface IdentityVerifier {
  verify(token: string): Promise<Principal>;
}

export interface IssuerOptions {
  /** Exact `iss` value; compared as a string, no normalisation. */
  issuer: string;
  /** Explicit JWKS URL. Without it, `jwks_uri` is discovered from `${issuer}/.well-known/openid-configuration`. */
  jwksUri?: string;
  /** Accepted `aud` values (token must carry at least one). Required: skipping the audience check lets tokens minted for other services in. */
  audiences: string[];
  /** Asymmetric algorithms only, e.g. ['RS256', 'ES256', 'EdDSA']. */
  algorithms: string[];
  claims?: Partial<ClaimMapping>;
  /**
   * Allow plain-http discovery/JWKS URLs on non-loopback hosts. Off by default:
   * whoever can tamper with the JWKS response can mint any identity.
   */
  allowInsecureHttp?: boolean;
}

export interface JwtVerifierOptions {
  issuers: IssuerOptions[];
  /** Default 30. */
  clockToleranceSeconds?: number;
  /** Optional upper bound on token age, measured from `iat` (then required). */
  maxTokenAgeSeconds?: number;
  /** Minimum time between JWKS refetches triggered by an unknown `kid`. Default 30. */
  jwksCooldownSeconds?: number;
  /** Default 600. */
  jwksCacheMaxAgeSeconds?: number;
  /** Discovery and JWKS fetch timeout. Default 5000. */
  fetchTimeoutMs?: number;
  /** Clock in milliseconds since the epoch, for token time checks (tests). */
  now?: () => number;
}

/** Longer input is rejected before any parsing. */
export const MAX_TOKEN_LENGTH = 16 * 1024;

/** Asymmetric JWS algorithms we accept in an allowlist. HS* and 'none' are refused. */
export const SUPPORTED_ALGORITHMS: readonly string[] = Object.freeze([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
]);

// Compact JWS shape. The signature may be empty here so that `alg: none` tokens are
// reported as "unsigned" rather than "malformed".
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Max wait after a failed discovery/JWKS fetch before trying again (caps refetch storms). */
const MAX_FAILURE_BACKOFF_MS = 5000;

interface IssuerState {
  readonly issuer: string;
  readonly audiences: string[];
  readonly algorithms: string[];
  readonly mapping: ClaimMapping;
  readonly allowInsecureHttp: boolean;
  jwks?: RemoteJWKSet;
  pending?: Promise<RemoteJWKSet>;
  discoveryFailure?: { at: number; error: unknown };
  jwksFailureAt?: number;
}

/** Thrown by our key resolver wrapper so fetch problems are told apart from verification failures. */
class KeySetFetchFailure extends Error {
  constructor(cause: unknown) {
    super(`JWKS fetch failed: ${errText(cause)}`, { cause });
    this.name = 'KeySetFetchFailure';
  }
}

/**
 * Verifies OIDC JWT access tokens against an allowlist of issuers.
 *
 * Input handling: one trailing "\n" or "\r\n" is stripped (tokens are often pasted
 * from files); any other whitespace anywhere makes the token malformed, since
 * silently trimming would accept input no issuer produced.
 */
export class JwtVerifier implements IdentityVerifier {
  private readonly issuers = new Map<string, IssuerState>();
  private readonly clockTolerance: number;
  private readonly maxTokenAge: number | undefined;
  private readonly cooldownMs: number;
  private readonly cacheMaxAgeMs: number;
  private readonly fetchTimeoutMs: number;
  private readonly now: () => number;

  constructor(options: JwtVerifierOptions) {
    this.clockTolerance = nonNegative(options.clockToleranceSeconds, 30, 'clockToleranceSeconds');
    this.maxTokenAge = options.maxTokenAgeSeconds === undefined
      ? undefined
      : nonNegative(options.maxTokenAgeSeconds, 0, 'maxTokenAgeSeconds');
    this.cooldownMs = nonNegative(options.jwksCooldownSeconds, 30, 'jwksCooldownSeconds') * 1000;
    this.cacheMaxAgeMs = nonNegative(options.jwksCacheMaxAgeSeconds, 600, 'jwksCacheMaxAgeSeconds') * 1000;
    this.fetchTimeoutMs = nonNegative(options.fetchTimeoutMs, 5000, 'fetchTimeoutMs');
    if (!Number.isInteger(this.fetchTimeoutMs)) throw new IdentityConfigError('fetchTimeoutMs must be an integer');
    this.now = options.now ?? Date.now;

    if (!Array.isArray(options.issuers) || options.issuers.length === 0) {
      throw new IdentityConfigError('at least one trusted issuer must be configured');
    }
    for (const io of options.issuers) {
      const state = this.buildIssuer(io);
      if (this.issuers.has(state.issuer)) throw new IdentityConfigError(`issuer ${q(state.issuer)} is configured twice`);
      this.issuers.set(state.issuer, state);
    }
  }

  private buildIssuer(io: IssuerOptions): IssuerState {
    if (typeof io.issuer !== 'string' || io.issuer.length === 0) {
      throw new IdentityConfigError('issuer must be a non-empty string');
    }
    const where = `issuer ${q(io.issuer)}`;
    if (!Array.isArray(io.audiences) || io.audiences.length === 0 || io.audiences.some((a) => typeof a !== 'string' || a === '')) {
      throw new IdentityConfigError(`${where}: audiences must be a non-empty list of non-empty strings`);
    }
    if (!Array.isArray(io.algorithms) || io.algorithms.length === 0) {
      throw new IdentityConfigError(`${where}: algorithms must be a non-empty allowlist, e.g. ['RS256', 'ES256']`);
    }
    for (const alg of io.algorithms) {
      if (typeof alg !== 'string') throw new IdentityConfigError(`${where}: algorithms must be strings`);
      if (alg.toLowerCase() === 'none') {
        throw new IdentityConfigError(`${where}: algorithm 'none' is never allowed (unsigned tokens)`);
      }
      if (/^HS\d+$/i.test(alg)) {
        throw new IdentityConfigError(
          `${where}: symmetric algorithm ${q(alg)} is not allowed; use an asymmetric one (RS256, ES256, EdDSA, ...)`,
        );
      }
      if (!SUPPORTED_ALGORITHMS.includes(alg)) {
        throw new IdentityConfigError(`${where}: unsupported algorithm ${q(alg)}; supported: ${SUPPORTED_ALGORITHMS.join(', ')}`);
      }
    }
    let mapping: ClaimMapping;
    try {
      mapping = resolveClaimMapping(io.claims);
    } catch (e) {
      throw new IdentityConfigError(`${where}: ${errText(e)}`, { cause: e });
    }
    const state: IssuerState = {
      issuer: io.issuer,
      audiences: [...io.audiences],
      algorithms: [...io.algorithms],
      mapping,
      allowInsecureHttp: io.allowInsecureHttp === true,
    };
    if (io.jwksUri !== undefined) {
      const url = checkFetchUrl(io.jwksUri, state.allowInsecureHttp, `${where}: jwksUri`, IdentityConfigError);
      state.jwks = this.remoteSet(url);
    } else {
      checkFetchUrl(discoveryUrl(io.issuer), state.allowInsecureHttp, `${where}: discovery URL`, IdentityConfigError);
    }
    return state;
  }

  async verify(token: string): Promise<Principal> {
    const { header, payload, compact } = this.preParse(token);
    const alg = header.alg as string;

    const iss = payload.iss;
    const claimed = describe(header, payload);
    if (iss === undefined) throw fail('missing_claim', `token has no "iss" claim (${claimed})`);
    const state = typeof iss === 'string' ? this.issuers.get(iss) : undefined;
    if (!state) throw fail('unknown_issuer', `token issuer is not in the allowlist (${claimed})`);
    if (!state.algorithms.includes(alg)) {
      throw fail('algorithm_not_allowed', `algorithm ${q(alg)} is not allowed for this issuer; allowed: ${state.algorithms.join(', ')} (${claimed})`);
    }

    const keySet = await this.keySet(state, claimed);
    const options: JWTVerifyOptions = {
      issuer: state.issuer,
      audience: state.audiences,
      algorithms: state.algorithms,
      clockTolerance: this.clockTolerance,
      currentDate: new Date(this.now()),
      requiredClaims: requiredClaims(state.mapping),
      ...(this.maxTokenAge !== undefined ? { maxTokenAge: this.maxTokenAge } : {}),
    };

    let verified: JWTPayload;
    try {
      verified = await this.verifyWithKeySet(compact, state, keySet, options);
    } catch (e) {
      throw mapJoseError(e, state, claimed);
    }

    const nowSec = Math.floor(this.now() / 1000);
    if (typeof verified.iat === 'number' && verified.iat > nowSec + this.clockTolerance) {
      throw fail('not_yet_valid', `"iat" is ${verified.iat - nowSec}s in the future, beyond the ${this.clockTolerance}s tolerance (${claimed})`);
    }

    try {
      return mapClaimsToPrincipal(state.issuer, verified, state.mapping);
    } catch (e) {
      if (e instanceof IdentityClaimsError) {
        throw fail(e.problem === 'missing' ? 'missing_claim' : 'claims_invalid', `${e.message} (${claimed})`, e);
      }
      throw e;
    }
  }

  /** Cheap structural checks plus unverified decoding, used only to pick the issuer config. */
  private preParse(token: unknown): { header: JWSHeaderParameters; payload: JWTPayload; compact: string } {
    if (typeof token !== 'string') throw fail('malformed', 'token is not a string');
    if (token.length > MAX_TOKEN_LENGTH) {
      throw fail('malformed', `token is ${token.length} characters long, over the ${MAX_TOKEN_LENGTH} limit`);
    }
    const compact = token.replace(/\r?\n$/, '');
    if (compact.length === 0) throw fail('malformed', 'token is empty');
    if (!COMPACT_JWS.test(compact)) {
      if (/\s/.test(compact)) throw fail('malformed', 'token contains whitespace');
      const parts = compact.split('.').length;
      if (parts === 5) throw fail('malformed', 'token looks like an encrypted JWT (JWE), which is not supported');
      throw fail('malformed', `token is not a compact JWS (${parts} dot-separated part(s), or characters outside base64url)`);
    }
    let header: JWSHeaderParameters;
    let payload: JWTPayload;
    try {
      header = decodeProtectedHeader(compact) as JWSHeaderParameters;
    } catch (e) {
      throw fail('malformed', `token header is not valid base64url JSON: ${errText(e)}`, e);
    }
    if (typeof header.alg !== 'string' || header.alg === '') throw fail('malformed', 'token header has no "alg"');
    if (header.alg.toLowerCase() === 'none' || compact.endsWith('.')) {
      throw fail('unsigned', `token is unsigned (alg ${q(header.alg)}) (${describe(header, {})})`);
    }
    // We implement no JWS extensions, so any "crit" header must be refused (RFC 7515 §4.1.11).
    if (header.crit !== undefined) {
      throw fail('malformed', `token has a "crit" header, no extensions are supported (${describe(header, {})})`);
    }
    try {
      payload = decodeJwt(compact);
    } catch (e) {
      throw fail('malformed', `token payload is not a JSON object: ${errText(e)} (${describe(header, {})})`, e);
    }
    return { header, payload, compact };
  }

  private async verifyWithKeySet(
    compact: string,
    state: IssuerState,
    keySet: RemoteJWKSet,
    options: JWTVerifyOptions,
  ): Promise<JWTPayload> {
    const resolver = async (h?: JWSHeaderParameters, t?: FlattenedJWSInput): Promise<CryptoKey> => {
      const backoff = Math.min(this.cooldownMs, MAX_FAILURE_BACKOFF_MS);
      if (state.jwksFailureAt !== undefined && !keySet.fresh && Date.now() - state.jwksFailureAt < backoff) {
        throw new KeySetFetchFailure(new Error('previous JWKS fetch failed; waiting before retrying'));
      }
      try {
        const key = await keySet(h, t);
        state.jwksFailureAt = undefined;
        return key;
      } catch (e) {
        if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys || e instanceof errors.JOSENotSupported) {
          throw e;
        }
        state.jwksFailureAt = Date.now();
        throw new KeySetFetchFailure(e);
      }
    };
    try {
      return (await jwtVerify(compact, resolver, options)).payload;
    } catch (e) {
      // Token without a usable kid and several candidate keys: try each (what jose documents).
      if (!(e instanceof errors.JWKSMultipleMatchingKeys)) throw e;
      for await (const key of e) {
        try {
          return (await jwtVerify(compact, key, options)).payload;
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed('no candidate key verified the signature');
    }
  }

  private remoteSet(url: URL): RemoteJWKSet {
    return createRemoteJWKSet(url, {
      cooldownDuration: this.cooldownMs,
      cacheMaxAge: this.cacheMaxAgeMs,
      timeoutDuration: this.fetchTimeoutMs,
    });
  }

  private async keySet(state: IssuerState, claimed: string): Promise<RemoteJWKSet> {
    if (state.jwks) return state.jwks;
    if (!state.pending) {
      const failed = state.discoveryFailure;
      if (failed && Date.now() - failed.at < Math.min(this.cooldownMs, MAX_FAILURE_BACKOFF_MS)) {
        throw fail('jwks_unavailable', `OIDC discovery for ${q(state.issuer)} failed recently: ${errText(failed.error)} (${claimed})`, failed.error);
      }
      state.pending = this.discover(state)
        .then((url) => {
          state.discoveryFailure = undefined;
          state.jwks = this.remoteSet(url);
          return state.jwks;
        }, (error: unknown) => {
          state.discoveryFailure = { at: Date.now(), error };
          throw error;
        })
        .finally(() => {
          state.pending = undefined;
        });
    }
    try {
      return await state.pending;
    } catch (e) {
      throw fail('jwks_unavailable', `OIDC discovery for ${q(state.issuer)} failed: ${errText(e)} (${claimed})`, e);
    }
  }

  private async discover(state: IssuerState): Promise<URL> {
    const url = discoveryUrl(state.issuer);
    const res = await fetch(url, {
      redirect: 'manual',
      signal: AbortSignal.timeout(this.fetchTimeoutMs),
      headers: { accept: 'application/json' },
    });
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new Error(`GET ${url} returned HTTP ${res.status}`);
    }
    const doc: unknown = await res.json();
    if (doc === null || typeof doc !== 'object') throw new Error(`GET ${url} did not return a JSON object`);
    const { issuer, jwks_uri: jwksUri } = doc as Record<string, unknown>;
    // OIDC Discovery §4.3: the document must name exactly the issuer we asked about.
    if (issuer !== state.issuer) throw new Error(`discovery document names issuer ${q(issuer)}, expected ${q(state.issuer)}`);
    if (typeof jwksUri !== 'string') throw new Error('discovery document has no jwks_uri');
    return checkFetchUrl(jwksUri, state.allowInsecureHttp, 'discovered jwks_uri', Error);
  }
}

function requiredClaims(mapping: ClaimMapping): string[] {
  // Dotted (nested) subject claims are checked by the mapper instead.
  return mapping.subject.includes('.') ? ['exp', 'iss'] : ['exp', 'iss', mapping.subject];
}

function mapJoseError(e: unknown, state: IssuerState, claimed: string): IdentityVerificationError {
  const at = `(${claimed})`;
  if (e instanceof KeySetFetchFailure) return fail('jwks_unavailable', `${e.message} for ${q(state.issuer)} ${at}`, e.cause);
  if (e instanceof errors.JWTExpired) return fail('expired', `token expired: ${e.message} ${at}`, e);
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return fail('missing_claim', `token lacks required claim ${q(e.claim)} ${at}`, e);
    if (e.reason === 'check_failed') {
      if (e.claim === 'nbf' || e.claim === 'iat') return fail('not_yet_valid', `token not yet valid: ${e.message} ${at}`, e);
      if (e.claim === 'aud') {
        return fail('bad_audience', `token audience ${q(e.payload.aud)} is not one of ${state.audiences.join(', ')} ${at}`, e);
      }
      if (e.claim === 'iss') return fail('unknown_issuer', `token issuer mismatch ${at}`, e);
    }
    return fail('claims_invalid', `token claim ${q(e.claim)} is invalid: ${e.message} ${at}`, e);
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) return fail('bad_signature', `signature verification failed ${at}`, e);
  if (e instanceof errors.JOSEAlgNotAllowed) return fail('algorithm_not_allowed', `algorithm not allowed ${at}`, e);
  if (e instanceof errors.JWKSNoMatchingKey) {
    return fail('unknown_key', `no key in the issuer's JWKS matches the token's kid/alg (refetch is rate-limited by the cooldown) ${at}`, e);
  }
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) return fail('jwks_unavailable', `JWKS problem: ${e.message} ${at}`, e);
  if (e instanceof errors.JOSENotSupported || e instanceof errors.JWSInvalid || e instanceof errors.JWTInvalid) {
    return fail('malformed', `token rejected as malformed: ${errText(e)} ${at}`, e);
  }
  // Anything else (e.g. a weak RSA key in the JWKS): fail closed, generic to the client.
  return fail('bad_signature', `token could not be verified: ${errText(e)} ${at}`, e);
}

function fail(reason: VerificationReason, message: string, cause?: unknown): IdentityVerificationError {
  return new IdentityVerificationError(reason, message, cause === undefined ? undefined : { cause });
}

function discoveryUrl(issuer: string): string {
  return `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

function checkFetchUrl(raw: string, allowInsecureHttp: boolean, what: string, Err: new (message: string) => Error): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Err(`${what} ${q(raw)} is not a valid URL`);
  }
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && (allowInsecureHttp || isLoopback(url.hostname))) return url;
  throw new Err(`${what} ${q(raw)} must use https (plain http only on loopback or with allowInsecureHttp)`);
}

function nonNegative(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new IdentityConfigError(`${name} must be a non-negative number`);
  return v;
}

function errText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Quote an untrusted value for a log line: JSON escapes control characters; long values are cut. */
function q(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return JSON.stringify(s.length > 120 ? `${s.slice(0, 120)}…` : s).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

/** Unverified token facts for operator messages; never the token itself. */
function describe(header: JWSHeaderParameters, payload: JWTPayload): string {
  const parts = [`alg=${q(header.alg)}`];
  if (header.kid !== undefined) parts.push(`kid=${q(header.kid)}`);
  if (payload.iss !== undefined) parts.push(`iss=${q(payload.iss)}`);
  if (payload.sub !== undefined) parts.push(`sub=${q(payload.sub)}`);
  return `unverified ${parts.join(' ')}`;
}
