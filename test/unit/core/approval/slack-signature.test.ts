/**
 * Slack request signing (v0), with the real algorithm: a request signed with the app's secret within the
 * time window verifies; anything else is refused with a reason code and never throws. Also checked against
 * the worked example of Slack's documentation, so sign and verify cannot agree on a wrong scheme.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { signSlackRequest, verifySlackRequest, type SlackRequestToVerify } from '../../../../core/approval/slack-signature.ts';

const SECRET = '8f742231b10e8888abcd99yyyzzz85a5';
const NOW = new Date('2030-05-01T10:00:00.000Z');
const nowSeconds = Math.floor(NOW.getTime() / 1000);
const BODY = 'payload=%7B%22type%22%3A%22block_actions%22%7D';

function signed(o: { body?: string; timestamp?: number | string; secret?: string } = {}): SlackRequestToVerify {
  const timestamp = String(o.timestamp ?? nowSeconds);
  const rawBody = o.body ?? BODY;
  return { rawBody, timestamp, signature: signSlackRequest({ rawBody, timestamp, signingSecret: o.secret ?? SECRET }), signingSecret: SECRET, now: NOW };
}

describe('verifySlackRequest', () => {
  test("matches the example of Slack's documentation", () => {
    const rawBody =
      'token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c';

      const sig = signSlackRequest({ rawBody, timestamp: '1531420618', signingSecret: SECRET });

      assert.equal(sig, 'v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503');
      assert.deepEqual(verifySlackRequest({ rawBody, timestamp: '1531420618', signature: sig, signingSecret: SECRET, now: new Date(1531420618_000) }), { ok: true, timestamp: 1531420618 });
  });

  test('a request signed with the secret, now, verifies; as bytes or as text', () => {
    const r = signed();

    assert.deepEqual(verifySlackRequest(r), { ok: true, timestamp: nowSeconds });
    assert.equal(verifySlackRequest({ ...r, rawBody: Buffer.from(BODY) }).ok, true);
  });

  test('a forged signature of the right shape is refused', () => {
    assert.deepEqual(verifySlackRequest({ ...signed(), signature: `v0=${'a'.repeat(64)}` }), { ok: false, reason: 'signature_mismatch' });
  });

  test('a signature made with another secret is refused', () => {
    assert.deepEqual(verifySlackRequest(signed({ secret: 'not-the-apps-secret' })), { ok: false, reason: 'signature_mismatch' });
  });

  test('a changed body or timestamp no longer matches its signature', () => {
    const r = signed();

    assert.equal(verifySlackRequest({ ...r, rawBody: `${BODY}&x=1` }).ok, false);
    assert.deepEqual(verifySlackRequest({ ...r, timestamp: String(nowSeconds - 1) }), { ok: false, reason: 'signature_mismatch' });
  });

  test('a stale timestamp is refused, at the tolerance boundary and past it', () => {
    assert.equal(verifySlackRequest(signed({ timestamp: nowSeconds - 300 })).ok, true);
    assert.deepEqual(verifySlackRequest(signed({ timestamp: nowSeconds - 301 })), { ok: false, reason: 'stale_timestamp' });
    assert.deepEqual(verifySlackRequest({ ...signed({ timestamp: nowSeconds - 61 }), toleranceSeconds: 60 }), { ok: false, reason: 'stale_timestamp' });
  });

  test('a replay of an old, correctly signed request is refused', () => {
    const captured = signed({ timestamp: nowSeconds - 3600 });

    assert.deepEqual(verifySlackRequest(captured), { ok: false, reason: 'stale_timestamp' });
  });

  test('a timestamp from the future beyond clock skew is refused', () => {
    assert.equal(verifySlackRequest(signed({ timestamp: nowSeconds + 60 })).ok, true);
    assert.deepEqual(verifySlackRequest(signed({ timestamp: nowSeconds + 61 })), { ok: false, reason: 'future_timestamp' });
    assert.deepEqual(verifySlackRequest(signed({ timestamp: nowSeconds + 86_400 })), { ok: false, reason: 'future_timestamp' });
  });

  test('signatures of another length are refused, shorter and longer', () => {
    const r = signed();

    assert.deepEqual(verifySlackRequest({ ...r, signature: r.signature!.slice(0, -1) }), { ok: false, reason: 'signature_mismatch' });
    assert.deepEqual(verifySlackRequest({ ...r, signature: `${r.signature}0` }), { ok: false, reason: 'signature_mismatch' });
    assert.deepEqual(verifySlackRequest({ ...r, signature: 'v0=' }), { ok: false, reason: 'signature_mismatch' });
    assert.deepEqual(verifySlackRequest({ ...r, signature: 'v0=\u00e9' }), { ok: false, reason: 'signature_mismatch' });
  });

  test('missing headers are refused', () => {
    const r = signed();

    assert.deepEqual(verifySlackRequest({ ...r, timestamp: undefined }), { ok: false, reason: 'missing_timestamp' });
    assert.deepEqual(verifySlackRequest({ ...r, timestamp: '' }), { ok: false, reason: 'missing_timestamp' });
    assert.deepEqual(verifySlackRequest({ ...r, signature: undefined }), { ok: false, reason: 'missing_signature' });
    assert.deepEqual(verifySlackRequest({ ...r, signature: '' }), { ok: false, reason: 'missing_signature' });
  });

  test('timestamps that are not plain Unix seconds are refused', () => {
    for (const timestamp of ['abc', '-1', `${nowSeconds}.5`, ` ${nowSeconds}`, '1e9', `0x${nowSeconds.toString(16)}`, '9'.repeat(40)]) {
      assert.deepEqual(verifySlackRequest(signed({ timestamp })), { ok: false, reason: 'malformed_timestamp' }, timestamp);
    }
  });

  test('another signature version is refused', () => {
    const r = signed();

    assert.deepEqual(verifySlackRequest({ ...r, signature: r.signature!.replace(/^v0=/, 'v1=') }), { ok: false, reason: 'unsupported_version' });
  });

  test('an empty signing secret verifies nothing', () => {
    const rawBody = BODY;
    const timestamp = String(nowSeconds);
    const signature = signSlackRequest({ rawBody, timestamp, signingSecret: '' });

    assert.deepEqual(verifySlackRequest({ rawBody, timestamp, signature, signingSecret: '', now: NOW }), { ok: false, reason: 'missing_secret' });
  });

  test('hostile input of the wrong types is an answer, not an exception', () => {
    const r = signed();
    const weird = [{ ...r, timestamp: 42 }, { ...r, signature: ['v0=1'] }, { ...r, signingSecret: undefined }] as unknown as SlackRequestToVerify[];

    for (const w of weird) assert.equal(verifySlackRequest(w).ok, false);
  });
});
