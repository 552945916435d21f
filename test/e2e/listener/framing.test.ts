/**
 * Malformed, truncated, oversized and random client input at the PostgreSQL listener, end to end against
 * a real target. For every attack: the offending connection gets an ErrorResponse with a fitting SQLSTATE
 * and/or is closed, no internal error text reaches it, Warden stays up, and a session opened before the
 * attack keeps returning correct results. Every audit trail opened on the way ends sealed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { auditKeyPaths, listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';
import {
  decodeErrorFields,
  INTERNAL_LEAK,
  RawClient,
  RawClosedError,
  startupPacket,
  typedMessage,
  type ErrorFields,
  type ServerMsg,
} from '../../helpers/raw-client.ts';

const MAX_MESSAGE = 64 * 1024;
const PROTOCOL_3 = 3 << 16;

let w: TestWarden;
let bystander: pg.Client;
let bystanderToken: string;

before(async () => {
  w = await startTestWarden({
    config: {
      listeners: {
        postgres: { host: '127.0.0.1', port: 0, tls: { mode: 'self-signed' }, maxMessageBytes: MAX_MESSAGE, startupTimeoutSeconds: 1 },
      },
    },
  });
  bystanderToken = await w.token('bystander');
  bystander = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'bystander', database: 'appdb', password: bystanderToken });
  await bystander.connect();
  await bystander.query('create temporary table canary (k int primary key, v text)');
  await bystander.query("insert into canary select g, 'row ' || g from generate_series(1, 500) g");
});

after(async () => {
  await bystander?.end().catch(() => undefined);
  await w?.stop();
});

/** The session opened before every attack still answers, with the right results. */
async function assertBystanderWorks(): Promise<void> {
  const r = await bystander.query<{ n: string; s: string; v: string }>('select count(*)::text as n, sum(k)::text as s, (select v from canary where k = $1) as v from canary', [321]);
  assert.deepEqual(r.rows, [{ n: '500', s: '125250', v: 'row 321' }]);
}

function messageText(msgs: ServerMsg[]): string {
  return msgs.map((m) => (m.type === 'E' || m.type === 'N' ? Object.values(decodeErrorFields(m.body)).join('\n') : '')).join('\n');
}

function assertNoLeak(msgs: ServerMsg[], rest: Buffer = Buffer.alloc(0)): void {
  const text = messageText(msgs) + rest.toString('latin1');
  assert.doesNotMatch(text, INTERNAL_LEAK, `internal detail reached the client: ${text}`);
  // Warden's catch-all answer would mean an input reached an unexpected code path.
  assert.doesNotMatch(text, /internal error; see the Warden log/, `an input hit an unexpected exception: ${text}`);
}

/** Drains the connection until Warden closes it; returns the error fields it sent (the first ErrorResponse). */
async function expectRefusedAndClosed(c: RawClient, sqlstate: string | RegExp, timeoutMs = 3000): Promise<ErrorFields> {
  const { messages, closed, rest } = await c.drain(timeoutMs);
  c.destroy();
  assert.ok(closed, 'Warden must close the offending connection');
  assertNoLeak(messages, rest);
  const err = messages.find((m) => m.type === 'E');
  assert.ok(err, `expected an ErrorResponse, got ${JSON.stringify(messages.map((m) => m.type))}`);
  const f = decodeErrorFields(err.body);
  if (typeof sqlstate === 'string') assert.equal(f.C, sqlstate, `SQLSTATE (message: ${f.M})`);
  else assert.match(f.C ?? '', sqlstate, `SQLSTATE (message: ${f.M})`);
  return f;
}

async function loggedIn(sub: string): Promise<RawClient> {
  const c = await RawClient.connect(w.port);
  const r = await c.login({ user: sub, database: 'appdb', password: await w.token(sub) });
  assert.ok(r.ok, `login failed: ${JSON.stringify(r.error)}`);
  return c;
}

/** Deterministic PRNG (mulberry32) so a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('startup phase', () => {
  test('startup length below 8 → 08P01 and closed', async () => {
    const c = await RawClient.connect(w.port);
    const b = Buffer.alloc(8);
    b.writeInt32BE(4, 0);
    b.writeInt32BE(PROTOCOL_3, 4);
    c.write(b);
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.match(f.M ?? '', /invalid startup packet length/);
    await assertBystanderWorks();
  });

  test('startup length above 10000 → 08P01 and closed without waiting for the body', async () => {
    const c = await RawClient.connect(w.port);
    const b = Buffer.alloc(8);
    b.writeInt32BE(10_001, 0);
    b.writeInt32BE(PROTOCOL_3, 4);
    c.write(b);
    await expectRefusedAndClosed(c, '08P01', 1500);
    const neg = await RawClient.connect(w.port);
    const nb = Buffer.alloc(8);
    nb.writeInt32BE(-1, 0);
    neg.write(nb);
    await expectRefusedAndClosed(neg, '08P01', 1500);
    await assertBystanderWorks();
  });

  test('garbage instead of a startup packet (an HTTP request, a TLS ClientHello) → 08P01 and closed', async () => {
    const http = await RawClient.connect(w.port);
    http.write('GET / HTTP/1.1\r\nHost: warden\r\n\r\n');
    await expectRefusedAndClosed(http, '08P01');
    const hello = await RawClient.connect(w.port);
    // A TLS record header (handshake, TLS 1.0) as a client that skipped the SSLRequest would send.
    hello.write(Buffer.from('16030100c4010000c00303', 'hex'));
    await expectRefusedAndClosed(hello, '08P01');
    await assertBystanderWorks();
  });

  test('unsupported protocol versions (2.0, 4.0, 9.1) → 0A000 naming 3.0, closed', async () => {
    for (const version of [2 << 16, 4 << 16, (9 << 16) | 1]) {
      const c = await RawClient.connect(w.port);
      c.write(startupPacket(version, Buffer.from('user\0agent\0database\0appdb\0\0')));
      const f = await expectRefusedAndClosed(c, '0A000');
      assert.match(f.M ?? '', /unsupported frontend protocol .*3\.0/);
      assert.equal(f.S, 'FATAL');
    }
    await assertBystanderWorks();
  });

  test('a newer 3.x minor version or _pq_ options: NegotiateProtocolVersion (3.0, options not recognized), then a normal login', async () => {
    for (const [minor, extra, expected] of [
      [2, '', []],
      [0, '_pq_.test_option\0on\0', ['_pq_.test_option']],
      [9999, '_pq_.a\0x\0_pq_.b\0y\0', ['_pq_.a', '_pq_.b']],
    ] as const) {
      const c = await RawClient.connect(w.port);
      c.write(startupPacket((3 << 16) | minor, Buffer.from(`user\0nego-${minor}\0database\0appdb\0${extra}\0`)));
      const v = await c.next();
      assert.equal(v.type, 'v', `minor ${minor}`);
      assert.equal(v.body.readInt32BE(0), 3 << 16, 'newest version: 3.0');
      assert.equal(v.body.readInt32BE(4), expected.length);
      assert.deepEqual(v.body.subarray(8).toString('utf8').split('\0').filter(Boolean), expected);
      const ask = await c.next();
      assert.equal(ask.type, 'R');
      c.password(await w.token(`nego-${minor}`));
      const msgs = await c.until((m) => m.type === 'Z' || m.type === 'E');
      assert.equal(msgs.at(-1)!.type, 'Z');
      assert.deepEqual((await c.query('select 1')).rows, [['1']]);
      c.destroy();
    }
  });

  test('a startup packet whose parameters are not NUL-terminated → 08P01, not an internal error', async () => {
    const c = await RawClient.connect(w.port);
    c.write(startupPacket(PROTOCOL_3, Buffer.from('user\0agent\0database\0appdb')));
    await expectRefusedAndClosed(c, '08P01');
    await assertBystanderWorks();
  });

  test('a CancelRequest of the wrong length is dropped quietly (no internal error)', async () => {
    const c = await RawClient.connect(w.port);
    c.write(startupPacket(80877102, Buffer.from([0, 0, 0, 1])));
    const { messages, closed, rest } = await c.drain(2000);
    c.destroy();
    assert.ok(closed);
    assertNoLeak(messages, rest);
    for (const m of messages) assert.notEqual(decodeErrorFields(m.body).C, 'XX000');
    await assertBystanderWorks();
  });

  test('a truncated startup packet followed by close: Warden just drops it', async () => {
    const c = await RawClient.connect(w.port);
    const full = serialize.startup({ user: 'agent', database: 'appdb' });
    c.end(full.subarray(0, full.length - 5));
    const { messages, closed } = await c.drain(2000);
    assert.ok(closed);
    assert.deepEqual(messages, []);
    await assertBystanderWorks();
  });

  test("a plaintext startup where the TLS handshake should be (after 'S') fails the handshake and is closed", async () => {
    const c = await RawClient.connect(w.port);
    assert.equal(await c.sslRequest(), 'S');
    c.write(serialize.startup({ user: 'agent', database: 'appdb' }));
    const { closed, messages, rest } = await c.drain(3000);
    c.destroy();
    assert.ok(closed);
    assertNoLeak(messages, rest);
    await assertBystanderWorks();
  });

  test('unencrypted data after SSLRequest (SSLRequest and startup in one write) is refused with 08P01, no S', async () => {
    const c = await RawClient.connect(w.port);
    c.write(Buffer.concat([serialize.requestSsl(), serialize.startup({ user: 'agent', database: 'appdb' })]));
    const first = await c.readBytes(1, 3000);
    assert.equal(first.toString('latin1'), 'E', 'must not answer S and then read the injected cleartext');
    // The rest is the ErrorResponse's length and body.
    const restMsgs = await c.drain(3000);
    c.destroy();
    assert.ok(restMsgs.closed);
    assert.ok(restMsgs.rest.length > 4, 'the ErrorResponse body');
    const len = restMsgs.rest.readInt32BE(0);
    const f = decodeErrorFields(restMsgs.rest.subarray(4, len));
    assert.equal(f.C, '08P01');
    assert.match(f.M ?? '', /unencrypted data after SSL request/);
    await assertBystanderWorks();
  });
});

describe('startup deadline (startupTimeoutSeconds: 1)', { concurrency: true }, () => {
  test('a client that sends nothing is closed after startupTimeoutSeconds (1 s)', async () => {
    const c = await RawClient.connect(w.port);
    const t0 = Date.now();
    assert.equal(await c.waitClosed(4000), true, 'idle connection not closed');
    const waited = Date.now() - t0;
    assert.ok(waited >= 800 && waited < 3000, `closed after ${waited} ms`);
    assert.equal(c.buffered, 0);
    await assertBystanderWorks();
  });

  test('a client that stops after the startup packet (never sends its token) is closed at the deadline; its trail is sealed', async () => {
    const c = await RawClient.connect(w.port);
    c.startup({ user: 'silent-agent', database: 'appdb' });
    const ask = await c.next(2000);
    assert.equal(ask.type, 'R');
    assert.equal(ask.body.readInt32BE(0), 3, 'asks for a cleartext password (the token)');
    const t0 = Date.now();
    assert.equal(await c.waitClosed(4000), true);
    assert.ok(Date.now() - t0 < 3000);
    const s = await sealedSessionOf('silent-agent');
    assert.ok(s.events.some((e) => e.type === 'session.end'));
  });

  test('a TLS handshake that never comes after SSLRequest is closed at the deadline', async () => {
    const c = await RawClient.connect(w.port);
    assert.equal(await c.sslRequest(), 'S');
    assert.equal(await c.waitClosed(4000), true);
    await assertBystanderWorks();
  });
});

describe('password phase', () => {
  async function atPasswordPrompt(user: string): Promise<RawClient> {
    const c = await RawClient.connect(w.port);
    c.startup({ user, database: 'appdb' });
    const ask = await c.next(2000);
    assert.equal(ask.type, 'R');
    return c;
  }

  test('a typed message with length below 4 → 08P01 and closed', async () => {
    const c = await atPasswordPrompt('pw-short');
    c.write(Buffer.from([0x70, 0, 0, 0, 3]));
    await expectRefusedAndClosed(c, '08P01');
    await assertBystanderWorks();
  });

  test('a password message over maxMessageBytes → 08P01 and closed without buffering it', async () => {
    const c = await atPasswordPrompt('pw-huge');
    const head = Buffer.alloc(5);
    head[0] = 0x70;
    head.writeInt32BE(50 * 1024 * 1024, 1);
    c.write(head);
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.match(f.M ?? '', /exceeds the limit/);
    await assertBystanderWorks();
  });

  test('a password message without its NUL terminator → refused as a protocol violation, not an internal error', async () => {
    const c = await atPasswordPrompt('pw-unterminated');
    const token = await w.token('pw-unterminated');
    c.write(typedMessage('p', Buffer.from(token)));
    await expectRefusedAndClosed(c, /^(08P01|28P01)$/);
    await assertBystanderWorks();
  });

  test('an empty password message → 08P01, not an internal error', async () => {
    const c = await atPasswordPrompt('pw-empty');
    c.write(typedMessage('p'));
    await expectRefusedAndClosed(c, '08P01');
  });

  test('a message other than a password → 08P01', async () => {
    const c = await atPasswordPrompt('pw-query');
    c.write(serialize.query('select 1'));
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.match(f.M ?? '', /expected a password/);
  });
});

describe('after login (relay phase)', () => {
  test('a typed message with length below 4 → 08P01 FATAL and closed', async () => {
    const c = await loggedIn('relay-short');
    c.write(Buffer.from([0x51, 0, 0, 0, 2]));
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.equal(f.S, 'FATAL');
    await assertBystanderWorks();
  });

  test('a message over maxMessageBytes (64 KiB) → 08P01 and closed; one just under the limit works', async () => {
    const ok = await loggedIn('relay-big-ok');
    const fits = `select length('${'x'.repeat(MAX_MESSAGE - 100)}')`;
    const r = await ok.query(fits);
    assert.equal(r.error, undefined);
    assert.deepEqual(r.rows, [[String(MAX_MESSAGE - 100)]]);
    ok.destroy();

    const c = await loggedIn('relay-big');
    c.write(serialize.query(`select '${'x'.repeat(MAX_MESSAGE)}'`));
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.match(f.M ?? '', /exceeds the limit of 65536 bytes/);

    const lying = await loggedIn('relay-big-header');
    const head = Buffer.alloc(5);
    head[0] = 0x51;
    head.writeInt32BE(0x7ffffff0, 1);
    lying.write(head);
    await expectRefusedAndClosed(lying, '08P01');
    await assertBystanderWorks();
  });

  test('a truncated message followed by close ends the session cleanly; its trail is sealed', async () => {
    const c = await loggedIn('relay-truncated');
    const q = serialize.query('select 42');
    c.end(q.subarray(0, q.length - 4));
    assert.equal(await c.waitClosed(3000), true);
    const s = await sealedSessionOf('relay-truncated');
    const end = s.events.find((e) => e.type === 'session.end') as unknown as { reason: string; statements: number };
    assert.equal(end.reason, 'client_disconnect');
    assert.equal(end.statements, 0, 'nothing of the truncated query was forwarded');
    await assertBystanderWorks();
  });

  test('a Query without its NUL terminator → 08P01 and closed', async () => {
    const c = await loggedIn('relay-nonul');
    c.write(typedMessage('Q', Buffer.from('select 1')));
    const f = await expectRefusedAndClosed(c, '08P01');
    assert.equal(f.S, 'FATAL');
    await assertBystanderWorks();
  });

  test('a Bind whose parameter length exceeds the message → an 08P01 error; the connection stays usable or is closed', async () => {
    const c = await loggedIn('relay-bind');
    c.write(serialize.parse({ name: 's1', text: 'select $1::text', types: [] }));
    // Bind: portal "", statement "s1", 0 formats, 1 parameter claiming 1000 bytes but carrying 3.
    const body = Buffer.concat([Buffer.from('\0s1\0'), Buffer.from([0, 0, 0, 1]), Buffer.from([0, 0, 3, 0xe8]), Buffer.from('abc'), Buffer.from([0, 0])]);
    c.write(Buffer.concat([typedMessage('B', body), serialize.execute({}), serialize.sync()]));
    const msgs = await c.until((m) => m.type === 'Z' || m.type === 'E', 3000).catch(() => [] as ServerMsg[]);
    const rest = await c.drain(300);
    const all = [...msgs, ...rest.messages];
    assertNoLeak(all, rest.rest);
    const err = all.find((m) => m.type === 'E');
    assert.ok(err, 'an ErrorResponse');
    assert.equal(decodeErrorFields(err.body).C, '08P01');
    if (!rest.closed) {
      const r = await c.query('select 7');
      assert.deepEqual(r.rows, [['7']]);
    }
    c.destroy();
    await assertBystanderWorks();
  });

  test('unknown message types are refused by the target and end only that session', async () => {
    const c = await loggedIn('relay-unknown-type');
    c.write(typedMessage('~', Buffer.from('whatever')));
    await expectRefusedAndClosed(c, '08P01');
    await assertBystanderWorks();
  });
});

describe('fuzz (seeded)', () => {
  const CLIENT_TYPES = 'QPBDESHCFdcfXp~\0';

  function randomBuffer(rnd: () => number, typed: boolean): Buffer {
    const n = Math.floor(rnd() * 64);
    const junk = Buffer.alloc(n);
    for (let i = 0; i < n; i++) junk[i] = Math.floor(rnd() * 256);
    const shape = rnd();
    if (shape < 0.3) return junk; // bytes without structure
    const len = shape < 0.7 ? n + 4 : shape < 0.85 ? Math.floor(rnd() * 16) - 4 : Math.floor(rnd() * 0x7fffffff);
    if (!typed) {
      const b = Buffer.alloc(8 + n);
      b.writeInt32BE(len + 4, 0);
      const codes = [PROTOCOL_3, 80877103, 80877104, 80877102, 2 << 16, Math.floor(rnd() * 0x7fffffff)];
      b.writeInt32BE(codes[Math.floor(rnd() * codes.length)]!, 4);
      junk.copy(b, 8);
      return b;
    }
    const b = Buffer.alloc(5 + n);
    b[0] = CLIENT_TYPES.charCodeAt(Math.floor(rnd() * CLIENT_TYPES.length));
    b.writeInt32BE(len, 1);
    junk.copy(b, 5);
    return b;
  }

  /** Well-framed messages of real types with random or mutated bodies: they pass the framer and reach the decoders and the target. */
  function framedButWrong(rnd: () => number): Buffer {
    const valid = [
      serialize.parse({ name: 'p', text: 'select $1::int + $2::int', types: [23, 23] }),
      serialize.bind({ portal: '', statement: 'p', values: ['1', '2'] }),
      serialize.describe({ type: 'P', name: '' }),
      serialize.execute({ portal: '', rows: 0 }),
      serialize.close({ type: 'S', name: 'p' }),
      serialize.sync(),
      serialize.query("select 'q'"),
      serialize.flush(),
    ];
    const m = Buffer.from(valid[Math.floor(rnd() * valid.length)]!);
    if (rnd() < 0.5) {
      // Overwrite body bytes only; the type byte and length stay right.
      const flips = 1 + Math.floor(rnd() * 3);
      for (let k = 0; k < flips && m.length > 5; k++) m[5 + Math.floor(rnd() * (m.length - 5))] = Math.floor(rnd() * 256);
      return m;
    }
    // A real type byte with a random body of the right length.
    const n = Math.floor(rnd() * 24);
    const body = Buffer.alloc(n);
    for (let i = 0; i < n; i++) body[i] = rnd() < 0.3 ? 0 : Math.floor(rnd() * 256);
    return typedMessage(String.fromCharCode(m[0]!), body);
  }

  async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
    let k = 0;
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (k < items.length) await fn(items[k++]!);
      }),
    );
  }

  test('random startup-phase bytes: 160 connections, each answered with a clean error or closed', async () => {
    const rnd = prng(0x5eed01);
    const cases = Array.from({ length: 160 }, () => randomBuffer(rnd, false));
    await pool(cases, 8, async (buf) => {
      const c = await RawClient.connect(w.port);
      c.end(buf);
      const { messages, closed, rest } = await c.drain(3000);
      c.destroy();
      assert.ok(closed, `connection left open after ${buf.toString('hex')}`);
      try {
        assertNoLeak(messages, rest);
      } catch (err) {
        throw new Error(`input ${buf.toString('hex')}: ${(err as Error).message}`);
      }
    });
    await assertBystanderWorks();
  });

  test('random messages after login: 48 sessions × 5 buffers, Warden and the bystander unaffected', async () => {
    const rnd = prng(0x5eed02);
    const sessions = Array.from({ length: 48 }, (_, i) => ({ i, bufs: Array.from({ length: 5 }, () => (i % 3 === 0 ? randomBuffer(rnd, true) : framedButWrong(rnd))) }));
    const token = await w.token('fuzzer');
    await pool(sessions, 4, async ({ i, bufs }) => {
      const c = await RawClient.connect(w.port);
      const r = await c.login({ user: 'fuzzer', database: 'appdb', password: token });
      assert.ok(r.ok, `fuzz login ${i}: ${JSON.stringify(r.error)}`);
      const marker = `fuzz-done-${i}`;
      let messages: ServerMsg[];
      let rest: Buffer;
      if (i % 3 === 0) {
        // Unframed junk: send it and half-close; Warden must close its side too.
        c.end(Buffer.concat(bufs));
        const d = await c.drain(5000);
        assert.ok(d.closed, `fuzz session ${i} left open`);
        ({ messages, rest } = d);
      } else {
        // Well-framed but wrong messages, then a marker query: either the session recovers and answers the
        // marker, or it is ended with an error.
        c.write(Buffer.concat([...bufs, serialize.sync(), serialize.query(`select '${marker}'`)]));
        messages = [];
        let recovered = false;
        const deadline = Date.now() + 5000;
        try {
          while (!recovered) {
            const m = await c.next(Math.max(1, deadline - Date.now()));
            messages.push(m);
            recovered = m.type === 'D' && m.body.includes(marker);
          }
        } catch (err) {
          if (!(err instanceof RawClosedError)) throw new Error(`fuzz session ${i} (${bufs.map((b) => b.toString('hex')).join(' ')}) neither answered nor closed`);
        }
        const d = await c.drain(recovered ? 50 : 2000);
        messages.push(...d.messages);
        rest = d.rest;
        assert.ok(recovered || d.closed);
      }
      c.destroy();
      try {
        assertNoLeak(messages, rest);
      } catch (err) {
        throw new Error(`fuzz session ${i} (${bufs.map((b) => b.toString('hex')).join(' ')}): ${(err as Error).message}`);
      }
    });
    await assertBystanderWorks();
    // Warden still accepts new logins.
    const c = await loggedIn('after-fuzz');
    assert.deepEqual((await c.query('select 1 + 1')).rows, [['2']]);
    c.destroy();
  });
});

describe('afterwards', () => {
  test('every session opened by the attacks is sealed and its chain verifies', async () => {
    const publicKey = createPublicKey(readFileSync(auditKeyPaths(w.loaded.stateDir).publicKeyPath));
    const deadline = Date.now() + 8000;
    let open: string[] = [];
    let sessions = await listSessions(w.loaded.auditDir);
    for (;;) {
      // The bystander's own session is still open.
      open = sessions.filter((s) => !s.endTime && s.startupUser !== 'bystander').map((s) => `${s.startupUser}:${s.sessionId}`);
      if (open.length === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
      sessions = await listSessions(w.loaded.auditDir);
    }
    assert.deepEqual(open, [], 'sessions never sealed');
    assert.ok(sessions.length > 50);
    for (const s of sessions) {
      if (s.startupUser === 'bystander') continue;
      const trail = await readSessionEvents(w.loaded.auditDir, s.sessionId);
      const v = verifyChainLines(trail.lines, publicKey);
      assert.ok(v.ok && v.sealed, `session ${s.sessionId} (${s.startupUser}): ${JSON.stringify(v)}`);
    }
    await assertBystanderWorks();
  });
});

/** Waits for the (only) session of `user` to be sealed; returns its trail. */
async function sealedSessionOf(user: string): Promise<Awaited<ReturnType<typeof readSessionEvents>>> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const mine = (await listSessions(w.loaded.auditDir)).filter((s) => s.startupUser === user);
    if (mine.length === 1 && mine[0]!.endTime) return readSessionEvents(w.loaded.auditDir, mine[0]!.sessionId);
    assert.ok(mine.length <= 1, `more than one session for ${user}`);
    if (Date.now() > deadline) assert.fail(`no sealed session for ${user}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

