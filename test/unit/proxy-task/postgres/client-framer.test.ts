import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serialize } from 'pg-protocol';
import { ClientFramer, MAX_STARTUP_PACKET, ProtocolFramingError, type FramedMessage } from '../../../../proxy-task/src/postgres/client-framer.ts';

function drain(f: ClientFramer): FramedMessage[] {
  const out: FramedMessage[] = [];
  for (let m = f.next(); m; m = f.next()) out.push({ type: m.type, raw: Buffer.from(m.raw), body: Buffer.from(m.body) });
  return out;
}

const typedStream = Buffer.concat([
  serialize.query('select 1; select 2'),
  serialize.parse({ name: 's1', text: 'select $1::int', types: [23] }),
  serialize.bind({ statement: 's1', values: ['42'] }),
  serialize.describe({ type: 'P' }),
  serialize.execute({ rows: 0 }),
  serialize.sync(),
  serialize.copyData(Buffer.alloc(3000, 7)),
  serialize.copyDone(),
  serialize.end(),
]);

test('frames a stream of client messages cut at every byte offset into the same messages', () => {
  const whole = new ClientFramer(1 << 20);
  whole.untyped = false;
  whole.push(typedStream);
  const expected = drain(whole);
  assert.equal(expected.length, 9);
  assert.deepEqual(expected.map((m) => String.fromCharCode(m.type)).join(''), 'QPBDESdcX');
  for (let cut = 0; cut <= typedStream.length; cut++) {
    const f = new ClientFramer(1 << 20);
    f.untyped = false;
    f.push(typedStream.subarray(0, cut));
    const got = drain(f);
    f.push(typedStream.subarray(cut));
    got.push(...drain(f));
    assert.deepEqual(got, expected, `cut at ${cut}`);
    assert.equal(f.pending, 0);
  }
});

test('frames one byte at a time', () => {
  const f = new ClientFramer(1 << 20);
  f.untyped = false;
  const got: FramedMessage[] = [];
  for (const b of typedStream) {
    f.push(Buffer.from([b]));
    got.push(...drain(f));
  }
  assert.equal(got.length, 9);
  assert.deepEqual(Buffer.concat(got.map((m) => m.raw)), typedStream);
});

test('frames an untyped startup packet cut at every offset, then typed messages', () => {
  const startup = serialize.startup({ user: 'agent', database: 'demo', application_name: 'psql' });
  const stream = Buffer.concat([startup, serialize.password('tok')]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const f = new ClientFramer(1 << 20);
    f.push(stream.subarray(0, cut));
    let m = f.next();
    if (!m) {
      f.push(stream.subarray(cut));
      m = f.next();
      f.untyped = false;
    } else {
      f.untyped = false;
      f.push(stream.subarray(cut));
    }
    assert.ok(m, `startup at cut ${cut}`);
    assert.equal(m.type, 0);
    assert.deepEqual(Buffer.from(m.raw), startup);
    const p = f.next();
    assert.ok(p, `password at cut ${cut}`);
    assert.equal(String.fromCharCode(p.type), 'p');
  }
});

test('refuses a length field below 4', () => {
  const f = new ClientFramer(1024);
  f.untyped = false;
  f.push(Buffer.from([0x51, 0, 0, 0, 3]));
  assert.throws(() => f.next(), ProtocolFramingError);
});

test('refuses a message over the size limit before buffering it', () => {
  const f = new ClientFramer(1024);
  f.untyped = false;
  const header = Buffer.from([0x51, 0, 0, 0, 0]);
  header.writeInt32BE(2000, 1);
  f.push(header);
  assert.throws(() => f.next(), /exceeds the limit of 1024 bytes/);
});

test('refuses startup packets that are too short or too long', () => {
  for (const len of [0, 4, 7, MAX_STARTUP_PACKET + 1, -1]) {
    const f = new ClientFramer(1024);
    const b = Buffer.alloc(8);
    b.writeInt32BE(len, 0);
    f.push(b);
    assert.throws(() => f.next(), ProtocolFramingError, `length ${len}`);
  }
});

test('a large message arriving in many chunks is assembled once, correctly', () => {
  const big = serialize.copyData(Buffer.alloc(2_000_000, 9));
  const f = new ClientFramer(4 << 20);
  f.untyped = false;
  for (let i = 0; i < big.length; i += 1000) {
    f.push(big.subarray(i, i + 1000));
    if (i + 1000 < big.length) assert.equal(f.next(), undefined);
  }
  const m = f.next();
  assert.ok(m);
  assert.equal(m.body.length, 2_000_000);
  assert.ok(m.body.every((x) => x === 9));
});
