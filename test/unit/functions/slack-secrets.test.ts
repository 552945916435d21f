/**
 * The Slack secret providers of the Slack functions (functions/approval-request/slack-secrets.ts), with
 * Secrets Manager faked at the SDK boundary (there is no local emulator).
 *
 * Proves: without a `*_SECRET_ID` variable the value comes from the variable itself, and a missing one
 * is an ApprovalConfigError naming it; with one, the value is fetched from that secret, cached for the
 * TTL (concurrent calls share one request), fetched again after it; a failed request is passed on and not
 * cached; a secret without a text value is an ApprovalConfigError that names the secret, never a value.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { GetSecretValueCommand, GetSecretValueCommandOutput } from '@aws-sdk/client-secrets-manager';
import { ApprovalConfigError } from '../../../functions/approval-request/approval-request.ts';
import { secretsManagerSecret, slackSecret, type SecretsManagerReader } from '../../../functions/approval-request/slack-secrets.ts';

function fakeSecretsManager(answers: (() => Promise<Partial<GetSecretValueCommandOutput>>)[]): SecretsManagerReader & { ids: string[] } {
  const ids: string[] = [];
  return {
    ids,
    send: async (command: GetSecretValueCommand) => {
      ids.push(command.input.SecretId!);
      const next = answers.shift();
      if (!next) throw new Error('unexpected call');
      return (await next()) as GetSecretValueCommandOutput;
    },
  };
}

test('without a secret id the value is the variable itself; a missing one names the variable', async () => {
  assert.equal(await slackSecret('SLACK_BOT_TOKEN', { SLACK_BOT_TOKEN: 'xoxb-local' })(), 'xoxb-local');
  await assert.rejects(slackSecret('SLACK_SIGNING_SECRET', {})(), (err: unknown) => err instanceof ApprovalConfigError && err.message === 'SLACK_SIGNING_SECRET is not set');
});

test('with a secret id the value is read from Secrets Manager, once per TTL, concurrent calls sharing the request', async () => {
  const sm = fakeSecretsManager([async () => ({ SecretString: 'xoxb-first\n' }), async () => ({ SecretString: 'xoxb-second' })]);
  const env = { SLACK_BOT_TOKEN_SECRET_ID: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:warden/slack/bot-token-AbCdEf', SLACK_BOT_TOKEN: 'ignored' };
  let clock = 0;
  const read = slackSecret('SLACK_BOT_TOKEN', env, sm);
  assert.deepEqual(await Promise.all([read(), read()]), ['xoxb-first', 'xoxb-first']);
  assert.equal(sm.ids.length, 1);
  assert.equal(sm.ids[0], env.SLACK_BOT_TOKEN_SECRET_ID);
  const timed = secretsManagerSecret('s', fakeSecretsManager([async () => ({ SecretString: 'v1' }), async () => ({ SecretString: 'v2' })]), { ttlMs: 1000, now: () => clock });
  assert.equal(await timed(), 'v1');
  clock = 999;
  assert.equal(await timed(), 'v1');
  clock = 1000;
  assert.equal(await timed(), 'v2');
});

test('a failed request is passed on and not cached; an empty secret names the secret', async () => {
  const sm = fakeSecretsManager([
    async () => {
      throw Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    },
    async () => ({ SecretString: 'signing' }),
  ]);
  const read = secretsManagerSecret('warden/slack/signing-secret', sm);
  await assert.rejects(read(), /Rate exceeded/);
  assert.equal(await read(), 'signing');
  const empty = secretsManagerSecret('warden/slack/bot-token', fakeSecretsManager([async () => ({ SecretBinary: new Uint8Array([1]) })]));
  await assert.rejects(empty(), (err: unknown) => err instanceof ApprovalConfigError && err.message === 'secret warden/slack/bot-token holds no text value');
});
