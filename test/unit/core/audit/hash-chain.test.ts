import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { asSessionId, GENESIS_HASH } from '../../../../core/audit/events.ts';
import type { AnyAuditEventBody, AuditEvent, SessionId } from '../../../../core/audit/events.ts';
import {
  AuditCanonicalJsonError,
  canonicalJson,
  chainEvent,
  hashEvent,
  makeSealBody,
  verifyChain,
  verifyChainLines,
} from '../../../../core/audit/hash-chain.ts';

const keys = generateKeyPairSync('ed25519');
const otherKeys = generateKeyPairSync('ed25519');
const SID = asSessionId('0b7f6c1e-4a8d-4c3e-9d47-2f1a0b9c8d7e');

interface ChainInput {
  text?: string;
  params?: (string | null)[];
  classification?: unknown;
}

function bodies(input: ChainInput = {}): AnyAuditEventBody[] {
  return [
    { type: 'session.start', protocol: 'postgres', source: { address: '127.0.0.1', port: 50123 }, listener: 'postgres:127.0.0.1:6432', tls: true, target: 'app', startupUser: 'alice' },
    { type: 'auth.success', principal: { issuer: 'https://id.example', subject: 'alice', groups: ['dev', 'ops'] }, method: 'oidc-jwt' },
    { type: 'upstream.connect', target: 'app', host: 'db.internal', port: 5432, database: 'app', tls: true, ok: true },
    {
      type: 'statement',
      statementId: 1,
      protocol: 'extended',
      text: input.text ?? 'SELECT * FROM users WHERE id = $1',
      params: input.params ?? ['42', null, '\\x00ff'],
      classification: input.classification ?? { operation: 'select', tables: ['users'], mayWrite: false },
      decision: { effect: 'allow', policies: ['read-only'], policyVersion: 'v7' },
      startedAt: '2025-01-01T00:00:00.000Z',
    },
    { type: 'statement.end', statementId: 1, endedAt: '2025-01-01T00:00:00.004Z', durationMs: 4.25, outcome: 'ok', command: 'SELECT 1', rows: 1 },
    { type: 'session.end', reason: 'client_terminate', statements: 1, bytesFromClient: 321, bytesToClient: 987, durationMs: 1500 },
  ];
}

function rechain(list: AnyAuditEventBody[], sessionId: SessionId = SID, signer: KeyObject = keys.privateKey, keyId = 'k1'): AuditEvent[] {
  const events: AuditEvent[] = [];
  let prev: AuditEvent | null = null;
  const t0 = Date.parse('2025-01-01T00:00:00.000Z');
  for (const body of list) {
    prev = chainEvent(prev, body, { sessionId, time: new Date(t0 + events.length) });
    events.push(prev);
  }
  events.push(chainEvent(prev, makeSealBody(prev!, signer, keyId), { sessionId, time: new Date(t0 + events.length) }));
  return events;
}

const buildChain = (input?: ChainInput): AuditEvent[] => rechain(bodies(input));

/** Strips the chain fields so the event can be chained again (an attacker without the key). */
function bodyOf(ev: AuditEvent): AnyAuditEventBody {
  const { v: _v, sessionId: _s, seq: _q, time: _t, prevHash: _p, hash: _h, ...body } = ev;
  return body as AnyAuditEventBody;
}

const clone = <T>(v: T): T => structuredClone(v);

/** Every leaf path of a JSON value. */
function leafPaths(value: unknown, path: (string | number)[] = []): (string | number)[][] {
  if (value !== null && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
    if (entries.length === 0) return [path];
    return entries.flatMap(([k, v]) => leafPaths(v, [...path, k]));
  }
  return [path];
}

function mutateAt(root: Record<string, unknown>, path: (string | number)[]): void {
  let parent: Record<string | number, unknown> = root;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const k = path[path.length - 1]!;
  const old = parent[k];
  if (typeof old === 'string') parent[k] = old + 'x';
  else if (typeof old === 'number') parent[k] = old + 1;
  else if (typeof old === 'boolean') parent[k] = !old;
  else if (old === null) parent[k] = 'x';
  else if (Array.isArray(old)) old.push('x');
  else parent[k] = { ...(old as object), injected: 1 };
}

describe('canonicalJson', () => {
  it('sorts keys recursively and has no whitespace', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 1, x: 'é\n' }], c: null } }), '{"a":{"c":null,"d":[1,{"x":"é\\n","y":1}]},"b":1}');
  });

  it('is independent of key insertion order', () => {
    const a = { type: 'statement', seq: 3, decision: { policies: ['p'], effect: 'allow' }, params: ['1', null] };
    const b = { params: ['1', null], decision: { effect: 'allow', policies: ['p'] }, seq: 3, type: 'statement' };
    assert.equal(canonicalJson(a), canonicalJson(b));
    assert.equal(hashEvent(a), hashEvent(b));
  });

  it('follows JSON.stringify semantics for undefined, toJSON and arrays', () => {
    assert.equal(canonicalJson({ a: undefined, b: [undefined, () => 1], c: new Date(0) }), '{"b":[null,null],"c":"1970-01-01T00:00:00.000Z"}');
    const v = { z: 1, y: { x: undefined, w: [1.5, -0, 'a', Object('boxed'), Object(2)] }, m: new Map([[1, 2]]), b: Buffer.from('hi') };
    assert.equal(canonicalJson(v), canonicalJson(JSON.parse(JSON.stringify(v))));
  });

  it('encodes strings exactly as JSON.stringify, lone surrogates included', () => {
    const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: codeUnit }), fc.string({ unit: 'binary' })), (s) => canonicalJson(s) === JSON.stringify(s)),
      { numRuns: 2000 },
    );
  });

  it('is stable across a JSON round trip', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => canonicalJson(v) === canonicalJson(JSON.parse(JSON.stringify(v)))));
  });

  it('rejects values JSON would silently change', () => {
    assert.throws(() => canonicalJson({ a: Number.NaN }), AuditCanonicalJsonError);
    assert.throws(() => canonicalJson({ a: Infinity }), AuditCanonicalJsonError);
    assert.throws(() => canonicalJson({ a: 1n }), AuditCanonicalJsonError);
  });

  it('hashEvent ignores the hash field itself', () => {
    const ev = buildChain()[2]!;
    assert.equal(hashEvent(ev), ev.hash);
    assert.equal(hashEvent({ ...ev, hash: 'f'.repeat(64) }), ev.hash);
  });
});

describe('chainEvent', () => {
  it('links seq, prevHash and session', () => {
    const events = buildChain();
    assert.equal(events[0]!.prevHash, GENESIS_HASH);
    events.forEach((ev, i) => {
      assert.equal(ev.seq, i);
      assert.equal(ev.v, 1);
      assert.equal(ev.sessionId, SID);
      assert.match(ev.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      if (i > 0) assert.equal(ev.prevHash, events[i - 1]!.hash);
    });
    const seal = events.at(-1)!;
    assert.equal(seal.type, 'seal');
    if (seal.type === 'seal') {
      assert.equal(seal.eventCount, events.length - 1);
      assert.equal(seal.lastHash, events.at(-2)!.hash);
    }
  });

  it('refuses to chain across sessions and ignores smuggled chain fields', () => {
    const [first] = buildChain();
    assert.throws(() => chainEvent(first!, { type: 'auth.failure', reason: 'r', detail: 'd', sqlstate: '28000', claimedUser: 'u' }, { sessionId: asSessionId('other') }));
    const smuggled = { type: 'auth.failure', reason: 'r', detail: 'd', sqlstate: '28000', claimedUser: 'u', seq: 99, prevHash: GENESIS_HASH, hash: 'x' } as AnyAuditEventBody;
    const ev = chainEvent(first!, smuggled, { sessionId: SID });
    assert.equal(ev.seq, 1);
    assert.equal(ev.prevHash, first!.hash);
    assert.equal(hashEvent(ev), ev.hash);
  });
});

describe('verifyChain', () => {
  it('accepts an intact, sealed chain (with and without the key)', () => {
    const events = buildChain();
    assert.deepEqual(verifyChain(events, keys.publicKey), { ok: true, count: events.length, sealed: true, keyId: 'k1' });
    assert.deepEqual(verifyChain(events), { ok: true, count: events.length, sealed: true, keyId: 'k1' });
    assert.deepEqual(verifyChainLines(events.map((e) => JSON.stringify(e)), keys.publicKey), { ok: true, count: events.length, sealed: true, keyId: 'k1' });
  });

  it('detects an edit of any field of any event at that event', () => {
    const events = buildChain();
    let cases = 0;
    events.forEach((ev, i) => {
      for (const path of leafPaths(ev)) {
        const tampered = clone(events);
        mutateAt(tampered[i] as unknown as Record<string, unknown>, path);
        const r = verifyChain(tampered, keys.publicKey);
        assert.equal(r.ok, false, `edit of ${path.join('.')} in event ${i} not detected`);
        if (!r.ok) assert.equal(r.brokenAt, i, `edit of ${path.join('.')} in event ${i}: ${r.reason}`);
        cases++;
      }
    });
    assert.ok(cases > 50);
  });

  it('detects a removed event at its position', () => {
    const events = buildChain();
    for (let k = 0; k < events.length; k++) {
      const r = verifyChain(events.filter((_, i) => i !== k), keys.publicKey);
      assert.equal(r.ok, false, `removal of ${k}`);
      if (!r.ok) {
        assert.equal(r.brokenAt, k, `removal of ${k}: ${r.reason}`);
        if (k > 0 && k < events.length - 1) assert.match(r.reason, /prevHash/);
      }
    }
  });

  it('detects two swapped events at the first of them', () => {
    const events = buildChain();
    for (let k = 0; k + 1 < events.length; k++) {
      const swapped = [...events];
      [swapped[k], swapped[k + 1]] = [swapped[k + 1]!, swapped[k]!];
      const r = verifyChain(swapped, keys.publicKey);
      assert.equal(r.ok, false);
      if (!r.ok) assert.equal(r.brokenAt, k, `swap ${k}: ${r.reason}`);
    }
  });

  it('detects a truncated tail (missing seal) when a key is given', () => {
    const events = buildChain();
    for (const keep of [events.length - 1, events.length - 2, 3]) {
      const r = verifyChain(events.slice(0, keep), keys.publicKey);
      assert.deepEqual(r, { ok: false, brokenAt: keep, reason: 'missing seal (truncated or unfinished session)' });
      // An open/crashed session is still chain-checked without requiring the seal.
      assert.deepEqual(verifyChain(events.slice(0, keep), keys.publicKey, { requireSeal: false }), { ok: true, count: keep, sealed: false });
    }
  });

  it('detects events appended after the seal', () => {
    const events = buildChain();
    const extra = chainEvent(events.at(-1)!, { type: 'statement.end', statementId: 9, endedAt: 'x', durationMs: 0, outcome: 'ok' }, { sessionId: SID });
    const r = verifyChain([...events, extra], keys.publicKey);
    assert.deepEqual(r, { ok: false, brokenAt: events.length, reason: 'event after the seal' });
  });

  it('detects a forged seal signature', () => {
    const events = buildChain();
    const sealIdx = events.length - 1;
    const seal = events[sealIdx]!;
    assert.equal(seal.type, 'seal');
    // Signature bytes changed and the seal re-hashed so only the signature is wrong.
    const sig = Buffer.from((seal as { signature: string }).signature, 'base64');
    sig[0]! ^= 0x01;
    const forged = chainEvent(events[sealIdx - 1]!, { ...(bodyOf(seal) as unknown as Record<string, unknown>), signature: sig.toString('base64') } as unknown as AnyAuditEventBody, { sessionId: SID, time: new Date(seal.time) });
    const r = verifyChain([...events.slice(0, sealIdx), forged], keys.publicKey);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.brokenAt, sealIdx);
      assert.match(r.reason, /invalid seal signature/);
    }
    // Without the key only the chain can be checked, which the forger kept intact.
    assert.equal(verifyChain([...events.slice(0, sealIdx), forged]).ok, true);
  });

  it('detects a re-chained trail (event removed, hashes and seal redone) signed with another key', () => {
    const events = buildChain();
    const withoutStatement = events.slice(0, -1).filter((e) => e.type !== 'statement').map(bodyOf);
    const rewritten = rechain(withoutStatement, SID, otherKeys.privateKey, 'k1');
    const r = verifyChain(rewritten, keys.publicKey, { keyId: 'k1' });
    assert.deepEqual(r, { ok: false, brokenAt: rewritten.length - 1, reason: 'invalid seal signature' });
    // The same rewrite passes with the forger's own key: the seal is what binds the trail to us.
    assert.equal(verifyChain(rewritten, otherKeys.publicKey).ok, true);
  });

  it('reports an empty trail and a foreign first event', () => {
    assert.deepEqual(verifyChain([]), { ok: false, brokenAt: 0, reason: 'no events' });
    const events = buildChain();
    const r = verifyChain(events.slice(1));
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.brokenAt, 0);
  });

  it('rejects a line re-encoded to the same value', () => {
    const events = buildChain({ text: 'select \u001f' });
    const lines = events.map((e) => JSON.stringify(e));
    assert.match(lines[3]!, /\\u001f/);
    lines[3] = lines[3]!.replace('\\u001f', '\\u001F');
    assert.equal(JSON.stringify(JSON.parse(lines[3]!)), JSON.stringify(events[3]));
    const r = verifyChainLines(lines, keys.publicKey);
    assert.equal(r.ok, false);
    if (!r.ok) assert.equal(r.brokenAt, 3);
  });
});

describe('property: single-byte changes', () => {
  it('any single-byte change to the serialized trail is unparseable or detected, at the changed event', () => {
    const text = fc.string({ unit: 'binary', maxLength: 40 });
    fc.assert(
      fc.property(
        fc.record({
          text,
          params: fc.array(fc.option(text, { nil: null }), { maxLength: 3 }),
          classification: fc.jsonValue({ maxDepth: 3 }),
        }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (input, posSeed, delta) => {
          const events = buildChain(input);
          const file = Buffer.from(events.map((e) => JSON.stringify(e) + '\n').join(''), 'utf8');
          const pos = posSeed % file.length;
          const mutated = Buffer.from(file);
          mutated[pos] = (mutated[pos]! + delta) & 0xff;
          // Line containing the changed byte (a changed newline belongs to the line it ends).
          const changedLine = file.subarray(0, pos).filter((b) => b === 0x0a).length;
          // Read like the sink's reader: split at '\n', an unterminated tail is a torn write.
          const lastNl = mutated.lastIndexOf(0x0a);
          const lines = lastNl < 0 ? [] : mutated.subarray(0, lastNl).toString('utf8').split('\n');
          const r = verifyChainLines(lines, keys.publicKey);
          if (r.ok) return false;
          return r.brokenAt === changedLine;
        },
      ),
      { numRuns: Number(process.env.FC_RUNS ?? 300) },
    );
  });
});
