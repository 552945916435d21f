/**
 * An agent of a real third-party issuer (oidc-provider, client-credentials grant) logs in with psql,
 * its access token as the password; the dev issuer's tokens keep working beside it (several issuers).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { listSessions, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { startOidcProvider, type TestOidcProvider } from '../../helpers/oidc-provider.ts';
import { startTestWarden, type TestWarden } from '../../helpers/warden.ts';

const run = promisify(execFile);
let op: TestOidcProvider;
let w: TestWarden;

before(async () => {
  op = await startOidcProvider({ audience: 'urn:warden:db', clients: ['reporting-bot', 'other-bot'] });
  w = await startTestWarden({ config: { identity: { devIssuer: { enabled: true, port: 0 }, issuers: [{ issuer: op.issuer, audiences: [op.audience], algorithms: ['RS256'] }] } } });
});

after(async () => {
  await w?.stop();
  await op?.close();
});

const psql = (conninfo: string, password: string, sql: string) =>
  run('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', conninfo, '-c', sql], { env: { ...process.env, PGPASSWORD: password }, timeout: 20_000 });

test('psql logs in with an oidc-provider client-credentials token and is audited under that issuer', async () => {
  const token = await op.token('reporting-bot');
  const { stdout } = await psql(w.conninfo('reporting-bot'), token, 'select 40 + 2');
  assert.equal(stdout.trim(), '42');
  // psql has exited; Warden records the session's end (with the principal in the index) right after.
  let mine: Awaited<ReturnType<typeof listSessions>> = [];
  for (let i = 0; i < 100 && mine.length === 0; i++) {
    mine = (await listSessions(w.loaded.auditDir)).filter((s) => s.principal?.subject === 'reporting-bot');
    if (mine.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(mine.length, 1);
  assert.equal(mine[0]!.principal?.issuer, op.issuer);
  const trail = await readSessionEvents(w.loaded.auditDir, mine[0]!.sessionId);
  assert.ok(trail.events.some((e) => e.type === 'statement' && e.text === 'select 40 + 2'));
});

test("another client's token cannot log in as this client", async () => {
  const token = await op.token('other-bot');
  await assert.rejects(psql(w.conninfo('reporting-bot'), token, 'select 1'), /user name must match the token/);
});
