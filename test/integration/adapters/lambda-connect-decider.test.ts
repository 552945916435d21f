/**
 * LambdaConnectDecider against the real policy decision handler, through the real AWS SDK client.
 *
 * No Lambda emulator exists in this environment, so a local HTTP server (test/helpers/lambda-invoke-server.ts)
 * stands in for the Lambda service at the level of its HTTP API (the Invoke operation): the SDK signs,
 * sends and parses exactly as against AWS, and the handler runs in this process as the runtime would call it.
 *
 * Proves: connect allowed and denied as the policies say; statements decided in process without any
 * invocation; and every failure (the function throwing, no answer in time, an unknown function, the
 * service unreachable, an error or malformed answer) throws, which the proxy turns into a denial.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { loadPolicyDirectory } from '../../../adapters/local/policy-files.ts';
import {
  LambdaConnectDecider,
  PolicyLambdaAnswerError,
  PolicyLambdaFunctionError,
  PolicyLambdaInvokeError,
  PolicyLambdaTimeoutError,
} from '../../../adapters/aws/lambda-connect-decider.ts';
import type { Principal } from '../../../core/identity/principal.ts';
import { CedarDecider } from '../../../core/policy/cedar-decider.ts';
import type { TargetRef } from '../../../core/policy/decision.ts';
import { classifySql, initSqlParser } from '../../../core/sql/classify.ts';
import { startLambdaInvokeServer, type LambdaInvokeServer } from '../../helpers/lambda-invoke-server.ts';
import { DEFAULT_POLICY_DIR } from '../../helpers/warden.ts';

type HandlerModule = typeof import('../../../functions/policy-decision/handler.ts');

process.env.POWERTOOLS_LOG_LEVEL ??= 'ERROR';

const principal = (groups: string[]): Principal => ({ issuer: 'https://issuer.example', subject: 'agent-7', groups, username: 'agent-7', claims: {} });
const target: TargetRef = { name: 'appdb', kind: 'postgres', environment: 'development' };
const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('LambdaConnectDecider through the Lambda Invoke API', { timeout: 30_000 }, () => {
  let server: LambdaInvokeServer;
  let client: LambdaClient;
  let local: CedarDecider;

  before(async () => {
    const { handler } = (await import(new URL('../../../functions/policy-decision/handler.ts', import.meta.url).href)) as HandlerModule;
    await initSqlParser();
    local = new CedarDecider(loadPolicyDirectory(DEFAULT_POLICY_DIR));
    server = await startLambdaInvokeServer({
      'policy-decision': handler,
      failing: () => {
        throw new TypeError('policies went missing');
      },
      hanging: never,
      'error-answer': () => ({ statusCode: 400, error: { code: 'InvalidRequest', message: 'principal.subject: Invalid input' } }),
      malformed: () => ({ statusCode: 200, decision: { effect: 'maybe', policies: 'all' } }),
      'other-version': () => ({ statusCode: 200, decision: { effect: 'allow', policies: ['p'], policyVersion: 'cedar:0000000000000000' } }),
    });
    client = new LambdaClient({ region: 'us-east-1', endpoint: server.url, credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' } });
  });
  after(async () => {
    client?.destroy();
    await server?.close();
  });

  const decider = (functionName: string, o: { timeoutMs?: number; onPolicyVersionMismatch?: (v: { lambda: string; local: string }) => void } = {}): LambdaConnectDecider =>
    new LambdaConnectDecider({ client, functionName, timeoutMs: o.timeoutMs ?? 3000, statements: local, ...(o.onPolicyVersionMismatch ? { onPolicyVersionMismatch: o.onPolicyVersionMismatch } : {}) });

  test('allows an agent in group readers, with the policy and version of the function', async () => {
    const before = server.requests.length;

    const d = await decider('policy-decision').decideConnect(principal(['readers']), target);

    assert.deepEqual({ ...d }, { effect: 'allow', policies: ['connect.warden-groups'], policyVersion: local.version });
    assert.deepEqual(server.requests.slice(before), [
      {
        functionName: 'policy-decision',
        payload: { action: 'connect', principal: { issuer: 'https://issuer.example', subject: 'agent-7', groups: ['readers'] }, target: { name: 'appdb', kind: 'postgres', environment: 'development' } },
      },
    ]);
  });

  test('denies an agent in no group, with the reason', async () => {
    const d = await decider('policy-decision').decideConnect(principal([]), target);

    assert.equal(d.effect, 'deny');
    assert.match(d.reason ?? '', /no policy permits connect/);
  });

  test('an ARN works as the function name', async () => {
    const d = await decider('arn:aws:lambda:us-east-1:123456789012:function:policy-decision').decideConnect(principal(['writers']), target);

    assert.equal(d.effect, 'allow');
  });

  test('statements are decided in process, never by the function', async () => {
    const before = server.requests.length;
    const statement = classifySql('DROP TABLE t').statements[0]!;

    const d = decider('policy-decision').decideStatement(principal(['writers']), target, statement);

    assert.equal(d.effect, 'deny');
    assert.deepEqual(d.policies, ['guard.drop']);
    assert.equal(server.requests.length, before);
  });

  test('the function throwing is an error naming what it threw', async () => {
    await assert.rejects(decider('failing').decideConnect(principal(['readers']), target), (err: unknown) => {
      assert.ok(err instanceof PolicyLambdaFunctionError, String(err));
      assert.equal(err.functionError, 'Unhandled');
      assert.equal(err.errorType, 'TypeError');
      assert.match(err.message, /"failing" failed \(Unhandled, TypeError\): "policies went missing"/);
      return true;
    });
  });

  test('no answer within the timeout is an error, raised on time', async () => {
    const started = performance.now();

    await assert.rejects(decider('hanging', { timeoutMs: 300 }).decideConnect(principal(['readers']), target), PolicyLambdaTimeoutError);

    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 290 && elapsed < 1000, `took ${elapsed.toFixed(0)} ms`);
  });

  test('an unknown function (404) is an error', async () => {
    await assert.rejects(decider('no-such-function').decideConnect(principal(['readers']), target), (err: unknown) => {
      assert.ok(err instanceof PolicyLambdaInvokeError, String(err));
      assert.match(err.message, /ResourceNotFoundException: Function not found/);
      return true;
    });
  });

  test('an error answer from the function is an error, not a decision', async () => {
    await assert.rejects(decider('error-answer').decideConnect(principal(['readers']), target), (err: unknown) => {
      assert.ok(err instanceof PolicyLambdaAnswerError, String(err));
      assert.match(err.message, /status 400 InvalidRequest: "principal\.subject: Invalid input"/);
      return true;
    });
  });

  test('a malformed answer is an error', async () => {
    await assert.rejects(decider('malformed').decideConnect(principal(['readers']), target), PolicyLambdaAnswerError);
  });

  test('a policy version other than the local one is reported once, and the decision still stands', async () => {
    const seen: { lambda: string; local: string }[] = [];
    const d = decider('other-version', { onPolicyVersionMismatch: (v) => seen.push(v) });

    const first = await d.decideConnect(principal(['readers']), target);
    await d.decideConnect(principal(['readers']), target);

    assert.equal(first.effect, 'allow');
    assert.deepEqual(seen, [{ lambda: 'cedar:0000000000000000', local: local.version }]);
    assert.equal(d.lambdaPolicyVersion, 'cedar:0000000000000000');
  });

  test('the Lambda service unreachable is an error within the timeout', async () => {
    const gone = await startLambdaInvokeServer({});
    await gone.close();
    const c = new LambdaClient({ region: 'us-east-1', endpoint: gone.url, credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' } });
    const started = performance.now();
    try {
      await assert.rejects(
        new LambdaConnectDecider({ client: c, functionName: 'policy-decision', timeoutMs: 2000, statements: local }).decideConnect(principal(['readers']), target),
        (err: unknown) => err instanceof PolicyLambdaInvokeError || err instanceof PolicyLambdaTimeoutError,
      );
    } finally {
      c.destroy();
    }
    assert.ok(performance.now() - started < 2500);
  });
});
