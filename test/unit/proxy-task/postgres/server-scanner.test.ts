import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ServerScanner } from '../../../../proxy-task/src/postgres/server-scanner.ts';
import { errorResponse, parameterStatus, readyForQuery } from '../../../../proxy-task/src/postgres/backend-messages.ts';

function msg(type: string, body: Buffer): Buffer {
  const b = Buffer.alloc(5);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([b, body]);
}

const stream = Buffer.concat([
  msg('T', Buffer.alloc(30, 1)),
  msg('D', Buffer.alloc(100, 2)),
  msg('D', Buffer.alloc(0)),
  msg('C', Buffer.from('SELECT 2\0')),
  errorResponse({ severity: 'ERROR', code: '42P01', message: 'relation "x" does not exist' }),
  parameterStatus('TimeZone', 'UTC'),
  msg('I', Buffer.alloc(0)),
  readyForQuery('I'),
]);

test('reports every server message with inspected bodies, whatever the chunking', () => {
  const seen = (chunks: Buffer[]): string[] => {
    const out: string[] = [];
    const s = new ServerScanner(new Set([0x43, 0x45, 0x5a, 0x49]), (t, body) => {
      out.push(`${String.fromCharCode(t)}:${body ? body.toString('latin1') : '-'}`);
    });
    for (const c of chunks) s.scan(c);
    return out;
  };
  const expected = seen([stream]);
  assert.equal(expected.length, 8);
  assert.equal(expected[3], 'C:SELECT 2\0');
  assert.equal(expected[1], 'D:-');
  assert.equal(expected[7], 'Z:I');
  for (let cut = 0; cut <= stream.length; cut++) assert.deepEqual(seen([stream.subarray(0, cut), stream.subarray(cut)]), expected, `cut ${cut}`);
  assert.deepEqual(seen([...stream].map((b) => Buffer.from([b]))), expected);
});

test('refuses an invalid server length field', () => {
  const s = new ServerScanner(new Set(), () => undefined);
  assert.throws(() => s.scan(Buffer.from([0x44, 0, 0, 0, 1])), /invalid server message length/);
});

test('a message asked to be dropped is cut out and replaced in place, however the stream is split', () => {
  const error = errorResponse({ severity: 'ERROR', code: '42P01', message: 'relation "x" does not exist' });
  const at = stream.indexOf(error);
  assert.ok(at > 0);
  const replacement = Buffer.from('REPLACED');
  const expected = Buffer.concat([stream.subarray(0, at), replacement, stream.subarray(at + error.length)]);
  for (let cut = 0; cut <= stream.length; cut++) {
    for (const width of [0, 1, 3, 9]) {
      const cut2 = Math.min(stream.length, cut + width);
      let seenBody = '';
      const s = new ServerScanner(
        new Set(),
        (t, body) => {
          if (t !== 0x45) return undefined;
          seenBody = body?.toString('latin1') ?? '';
          return replacement;
        },
        undefined,
        (t) => t === 0x45,
      );
      const out: Buffer[] = [];
      for (const c of [stream.subarray(0, cut), stream.subarray(cut, cut2), stream.subarray(cut2)]) out.push(...(s.scan(c) ?? [c]));
      assert.deepEqual(Buffer.concat(out), expected, `split at ${cut}/${cut2}`);
      assert.match(seenBody, /relation "x" does not exist/, 'the dropped message body is assembled for the handler');
    }
  }
});
