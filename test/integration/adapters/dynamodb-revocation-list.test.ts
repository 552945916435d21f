/**
 * DynamoDbRevocationList against a DynamoDB API (dynalite on 127.0.0.1) through the real AWS SDK v3 clients.
 *
 * Proves: a revocation written to the table is answered `revoked` after the next poll (and a change
 * notification fires), and its removal restores `ok`; the Scan pages through the whole table; when the
 * table cannot be read, answers come from the last complete read until the tolerance runs out and are
 * `unavailable` after it, and a read that works again restores them; a table unreachable from the start
 * rejects `ready` after the tolerance; an item whose identity cannot be read fails the poll (fail closed)
 * rather than being skipped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeleteTableCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { deleteRevocation, DynamoDbRevocationList, putRevocation } from '../../../adapters/aws/dynamodb-revocation-list.ts';
import type { RevocationLogger } from '../../../core/identity/revocation-document.ts';
import { startDynalite, TEST_CREDENTIALS, TEST_REGION, type LocalDynamoDb } from '../../helpers/dynalite.ts';
import { freePort } from '../../helpers/warden.ts';

const ISS = 'https://idp.example.com';
const POLL_MS = 100;
const TOLERANCE_MS = 600;
let tables = 0;

function capture(): RevocationLogger & { lines: { level: string; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const push = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, ...(fields ? { fields } : {}) });
  return { lines, info: push('info'), warn: push('warn'), error: push('error') };
}

function nextChange(list: DynamoDbRevocationList, ms = 3000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no change within ${ms} ms`));
    }, ms);
    const off = list.onChange(() => {
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

async function waitFor(cond: () => boolean, ms: number): Promise<number> {
  const started = Date.now();
  while (!cond()) {
    if (Date.now() - started > ms) assert.fail(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - started;
}

describe('DynamoDbRevocationList on dynalite', { timeout: 30_000 }, () => {
  let db: LocalDynamoDb;

  before(async () => {
    db = await startDynalite();
  });
  after(async () => {
    await db?.close();
  });

  async function newTable(): Promise<string> {
    const name = `revocations-${++tables}`;
    await db.createTable(name, 'identity');
    return name;
  }

  test('a revocation appears after a poll, and its removal restores access', async () => {
    const table = await newTable();
    const list = new DynamoDbRevocationList({ client: db.client, tableName: table, pollIntervalMs: POLL_MS, toleranceMs: TOLERANCE_MS });
    try {
      await list.ready;
      assert.equal(list.check(ISS, 'ci-bot'), 'ok');

      const changed = nextChange(list);
      const written = Date.now();
      assert.equal(await putRevocation(db.client, table, { issuer: ISS, subject: 'ci-bot', revokedAt: new Date().toISOString(), reason: 'key leaked', revokedBy: 'alice' }), true);
      await changed;
      const seenAfter = Date.now() - written;
      assert.equal(list.check(ISS, 'ci-bot'), 'revoked');
      assert.equal(list.check(ISS, 'other-bot'), 'ok');
      assert.equal(list.check('https://other.example.com', 'ci-bot'), 'ok');
      assert.ok(seenAfter < POLL_MS * 5, `seen after ${seenAfter} ms`);
      assert.equal(await putRevocation(db.client, table, { issuer: ISS, subject: 'ci-bot', revokedAt: new Date().toISOString() }), false, 'a second revoke keeps the first entry');

      const lifted = nextChange(list);
      assert.equal(await deleteRevocation(db.client, table, ISS, 'ci-bot'), true);
      await lifted;
      assert.equal(list.check(ISS, 'ci-bot'), 'ok');
      assert.equal(await deleteRevocation(db.client, table, ISS, 'ci-bot'), false);
    } finally {
      await list.close();
    }
  });

  test('the Scan reads every page of the table', async () => {
    const table = await newTable();
    for (let i = 0; i < 25; i++) await putRevocation(db.client, table, { issuer: ISS, subject: `bot-${i}`, revokedAt: '2030-01-01T00:00:00.000Z' });
    const list = new DynamoDbRevocationList({ client: db.client, tableName: table, pollIntervalMs: POLL_MS, toleranceMs: TOLERANCE_MS, scanPageLimit: 4 });
    try {
      await list.ready;
      for (let i = 0; i < 25; i++) assert.equal(list.check(ISS, `bot-${i}`), 'revoked', `bot-${i}`);
      assert.equal(list.check(ISS, 'bot-25'), 'ok');
    } finally {
      await list.close();
    }
  });

  test('a table that cannot be read: last answers until the tolerance, unavailable after it, back when it reads again', async () => {
    const table = await newTable();
    await putRevocation(db.client, table, { issuer: ISS, subject: 'ci-bot', revokedAt: '2030-01-01T00:00:00.000Z' });
    const log = capture();
    const list = new DynamoDbRevocationList({ client: db.client, tableName: table, pollIntervalMs: POLL_MS, toleranceMs: TOLERANCE_MS, log });
    try {
      await list.ready;
      await db.client.send(new DeleteTableCommand({ TableName: table }));
      const lostAt = Date.now();
      await waitFor(() => log.lines.some((l) => l.level === 'warn'), 2000);
      assert.equal(list.check(ISS, 'ci-bot'), 'revoked', 'within the tolerance the last complete read answers');
      assert.equal(list.check(ISS, 'other-bot'), 'ok');

      const waited = await waitFor(() => list.check(ISS, 'other-bot') === 'unavailable', TOLERANCE_MS * 3);
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      assert.ok(Date.now() - lostAt >= TOLERANCE_MS - POLL_MS * 2, `unavailable after ${Date.now() - lostAt} ms (waited ${waited})`);
      await waitFor(() => log.lines.some((l) => l.level === 'error' && /fail closed/.test(l.msg)), 2000);

      await db.createTable(table, 'identity');
      await waitFor(() => list.check(ISS, 'other-bot') === 'ok', 3000);
      assert.equal(list.check(ISS, 'ci-bot'), 'ok', 'the recreated table is empty');
    } finally {
      await list.close();
    }
  });

  test('a table unreachable from the start rejects ready after the tolerance and answers unavailable', async () => {
    const port = await freePort(); // nothing listens there
    const client = new DynamoDBClient({ endpoint: `http://127.0.0.1:${port}`, region: TEST_REGION, credentials: TEST_CREDENTIALS, maxAttempts: 1 });
    const started = Date.now();
    const list = new DynamoDbRevocationList({ client, tableName: 'revocations', pollIntervalMs: POLL_MS, toleranceMs: TOLERANCE_MS });
    try {
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
      await assert.rejects(list.ready, /no complete read/);
      assert.ok(Date.now() - started >= TOLERANCE_MS - 50);
      assert.equal(list.check(ISS, 'ci-bot'), 'unavailable');
    } finally {
      await list.close();
      client.destroy();
    }
  });

  test('an item whose identity cannot be read fails the poll instead of being skipped', async () => {
    const table = await newTable();
    await putRevocation(db.client, table, { issuer: ISS, subject: 'ci-bot', revokedAt: '2030-01-01T00:00:00.000Z' });
    const log = capture();
    const list = new DynamoDbRevocationList({ client: db.client, tableName: table, pollIntervalMs: POLL_MS, toleranceMs: TOLERANCE_MS, log });
    try {
      await list.ready;
      await db.client.send(new PutItemCommand({ TableName: table, Item: { identity: { S: `${ISS}|mangled` }, note: { S: 'written by hand' } } }));
      await waitFor(() => log.lines.some((l) => l.level === 'warn' && /reading the table failed/.test(l.msg)), 2000);
      const err = log.lines.find((l) => l.level === 'warn')!.fields?.err as Error;
      assert.equal(err.name, 'RevocationItemError');
      assert.match(err.message, /mangled/);
      await waitFor(() => list.check(ISS, 'other-bot') === 'unavailable', TOLERANCE_MS * 3);
    } finally {
      await list.close();
    }
  });
});
