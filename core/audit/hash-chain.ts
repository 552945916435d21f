/**
 * Hash chain over audit events.
 *
 * Canonical JSON (what gets hashed):
 *  - same value model as JSON.stringify (toJSON() is honoured, `undefined`, functions and
 *    symbols are dropped from objects and become `null` in arrays), so an event hashes the
 *    same before it is written and after it is read back with JSON.parse;
 *  - object keys sorted by UTF-16 code units (Array.prototype.sort), recursively;
 *  - no whitespace; strings and numbers encoded exactly as JSON.stringify does;
 *  - non-finite numbers and bigints are rejected (JSON would silently turn them into null).
 * hash = lowercase hex sha256 of the UTF-8 canonical JSON of the event minus its `hash` key.
 *
 * File lines are `JSON.stringify(event)` (field order chosen for reading, not hashing).
 * verifyChainLines additionally requires every line to be in that normal form, so a
 * re-encoding that parses to the same value (e.g. `\u001f` -> `\u001F`) is also reported.
 */
import { createHash, hash as oneShotHash, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  AUDIT_EVENT_VERSION,
  GENESIS_HASH,
  isAuditEventType,
  isSessionId,
} from './events.ts';
import type { AnyAuditEventBody, AuditEvent, SessionId, UnhashedAuditEvent } from './events.ts';

export class AuditCanonicalJsonError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditCanonicalJsonError';
  }
}

export class AuditChainError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditChainError';
  }
}

/** Canonical JSON of any JSON-compatible value (see module doc). */
export function canonicalJson(value: unknown): string {
  const out = (value !== null && typeof value === 'object' ? nativeCanonical(value, undefined) : undefined) ?? encode(value, '', undefined);
  if (out === undefined) throw new AuditCanonicalJsonError(`value of type ${typeof value} has no JSON form`);
  return out;
}

/**
 * The same canonical JSON as `encode`, produced by the engine's JSON.stringify over a copy whose keys
 * are inserted in sorted order at every depth (JSON.stringify keeps insertion order for non-index
 * keys). About twice as fast as encoding in JavaScript. Returns undefined (the caller falls back to
 * `encode`, which also produces the precise errors) for anything this cannot reproduce exactly:
 * non-plain objects (toJSON, boxed primitives), non-finite numbers, bigints, and array-index-like keys
 * (which JavaScript orders numerically, not as strings).
 */
function nativeCanonical(value: object, skipTopKey: string | undefined): string | undefined {
  const copy = sortedCopy(value, skipTopKey);
  return copy === UNSUPPORTED ? undefined : JSON.stringify(copy);
}

const UNSUPPORTED = Symbol('unsupported');
const INDEX_LIKE = /^(?:0|[1-9]\d*)$/;

function sortedCopy(v: unknown, skip: string | undefined): unknown {
  switch (typeof v) {
    case 'number':
      return Number.isFinite(v) ? v : UNSUPPORTED;
    case 'bigint':
      return UNSUPPORTED;
    case 'object':
      break;
    default:
      return v;
  }
  if (v === null) return v;
  if (Array.isArray(v)) {
    const out = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) {
      const x = sortedCopy(v[i], undefined);
      if (x === UNSUPPORTED) return UNSUPPORTED;
      out[i] = x;
    }
    return out;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return UNSUPPORTED;
  const keys = Object.keys(v as object).sort();
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    if (k === skip) continue;
    if (INDEX_LIKE.test(k)) return UNSUPPORTED;
    const x = sortedCopy((v as Record<string, unknown>)[k], undefined);
    if (x === UNSUPPORTED) return UNSUPPORTED;
    out[k] = x;
  }
  return out;
}

// Exactly the characters JSON.stringify escapes (surrogates conservatively); others are copied.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

function encode(value: unknown, key: string, skipKey: string | undefined): string | undefined {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    value = (value as { toJSON: (k: string) => unknown }).toJSON(key);
  }
  switch (typeof value) {
    case 'string':
      return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : '"' + value + '"';
    case 'number':
      if (!Number.isFinite(value)) throw new AuditCanonicalJsonError(`non-finite number ${value} at ${JSON.stringify(key)}`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      throw new AuditCanonicalJsonError(`bigint at ${JSON.stringify(key)} has no JSON form`);
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return 'null';
  return encodeContainer(value as object, key, skipKey);
}

function encodeContainer(value: object, key: string, skipKey?: string): string | undefined {
  if (Array.isArray(value)) {
    let s = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) s += ',';
      s += encode(value[i], String(i), undefined) ?? 'null';
    }
    return s + ']';
  }
  // JSON.stringify unwraps boxed primitives.
  if (value instanceof String || value instanceof Number || value instanceof Boolean) return encode(value.valueOf(), key, undefined);
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let s = '{';
  let first = true;
  for (const k of keys) {
    if (k === skipKey) continue;
    const v = encode(obj[k], k, undefined);
    if (v === undefined) continue;
    if (!first) s += ',';
    first = false;
    s += encodeKey(k) + v;
  }
  return s + '}';
}

// Field names repeat in every event: cache their encoding (bounded, classifier keys are open-ended).
const keyCache = new Map<string, string>();
function encodeKey(k: string): string {
  let e = keyCache.get(k);
  if (e === undefined) {
    e = JSON.stringify(k) + ':';
    if (keyCache.size < 4096) keyCache.set(k, e);
  }
  return e;
}

// crypto.hash (one-shot, cheaper for small inputs) exists from Node 20.12.
const sha256Hex: (data: string) => string =
  typeof oneShotHash === 'function'
    ? (data) => oneShotHash('sha256', data, 'hex')
    : (data) => createHash('sha256').update(data, 'utf8').digest('hex');

/** sha256 (hex) of the canonical JSON of `event` without its `hash` key (if present). */
export function hashEvent(event: UnhashedAuditEvent | AuditEvent | Record<string, unknown>): string {
  const canonical = nativeCanonical(event, 'hash') ?? encode(event, '', 'hash');
  if (canonical === undefined || canonical[0] !== '{') throw new AuditCanonicalJsonError('event must be an object');
  return sha256Hex(canonical);
}

/** The part of the previous event the next one needs. An AuditEvent satisfies it. */
export interface ChainLink {
  sessionId: SessionId;
  seq: number;
  hash: string;
}

export interface ChainContext {
  sessionId: SessionId;
  /** Defaults to now. */
  time?: Date;
}

/**
 * Chains `body` after `prev` (null for the first event of a session) and returns the full,
 * hashed event. Field order of the result is the on-disk reading order.
 */
export function chainEvent(prev: ChainLink | null, body: AnyAuditEventBody, ctx: ChainContext): AuditEvent {
  const { sessionId } = ctx;
  if (prev && prev.sessionId !== sessionId) {
    throw new AuditChainError(`cannot chain an event of session ${sessionId} after one of session ${prev.sessionId}`);
  }
  const seq = prev ? prev.seq + 1 : 0;
  const prevHash = prev ? prev.hash : GENESIS_HASH;
  const time = (ctx.time ?? new Date()).toISOString();
  const { type, ...fields } = body;
  const ev = { v: AUDIT_EVENT_VERSION, type, sessionId, seq, time, ...fields, prevHash } as Record<string, unknown>;
  // Reassign so a body smuggling chain keys (untyped callers) cannot override them; keeps key order.
  ev.v = AUDIT_EVENT_VERSION;
  ev.type = type;
  ev.sessionId = sessionId;
  ev.seq = seq;
  ev.time = time;
  ev.prevHash = prevHash;
  delete ev.hash;
  ev.hash = hashEvent(ev);
  return ev as unknown as AuditEvent;
}

/**
 * Chains `body` like chainEvent and returns the file line directly: the canonical JSON that is hashed,
 * with `"hash"` appended as its last key. The event is serialized once, not once to hash and again to
 * write; the line is still in normal form (`JSON.stringify(JSON.parse(line)) === line`), so
 * parseEventLine and the verifier read it like any other.
 */
export function chainEventLine(prev: ChainLink | null, body: AnyAuditEventBody, ctx: ChainContext): { link: ChainLink; line: string } {
  const { sessionId } = ctx;
  if (prev && prev.sessionId !== sessionId) {
    throw new AuditChainError(`cannot chain an event of session ${sessionId} after one of session ${prev.sessionId}`);
  }
  const seq = prev ? prev.seq + 1 : 0;
  const ev = { ...body, v: AUDIT_EVENT_VERSION, sessionId, seq, time: (ctx.time ?? new Date()).toISOString(), prevHash: prev ? prev.hash : GENESIS_HASH } as Record<string, unknown>;
  // `delete` would turn the object into a slow dictionary; skipping the key while encoding is enough.
  const canonical = nativeCanonical(ev, 'hash') ?? encode(ev, '', 'hash');
  if (canonical === undefined || canonical.length < 3) throw new AuditCanonicalJsonError('event must be a non-empty object');
  const hash = sha256Hex(canonical);
  return { link: { sessionId, seq, hash }, line: `${canonical.slice(0, -1)},"hash":"${hash}"}` };
}

/** The bytes an Ed25519 seal signs. */
export function sealPayload(sessionId: SessionId | string, eventCount: number, lastHash: string): Buffer {
  return Buffer.from(`${sessionId}:${eventCount}:${lastHash}`, 'utf8');
}

/** Builds the seal body for a session whose last event is `last`. */
export function makeSealBody(
  last: ChainLink,
  privateKey: KeyObject,
  keyId: string,
): { type: 'seal'; eventCount: number; lastHash: string; signature: string; keyId: string } {
  const eventCount = last.seq + 1;
  const signature = cryptoSign(null, sealPayload(last.sessionId, eventCount, last.hash), privateKey).toString('base64');
  return { type: 'seal', eventCount, lastHash: last.hash, signature, keyId };
}

export type VerifyResult =
  | { ok: true; count: number; sealed: boolean; keyId?: string }
  | { ok: false; brokenAt: number; reason: string };

export interface VerifyOptions {
  /**
   * Report a missing seal as broken (brokenAt = number of events). Defaults to true when a
   * public key is given; pass false to chain-check a session that is still open or crashed.
   */
  requireSeal?: boolean;
  /** Id of the verifying key; only used to explain a signature failure. */
  keyId?: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Verifies a session's events in file order and reports the FIRST broken link.
 * `brokenAt` is the position (= expected seq) where the chain first fails:
 *  - hash mismatch: that event was edited;
 *  - prevHash mismatch: an event before it was removed, inserted or reordered;
 *  - seq mismatch: seq was rewritten (with a recomputed hash);
 *  - invalid seal signature (when a key is given), events after the seal,
 *    missing seal (brokenAt = events.length, when required).
 */
export function verifyChain(events: readonly unknown[], publicKey?: KeyObject, opts: VerifyOptions = {}): VerifyResult {
  const requireSeal = opts.requireSeal ?? publicKey !== undefined;
  if (events.length === 0) return { ok: false, brokenAt: 0, reason: 'no events' };
  let sessionId: string | undefined;
  let prevHash = GENESIS_HASH;
  let sealKeyId: string | undefined;
  for (let i = 0; i < events.length; i++) {
    const bad = (reason: string): VerifyResult => ({ ok: false, brokenAt: i, reason });
    const ev = events[i] as Record<string, unknown> | null;
    if (sealKeyId !== undefined) return bad('event after the seal');
    if (ev === null || typeof ev !== 'object' || Array.isArray(ev)) return bad('not a JSON object');
    if (ev.v !== AUDIT_EVENT_VERSION) return bad(`unsupported version ${JSON.stringify(ev.v)}`);
    if (!isAuditEventType(ev.type)) return bad(`unknown event type ${JSON.stringify(ev.type)}`);
    if (!isSessionId(ev.sessionId)) return bad('missing or invalid sessionId');
    if (typeof ev.hash !== 'string' || !HEX64.test(ev.hash)) return bad('missing or malformed hash');
    if (typeof ev.prevHash !== 'string' || !HEX64.test(ev.prevHash)) return bad('missing or malformed prevHash');
    let computed: string;
    try {
      computed = hashEvent(ev);
    } catch (err) {
      return bad(`cannot hash event: ${(err as Error).message}`);
    }
    if (computed !== ev.hash) return bad('hash mismatch: event content was modified');
    if (ev.prevHash !== prevHash) {
      return bad(i === 0 ? 'first event does not start the chain (prevHash is not zero)' : 'prevHash mismatch: an event was removed, inserted or reordered');
    }
    if (ev.seq !== i) return bad(`seq mismatch: expected ${i}, found ${JSON.stringify(ev.seq)}`);
    if (sessionId === undefined) sessionId = ev.sessionId;
    else if (ev.sessionId !== sessionId) return bad(`sessionId ${ev.sessionId} differs from ${sessionId}`);
    if (typeof ev.time !== 'string') return bad('missing time');
    if (i === 0 && ev.type !== 'session.start') return bad(`first event is ${ev.type}, expected session.start`);
    if (i > 0 && ev.type === 'session.start') return bad('session.start after the first event');
    if (ev.type === 'seal') {
      if (ev.eventCount !== i) return bad(`seal eventCount ${JSON.stringify(ev.eventCount)} does not match ${i} preceding events`);
      if (ev.lastHash !== prevHash) return bad('seal lastHash does not match the previous event');
      if (typeof ev.signature !== 'string' || typeof ev.keyId !== 'string') return bad('seal without signature or keyId');
      if (publicKey) {
        let valid = false;
        try {
          valid = cryptoVerify(null, sealPayload(sessionId, i, prevHash), publicKey, Buffer.from(ev.signature, 'base64'));
        } catch {
          valid = false;
        }
        if (!valid) {
          const hint = opts.keyId && opts.keyId !== ev.keyId ? ` (sealed with key ${ev.keyId}, verifying with ${opts.keyId})` : '';
          return bad(`invalid seal signature${hint}`);
        }
      }
      sealKeyId = ev.keyId;
    }
    prevHash = ev.hash;
  }
  if (sealKeyId === undefined) {
    if (requireSeal) return { ok: false, brokenAt: events.length, reason: 'missing seal (truncated or unfinished session)' };
    return { ok: true, count: events.length, sealed: false };
  }
  return { ok: true, count: events.length, sealed: true, keyId: sealKeyId };
}

/** Parses one file line; throws unless it is a JSON object in JSON.stringify normal form. */
export function parseEventLine(line: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch (err) {
    throw new AuditChainError(`unparseable line: ${(err as Error).message}`, { cause: err });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new AuditChainError('line is not a JSON object');
  if (JSON.stringify(parsed) !== line) throw new AuditChainError('line is not in normal form (re-encoded or has duplicate keys)');
  return parsed as Record<string, unknown>;
}

/** verifyChain over raw file lines (without their trailing newline); a bad line breaks the chain there. */
export function verifyChainLines(lines: readonly string[], publicKey?: KeyObject, opts: VerifyOptions = {}): VerifyResult {
  const events: Record<string, unknown>[] = [];
  for (let i = 0; i < lines.length; i++) {
    try {
      events.push(parseEventLine(lines[i]!));
    } catch (err) {
      // Events before the bad line may themselves be broken: report whichever comes first.
      const before = verifyChain(events, publicKey, { ...opts, requireSeal: false });
      if (!before.ok) return before;
      return { ok: false, brokenAt: i, reason: (err as Error).message };
    }
  }
  return verifyChain(events, publicKey, opts);
}

/** Deep-freezes a value shared by many events (a classification, a decision), so none can alter it. */
export function registerImmutable<T extends object>(value: T): T {
  deepFreeze(value);
  return value;
}

function deepFreeze(v: unknown): void {
  if (v === null || typeof v !== 'object') return;
  Object.freeze(v);
  for (const x of Object.values(v)) deepFreeze(x);
}
