/**
 * With `policy.connectDecisions.mode: lambda`, Warden asks the policy decision function whether an agent
 * may connect, and decides its statements in process. node-postgres logs in through Warden; the function
 * is the real handler behind a local stand-in for the Lambda Invoke API (no Lambda emulator exists here;
 * see test/helpers/lambda-invoke-server.ts).
 *
 * Proves: a permitted agent logs in after exactly one invocation and its statements cost none; an agent
 * the function denies is refused with 42501; with the function unreachable every login is refused (fail
 * closed).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startLambdaInvokeServer, type LambdaInvokeServer } from '../../helpers/lambda-invoke-server.ts';
import { DEFAULT_POLICY_DIR, startTestWarden, type TestWarden } from '../../helpers/warden.ts';

type HandlerModule = typeof import('../../../functions/policy-decision/handler.ts');

process.env.POWERTOOLS_LOG_LEVEL ??= 'ERROR';
// The SDK signs every request: any credentials will do for the stand-in.
process.env.AWS_ACCESS_KEY_ID = 'AKIDWARDENTEST';
process.env.AWS_SECRET_ACCESS_KEY = 'warden-test-secret';
delete process.env.AWS_SESSION_TOKEN;

describe('connect decided by the policy decision function', { timeout: 60_000 }, () => {
  let lambda: LambdaInvokeServer;
  let w: TestWarden;

  before(async () => {
    const { handler } = (await import(new URL('../../../functions/policy-decision/handler.ts', import.meta.url).href)) as HandlerModule;
    lambda = await startLambdaInvokeServer({ 'policy-decision': handler });
    w = await startTestWarden({
      policyDir: DEFAULT_POLICY_DIR,
      config: { policy: { connectDecisions: { mode: 'lambda', functionName: 'policy-decision', region: 'us-east-1', endpoint: lambda.url, timeoutMs: 1000 } } },
    });
  });
  after(async () => {
    await w?.stop();
    await lambda?.close();
  });

  async function login(groups: string[]): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'agent', database: 'appdb', password: await w.token('agent', { groups }), ssl: { rejectUnauthorized: false } });
    await c.connect();
    return c;
  }

  test('a reader logs in after one invocation; its statements are decided in process', async () => {
    const before = lambda.requests.length;

    const c = await login(['readers']);
    try {
      const r = await c.query('SELECT 1 AS one');
      await assert.rejects(c.query('DROP TABLE IF EXISTS nothing'), { code: '42501' });

      assert.deepEqual(r.rows, [{ one: 1 }]);
    } finally {
      await c.end();
    }
    const seen = lambda.requests.slice(before);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.payload, {
      action: 'connect',
      principal: { issuer: w.gw.devIssuerUrl, subject: 'agent', groups: ['readers'] },
      target: { name: 'appdb', kind: 'postgres', environment: 'development' },
    });
  });

  test('an agent in no group is refused at login with 42501', async () => {
    const before = lambda.requests.length;

    await assert.rejects(login([]), (err: Error & { code?: string }) => {
      assert.equal(err.code, '42501');
      assert.match(err.message, /not permitted to connect to target "appdb": no policy permits connect/);
      return true;
    });

    assert.equal(lambda.requests.length, before + 1);
  });

  test('with the function unreachable, logins are refused (fail closed)', async () => {
    await lambda.close();
    const started = performance.now();

    await assert.rejects(login(['readers']), (err: Error & { code?: string }) => {
      assert.equal(err.code, '42501');
      assert.match(err.message, /the policy decision point is unavailable/);
      return true;
    });

    assert.ok(performance.now() - started < 5000);
  });
});
