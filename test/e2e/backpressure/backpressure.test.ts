/**
 * Backpressure both ways, measured on a Warden process: when the client stops reading a large result,
 * or the target stops reading what the client sends, Warden's memory must not grow with the data.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { serialize } from 'pg-protocol';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { TARGET_PASSWORD, TARGET_USER } from '../../helpers/warden.ts';
import { startWardenProcess, type WardenProcess } from '../../helpers/warden-process.ts';

const MB = 1024 * 1024;
let pgServer: PostgresServer;
let warden: WardenProcess;

before(async () => {
  pgServer = await startTestPostgres({ authMethod: 'scram-sha-256' });
  await pgServer.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
  await pgServer.createDatabase('appdb', TARGET_USER);
  warden = await startWardenProcess(pgServer);
});

after(async () => {
  await warden?.stop();
  await pgServer?.stop();
});

/** Logs in over a raw socket and returns it once ReadyForQuery arrived. */
async function login(sub: string): Promise<net.Socket> {
  const token = await warden.issuer.issueToken({ sub, groups: ['writers'] });
  const s = net.connect(warden.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    s.once('error', reject);
    s.on('data', function onData(d: Buffer) {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5) {
        const len = buf.readInt32BE(1);
        if (buf.length < len + 1) break;
        const type = String.fromCharCode(buf[0]!);
        if (type === 'R' && buf.readInt32BE(5) === 3) s.write(serialize.password(token));
        if (type === 'E') reject(new Error(buf.toString('utf8', 5, len + 1)));
        buf = buf.subarray(len + 1);
        if (type === 'Z') {
          s.off('data', onData);
          resolve();
          return;
        }
      }
    });
    s.write(serialize.startup({ user: sub, database: 'appdb' }));
  });
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a client that stops reading a 300 MB result does not make Warden buffer it', async () => {
  const s = await login('slow-reader');
  const before = warden.rss();
  s.pause();
  s.write(serialize.query("SELECT repeat('x', 1000) FROM generate_series(1, 300000)"));
  await sleep(2500);
  const during = warden.rss();
  // Resume and drain everything: the result is whole and the session still works.
  let bytes = 0;
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      if (d.length >= 6 && d[d.length - 6] === 0x5a) resolve();
    });
  });
  s.resume();
  await done;
  s.destroy();
  console.log(`backpressure (slow client): rss before ${(before / MB).toFixed(1)} MB, while stalled ${(during / MB).toFixed(1)} MB, relayed ${(bytes / MB).toFixed(0)} MB`);
  assert.ok(bytes > 300_000 * 1000, `the whole result was relayed (${bytes} bytes)`);
  assert.ok(during - before < 100 * MB, `Warden grew by ${((during - before) / MB).toFixed(1)} MB while the client was not reading`);
});

test('a target that stops reading (busy in pg_sleep) pauses a client flooding 200 MB of queries', async () => {
  const s = await login('fast-writer');
  const before = warden.rss();
  s.write(serialize.query('SELECT pg_sleep(3)'));
  const big = serialize.query(`SELECT '${'y'.repeat(100_000)}' AS v WHERE false`);
  let sent = 0;
  let blocked = false;
  // Write as fast as the socket takes it, but stop when the kernel says it is full: then the only place
  // left to buffer would be Warden.
  const t0 = Date.now();
  while (sent < 200 * MB && Date.now() - t0 < 2000) {
    if (!s.write(big)) {
      blocked = true;
      await Promise.race([new Promise((r) => s.once('drain', r)), sleep(200)]);
    }
    sent += big.length;
  }
  const during = warden.rss();
  s.destroy();
  console.log(`backpressure (slow target): client queued ${(sent / MB).toFixed(0)} MB, socket blocked: ${blocked}; rss before ${(before / MB).toFixed(1)} MB, during ${(during / MB).toFixed(1)} MB`);
  assert.ok(blocked, 'the client was pushed back');
  assert.ok(during - before < 100 * MB, `Warden grew by ${((during - before) / MB).toFixed(1)} MB while the target was not reading`);
});
