/**
 * The policy decision function, called as the Lambda runtime calls it (`handler(event, context)`): it
 * answers connect and SQL decisions from the shipped policies with the policy ids, the reason, the policy
 * version and any approval requirement; it answers bad input with a 400 that names the field and shows
 * nothing of its internals; an internal failure is a generic 500 that is logged.
 */
import { after, before, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPolicyDirectory } from '../../../adapters/local/policy-files.ts';
import { CedarDecider } from '../../../core/policy/cedar-decider.ts';
import { classifySql, initSqlParser } from '../../../core/sql/classify.ts';
import { MAX_SQL_CHARS } from '../../../functions/policy-decision/decision-request.ts';
import { lambdaContext } from '../../helpers/lambda-invoke-server.ts';

type HandlerModule = typeof import('../../../functions/policy-decision/handler.ts');

// Read at module scope by the handler: set before it is imported. Errors stay visible (and are asserted).
process.env.POWERTOOLS_LOG_LEVEL ??= 'ERROR';
delete process.env.POLICY_DIR;

/** The shipped policy set, which the handler finds by default. */
const DEFAULT_POLICY_DIR = fileURLToPath(new URL('../../../policies', import.meta.url));
const HANDLER_URL = new URL('../../../functions/policy-decision/handler.ts', import.meta.url).href;
/** A fresh copy of the handler module (a new cold start) with the environment as it is now. */
async function coldStart(tag: string): Promise<HandlerModule['handler']> {
  return ((await import(`${HANDLER_URL}?${tag}`)) as HandlerModule).handler;
}

const readers = { issuer: 'https://issuer.example', subject: 'report-bot', groups: ['readers'] };
const writers = { issuer: 'https://issuer.example', subject: 'etl-bot', groups: ['writers'] };
const nobody = { issuer: 'https://issuer.example', subject: 'stray-bot', groups: [] };
const dev = { name: 'appdb', kind: 'postgres', environment: 'development' } as const;
const prod = { name: 'ledger', kind: 'postgres', environment: 'production' } as const;

interface Answer {
  statusCode: number;
  decision?: {
    effect: string;
    policies: string[];
    reason?: string;
    policyVersion: string;
    approval?: { approvers: string[]; approvals: number };
    statements?: { text: string; operation: string; command: string; effect: string; policies: string[]; reason?: string }[];
  };
  error?: { code: string; message: string };
}

describe('policy decision function', () => {
  let handler: HandlerModule['handler'];
  let version: string;
  let local: CedarDecider;

  before(async () => {
    handler = (await import(HANDLER_URL) as HandlerModule).handler;
    local = new CedarDecider(loadPolicyDirectory(DEFAULT_POLICY_DIR));
    version = local.version;
    await initSqlParser();
  });

  const invoke = async (event: unknown): Promise<Answer> => (await handler(event, lambdaContext('policy-decision'))) as Answer;

  describe('connect', () => {
    test('an agent in group readers may connect', async () => {
      const a = await invoke({ action: 'connect', principal: readers, target: dev });

      assert.deepEqual(a, { statusCode: 200, decision: { effect: 'allow', policies: ['connect.warden-groups'], policyVersion: version } });
    });

    test('an agent in no group is denied, with the reason', async () => {
      const a = await invoke({ action: 'connect', principal: nobody, target: dev });

      assert.equal(a.statusCode, 200);
      assert.equal(a.decision?.effect, 'deny');
      assert.deepEqual(a.decision?.policies, []);
      assert.match(a.decision?.reason ?? '', /no policy permits connect on target "appdb"/);
      assert.equal(a.decision?.policyVersion, version);
    });

    test('answers what the proxy decides in process with the same policies', async () => {
      for (const principal of [readers, writers, nobody]) {
        const a = await invoke({ action: 'connect', principal, target: prod });
        const d = local.decideConnect({ ...principal, groups: [...principal.groups], username: principal.subject, claims: {} }, prod);

        assert.deepEqual(a.decision, JSON.parse(JSON.stringify(d)), principal.subject);
      }
    });
  });

  describe('statements', () => {
    test('a read by a reader is allowed, naming the policy and the version', async () => {
      const a = await invoke({ action: 'statement', principal: readers, target: dev, sql: 'SELECT * FROM accounts WHERE id = 1' });

      assert.deepEqual(a, {
        statusCode: 200,
        decision: {
          effect: 'allow',
          policies: ['sql.read.readers'],
          policyVersion: version,
          statements: [{ text: 'SELECT * FROM accounts WHERE id = 1', operation: 'read', command: 'SELECT', effect: 'allow', policies: ['sql.read.readers'] }],
        },
      });
    });

    test('DROP TABLE is denied with the guard policy and its reason', async () => {
      const a = await invoke({ action: 'statement', principal: writers, target: dev, sql: 'DROP TABLE t' });

      assert.equal(a.decision?.effect, 'deny');
      assert.deepEqual(a.decision?.policies, ['guard.drop']);
      assert.equal(a.decision?.reason, 'DROP is not allowed through Warden');
      assert.equal(a.decision?.policyVersion, version);
      assert.equal(a.decision?.statements?.[0]?.command, 'DROP TABLE');
    });

    test('a write by a reader is denied', async () => {
      const a = await invoke({ action: 'statement', principal: readers, target: dev, sql: "UPDATE t SET x = 1 WHERE id = 2" });

      assert.equal(a.decision?.effect, 'deny');
      assert.match(a.decision?.reason ?? '', /no policy permits sql\.write/);
    });

    test('a writer deleting a row on production needs a db-approver', async () => {
      const a = await invoke({ action: 'statement', principal: writers, target: prod, sql: 'DELETE FROM t WHERE id = 1' });

      assert.equal(a.statusCode, 200);
      assert.equal(a.decision?.effect, 'approval');
      assert.deepEqual(a.decision?.approval, { approvers: ['db-approvers'], approvals: 1 });
      assert.deepEqual(a.decision?.policies, ['sql.write.production-approval']);
      assert.equal(a.decision?.reason, "changes to production data need a database approver's approval");
    });

    test('several statements are decided one by one; a denial answers for the text before a hold', async () => {
      const a = await invoke({ action: 'statement', principal: writers, target: prod, sql: 'SELECT 1; DELETE FROM t WHERE id = 1; DROP TABLE t' });

      assert.deepEqual(
        a.decision?.statements?.map((s) => [s.text, s.operation, s.effect, s.policies]),
        [
          ['SELECT 1', 'read', 'allow', ['sql.read.readers']],
          ['DELETE FROM t WHERE id = 1', 'write', 'approval', ['sql.write.production-approval']],
          ['DROP TABLE t', 'ddl', 'deny', ['guard.drop']],
        ],
      );
      assert.equal(a.decision?.effect, 'deny', 'no approval could make the DROP run');
      assert.deepEqual(a.decision?.policies, ['guard.drop']);
      assert.equal(a.decision?.approval, undefined);

      const held = await invoke({ action: 'statement', principal: writers, target: prod, sql: 'SELECT 1; DELETE FROM t WHERE id = 1' });
      assert.equal(held.decision?.effect, 'approval');
      assert.deepEqual(held.decision?.approval, { approvers: ['db-approvers'], approvals: 1 });
    });

    test('several allowed statements: allow, with every deciding policy', async () => {
      const a = await invoke({ action: 'statement', principal: writers, target: dev, sql: "BEGIN; INSERT INTO t VALUES (1); SELECT * FROM t; COMMIT" });

      assert.equal(a.decision?.effect, 'allow');
      assert.equal(a.decision?.statements?.length, 4);
      assert.ok(a.decision?.statements?.every((s) => s.effect === 'allow'));
      assert.ok(a.decision?.policies.includes('sql.write.writers'));
      assert.equal(a.decision?.reason, undefined);
    });

    test('SQL that does not parse is not a client error: it is unknown and denied by policy', async () => {
      const a = await invoke({ action: 'statement', principal: writers, target: dev, sql: 'SELEC * FROM t' });

      assert.equal(a.statusCode, 200);
      assert.equal(a.decision?.effect, 'deny');
      assert.deepEqual(a.decision?.policies, ['guard.unparseable']);
      assert.equal(a.decision?.statements?.[0]?.operation, 'unknown');
    });

    test('each statement answer agrees with the in-process decision', async () => {
      const sql = 'SELECT 1; UPDATE t SET x = 1; COPY t TO PROGRAM \'cat\'';
      const a = await invoke({ action: 'statement', principal: writers, target: dev, sql });
      const p = { ...writers, groups: [...writers.groups], username: writers.subject, claims: {} };
      const expected = classifySql(sql).statements.map((s) => local.decideStatement(p, dev, s));

      assert.deepEqual(a.decision?.statements?.map((s) => [s.effect, s.policies, s.reason]), expected.map((d) => [d.effect, [...d.policies], d.reason]));
    });
  });

  describe('invalid input', () => {
    const cases: [string, unknown, RegExp][] = [
      ['missing principal', { action: 'connect', target: dev }, /principal: .*expected object/],
      ['missing subject', { action: 'connect', principal: { issuer: 'i', groups: [] }, target: dev }, /principal\.subject: /],
      ['subject of the wrong type', { action: 'connect', principal: { ...readers, subject: 42 }, target: dev }, /principal\.subject: .*expected string/],
      ['groups not a list', { action: 'connect', principal: { ...readers, groups: 'readers' }, target: dev }, /principal\.groups: .*expected array/],
      ['an unknown environment', { action: 'connect', principal: readers, target: { ...dev, environment: 'prod' } }, /target\.environment: /],
      ['an unknown action', { action: 'drop', principal: readers, target: dev }, /action: .*'connect' \| 'statement'/],
      ['no action', { principal: readers, target: dev }, /action: /],
      ['an extra field', { action: 'connect', principal: readers, target: dev, sql: 'SELECT 1' }, /sql: unknown field/],
      ['an extra nested field', { action: 'connect', principal: { ...readers, role: 'admin' }, target: dev }, /principal\.role: unknown field/],
      ['a statement without sql', { action: 'statement', principal: readers, target: dev }, /sql: .*expected string/],
      ['sql that is not text', { action: 'statement', principal: readers, target: dev, sql: ['SELECT 1'] }, /sql: .*expected string/],
      ['SQL for an ssh target', { action: 'statement', principal: readers, target: { ...dev, kind: 'ssh' }, sql: 'SELECT 1' }, /target\.kind: /],
      ['huge sql', { action: 'statement', principal: readers, target: dev, sql: 'x'.repeat(MAX_SQL_CHARS + 1) }, /sql: Too big/],
      ['a string event', 'SELECT 1', /\(request\): .*expected object, received string/],
      ['a null event', null, /\(request\): .*expected object/],
      ['an array event', [{ action: 'connect' }], /\(request\): .*expected object, received array/],
      ['a number event', 42, /\(request\): .*expected object/],
    ];
    for (const [name, event, field] of cases) {
      test(`${name}: 400 naming the field, nothing internal`, async () => {
        const a = await invoke(event);

        assert.equal(a.statusCode, 400);
        assert.equal(a.error?.code, 'InvalidRequest');
        assert.match(a.error?.message ?? '', field);
        assert.deepEqual(Object.keys(a).sort(), ['error', 'statusCode']);
        assertNothingInternal(JSON.stringify(a));
      });
    }

    test('an oversized unknown key is echoed only in part', async () => {
      const a = await invoke({ action: 'connect', principal: readers, target: dev, ['k'.repeat(10_000)]: 1 });

      assert.equal(a.statusCode, 400);
      assert.ok((a.error?.message.length ?? 0) < 200, a.error?.message);
    });
  });

  describe('internal failures', () => {
    test('an error inside is a generic 500, logged with its details', async () => {
      const boom = mock.method(CedarDecider.prototype, 'decideConnect', () => {
        throw new Error(`cedar exploded reading ${process.cwd()}/policies/connect.cedar`);
      });
      const logged: string[] = [];
      const capture = (chunk: unknown): boolean => (logged.push(String(chunk)), true);
      const out = mock.method(process.stdout, 'write', capture);
      const err = mock.method(process.stderr, 'write', capture);
      let a: Answer;
      try {
        a = await invoke({ action: 'connect', principal: readers, target: dev });
      } finally {
        out.mock.restore();
        err.mock.restore();
        boom.mock.restore();
      }

      assert.deepEqual(a, { statusCode: 500, error: { code: 'InternalError', message: 'internal error' } });
      assert.match(logged.join(''), /decision failed.*cedar exploded/s);
    });
  });

  describe('cold start', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'warden-policy-fn-'));
    });
    after(() => {
      rmSync(dir, { recursive: true, force: true });
      delete process.env.POLICY_DIR;
    });

    test('POLICY_DIR names the policy folder', async () => {
      const policies = join(dir, 'operators-only');
      cpSync(DEFAULT_POLICY_DIR, policies, { recursive: true });
      writeFileSync(
        join(policies, 'connect.cedar'),
        '@id("connect.operators")\npermit (principal, action == Warden::Action::"connect", resource) when { principal in Warden::Group::"operators" };\n',
      );
      process.env.POLICY_DIR = policies;
      const fresh = await coldStart('operators-only');

      const r = (await fresh({ action: 'connect', principal: readers, target: dev }, lambdaContext('policy-decision'))) as Answer;
      const o = (await fresh({ action: 'connect', principal: { ...readers, groups: ['operators'] }, target: dev }, lambdaContext('policy-decision'))) as Answer;

      assert.equal(r.decision?.effect, 'deny');
      assert.deepEqual(o.decision?.policies, ['connect.operators']);
      assert.notEqual(o.decision?.policyVersion, version);
    });

    test('an invalid policy folder fails the cold start, so no invocation can succeed', async () => {
      process.env.POLICY_DIR = join(dir, 'missing');

      await assert.rejects(coldStart('missing'), { name: 'PolicySetInvalidError' });
    });
  });
});

function assertNothingInternal(serialized: string): void {
  assert.doesNotMatch(serialized, /\bat [\w$.<>]+ \(|\bat (file:|node:|\/)/, 'no stack frames');
  assert.doesNotMatch(serialized, /file:\/\/|node_modules|\.ts\b|\.js\b/, 'no file names');
  assert.ok(!serialized.includes(process.cwd()), 'no paths');
}
