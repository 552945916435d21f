/**
 * SecretsManagerStore with the real Secrets Manager SDK client and a fake service behind it (there is no
 * local Secrets Manager emulator: test/helpers/fake-secrets-manager.ts answers GetSecretValue at the SDK's
 * HTTP boundary, so the SDK's serialisation and error parsing are real).
 *
 * Proves: a credential is read once per TTL (and once for concurrent logins), read again after the TTL;
 * after the target refuses a credential, `invalidate` makes the next read follow a rotation in either of
 * its states (finished: the new AWSCURRENT; between setSecret and finishSecret: AWSPENDING, then back to
 * AWSCURRENT); a missing secret is SecretNotFoundError; a malformed one is SecretInvalidError whose
 * message never holds the value; an outage serves the cached credential for a bounded time, with a
 * warning that holds no value either.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SecretsManagerStore, SecretStoreUnavailableError } from '../../../../adapters/aws/secrets-manager-store.ts';
import { SecretInvalidError, SecretNotFoundError } from '../../../../core/secrets/secret-store.ts';
import { AwsFault } from '../../../helpers/fake-aws-json.ts';
import { FakeSecretsManager } from '../../../helpers/fake-secrets-manager.ts';

const NAME = 'warden/targets/billing';
const cred = (password: string) => JSON.stringify({ engine: 'postgres', host: 'db.internal', username: 'warden_billing', password, dbname: 'billing' });

function setup(o: { ttlMs?: number; pendingTtlMs?: number; maxStaleMs?: number } = {}) {
  const sm = new FakeSecretsManager();
  let clock = 1_000_000;
  const warnings: { msg: string; fields?: Record<string, unknown> }[] = [];
  const store = new SecretsManagerStore({
    client: sm.client(),
    now: () => clock,
    log: { warn: (msg, fields) => void warnings.push({ msg, ...(fields ? { fields } : {}) }) },
    ...o,
  });
  return { sm, store, warnings, advance: (ms: number) => void (clock += ms) };
}

describe('SecretsManagerStore', () => {
  test('reads the JSON credential once per TTL, and once for concurrent reads', async () => {
    const { sm, store, advance } = setup({ ttlMs: 60_000 });
    sm.put(NAME, cred('first-Password'));

    const all = await Promise.all([store.getCredential(NAME), store.getCredential(NAME), store.getCredential(NAME)]);
    assert.deepEqual(all[0], { username: 'warden_billing', password: 'first-Password' });
    assert.deepEqual(all[1], all[0]);
    assert.equal(sm.reads(NAME), 1);

    advance(59_999);
    await store.getCredential(NAME);
    assert.equal(sm.reads(NAME), 1, 'within the TTL: from the cache');

    sm.put(NAME, cred('second-Password'));
    advance(2);
    assert.equal((await store.getCredential(NAME)).password, 'second-Password', 'past the TTL: read again');
    assert.equal(sm.reads(NAME), 2);
    assert.deepEqual(sm.calls.map((c) => c.versionStage), ['AWSCURRENT', 'AWSCURRENT']);
  });

  test('the default TTL is five minutes', async () => {
    const { sm, store, advance } = setup();
    sm.put(NAME, cred('p'));
    await store.getCredential(NAME);
    advance(5 * 60_000 - 1);
    await store.getCredential(NAME);
    assert.equal(sm.reads(NAME), 1);
    advance(2);
    await store.getCredential(NAME);
    assert.equal(sm.reads(NAME), 2);
  });

  test('invalidate after a finished rotation: the next read returns the new AWSCURRENT', async () => {
    const { sm, store } = setup();
    sm.put(NAME, cred('old-Password'));
    assert.equal((await store.getCredential(NAME)).password, 'old-Password');
    sm.startRotation(NAME, cred('new-Password'));
    sm.finishRotation(NAME);
    assert.equal((await store.getCredential(NAME)).password, 'old-Password', 'cached until told otherwise');

    store.invalidate(NAME); // the target refused old-Password
    assert.equal((await store.getCredential(NAME)).password, 'new-Password');
    assert.equal(sm.reads(NAME, 'AWSPENDING'), 0, 'AWSCURRENT changed: no need to look at AWSPENDING');
  });

  test('invalidate in the middle of a rotation: AWSPENDING is used until finishSecret, then AWSCURRENT again', async () => {
    const { sm, store, advance } = setup({ pendingTtlMs: 10_000 });
    sm.put(NAME, cred('old-Password'));
    await store.getCredential(NAME);
    sm.startRotation(NAME, cred('pending-Password')); // setSecret has changed the database to it

    store.invalidate(NAME);
    assert.equal((await store.getCredential(NAME)).password, 'pending-Password');
    assert.deepEqual(sm.calls.map((c) => c.versionStage), ['AWSCURRENT', 'AWSCURRENT', 'AWSPENDING']);
    assert.equal((await store.getCredential(NAME)).password, 'pending-Password', 'cached (briefly)');

    sm.finishRotation(NAME);
    advance(10_001);
    assert.equal((await store.getCredential(NAME)).password, 'pending-Password', 'now as AWSCURRENT');
    assert.equal(sm.calls.at(-1)?.versionStage, 'AWSCURRENT');
  });

  test('invalidate without a rotation: the same AWSCURRENT comes back (nothing better exists)', async () => {
    const { sm, store } = setup();
    sm.put(NAME, cred('only-Password'));
    await store.getCredential(NAME);
    store.invalidate(NAME);
    assert.equal((await store.getCredential(NAME)).password, 'only-Password');
    assert.equal(sm.reads(NAME, 'AWSPENDING'), 1);
    assert.equal(sm.reads(NAME), 3);
  });

  test('a missing secret is SecretNotFoundError naming it', async () => {
    const { store } = setup();
    await assert.rejects(store.getCredential('warden/targets/nope'), (err: unknown) => err instanceof SecretNotFoundError && err.secretName === 'warden/targets/nope');
  });

  test('a malformed secret is SecretInvalidError, and its message never holds the value', async () => {
    const { sm, store } = setup();
    const cases: [string, string | { binary: Buffer }, RegExp][] = [
      ['not-json', 'hunter2-Not-JSON {', /not valid JSON/],
      ['no-password', JSON.stringify({ username: 'u', passwd: 'hunter2-Typo' }), /password must be a string/],
      ['no-username', JSON.stringify({ password: 'hunter2-NoUser' }), /username/],
      ['a-string', JSON.stringify('hunter2-JustAString'), /expected an object/],
      ['binary', { binary: Buffer.from('hunter2-Binary') }, /binary/],
    ];
    for (const [name, value, problem] of cases) {
      sm.put(name, value);
      await assert.rejects(store.getCredential(name), (err: unknown) => {
        assert.ok(err instanceof SecretInvalidError, `${name}: ${String(err)}`);
        assert.match(err.message, problem);
        assert.doesNotMatch(`${err.message} ${String(err.stack)}`, /hunter2/, `${name} leaks the value`);
        return true;
      });
    }
  });

  test('an outage serves the cached credential for a bounded time, and never logs a value', async () => {
    const { sm, store, warnings, advance } = setup({ ttlMs: 1000, maxStaleMs: 60_000 });
    sm.put(NAME, cred('cached-Password'));
    await store.getCredential(NAME);
    sm.failWith = new AwsFault('ThrottlingException', 'Rate exceeded');

    advance(1001);
    assert.equal((await store.getCredential(NAME)).password, 'cached-Password');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.msg, /cannot be read/);
    assert.equal(warnings[0]!.fields?.error, 'ThrottlingException');
    const readsDuringPause = sm.reads(NAME);
    await store.getCredential(NAME);
    assert.equal(sm.reads(NAME), readsDuringPause, 'no new attempt at every login while it is down');

    advance(60_000);
    await assert.rejects(store.getCredential(NAME), (err: unknown) => err instanceof SecretStoreUnavailableError && /ThrottlingException/.test(err.message));
    await assert.rejects(store.getCredential('warden/targets/never-read'), SecretStoreUnavailableError);
    assert.doesNotMatch(JSON.stringify(warnings), /cached-Password/);

    sm.failWith = undefined;
    assert.equal((await store.getCredential(NAME)).password, 'cached-Password', 'back once it answers');
  });
});
