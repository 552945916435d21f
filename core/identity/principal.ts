import { IdentityClaimsError } from './errors.ts';

/** The verified identity of a connecting agent. */
export interface Principal {
  issuer: string;
  subject: string;
  groups: string[];
  /** The value the PostgreSQL startup `user` must equal. */
  username: string;
  /** All verified claims (deep-frozen copy), for policy and audit. */
  claims: Readonly<Record<string, unknown>>;
}

/**
 * Which claims carry the identity. Names are looked up as an exact top-level
 * claim first (so namespaced claims like "https://x.example/groups" work), then
 * as a dotted path into nested objects (e.g. "realm_access.roles").
 */
export interface ClaimMapping {
  /** Default 'sub'. */
  subject: string;
  /** Default 'groups'. String array or space/comma separated string; anything else gives []. */
  groups: string;
  /** Claim the PostgreSQL startup `user` must equal. Default 'sub'. */
  username: string;
}

export const DEFAULT_CLAIM_MAPPING: Readonly<ClaimMapping> = Object.freeze({
  subject: 'sub',
  groups: 'groups',
  username: 'sub',
});

export function resolveClaimMapping(partial?: Partial<ClaimMapping>): ClaimMapping {
  const m: ClaimMapping = { ...DEFAULT_CLAIM_MAPPING };
  for (const key of ['subject', 'groups', 'username'] as const) {
    const v = partial?.[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v.trim() === '' || v !== v.trim()) {
      throw new TypeError(`claim mapping "${key}" must be a non-empty claim name without surrounding spaces`);
    }
    m[key] = v;
  }
  return m;
}

export const MAX_IDENTIFIER_LENGTH = 256;

// Control, format (incl. bidi overrides, zero-width), lone surrogates, line/paragraph
// separators: they let an identity spoof or break audit and log lines.
const UNSAFE_CHARS = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;

/** Exact top-level claim, else a dotted path through plain objects (own properties only). */
export function readClaim(payload: Readonly<Record<string, unknown>>, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name];
  if (!name.includes('.')) return undefined;
  let cur: unknown = payload;
  for (const seg of name.split('.')) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    if (!Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

function requireIdentifier(payload: Readonly<Record<string, unknown>>, claim: string, role: string): string {
  const v = readClaim(payload, claim);
  if (v === undefined || v === null) {
    throw new IdentityClaimsError(claim, 'missing', `${role} claim "${claim}" is missing`);
  }
  if (typeof v !== 'string' || v.length === 0) {
    throw new IdentityClaimsError(claim, 'invalid', `${role} claim "${claim}" must be a non-empty string`);
  }
  if (v.length > MAX_IDENTIFIER_LENGTH) {
    throw new IdentityClaimsError(claim, 'invalid', `${role} claim "${claim}" is longer than ${MAX_IDENTIFIER_LENGTH} characters`);
  }
  if (UNSAFE_CHARS.test(v)) {
    throw new IdentityClaimsError(claim, 'invalid', `${role} claim "${claim}" contains control or invisible characters`);
  }
  return v;
}

function extractGroups(value: unknown): string[] {
  let raw: string[];
  if (typeof value === 'string') {
    raw = value.split(/[\s,]+/);
  } else if (Array.isArray(value) && value.every((g) => typeof g === 'string')) {
    raw = value as string[];
  } else {
    return [];
  }
  // Drop entries that could not be a sane group name rather than failing the login.
  const out = new Set<string>();
  for (const g of raw) {
    if (g.length === 0 || g.length > MAX_IDENTIFIER_LENGTH || UNSAFE_CHARS.test(g)) continue;
    out.add(g);
  }
  return [...out];
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** Maps a verified JWT payload to a Principal; throws IdentityClaimsError if it cannot. */
export function mapClaimsToPrincipal(
  issuer: string,
  payload: Readonly<Record<string, unknown>>,
  mapping: ClaimMapping,
): Principal {
  const subject = requireIdentifier(payload, mapping.subject, 'subject');
  const username = mapping.username === mapping.subject ? subject : requireIdentifier(payload, mapping.username, 'username');
  const groups = extractGroups(readClaim(payload, mapping.groups));
  // Copy so later mutation of the caller's object cannot change a verified identity.
  const claims = deepFreeze(structuredClone(payload) as Record<string, unknown>);
  return { issuer, subject, groups, username, claims };
}
