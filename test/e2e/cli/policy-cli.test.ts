/** `warden policy validate|explain` as an operator runs them: the real command in a child process. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = join(REPO, 'cli/bin/warden.mjs');
const POLICIES = join(REPO, 'policies');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `warden ...`; resolves with the exit code instead of rejecting on a non-zero one. */
function warden(args: string[], cwd = REPO): Promise<Run> {
  const env = { ...process.env };
  delete env.WARDEN_CONFIG;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** The line of `@id("<id>")` in a shipped policy file, as explain should cite it. */
function lineOf(file: string, id: string): number {
  const text = readFileSync(join(POLICIES, file), 'utf8');
  return text.slice(0, text.indexOf(`@id("${id}")`)).split('\n').length;
}

/** A configuration with a production target and the shipped policies, outside the repository. */
function productionConfig(): string {
  const dir = mkdtempSync(join(tmpdir(), 'warden-policy-cli-'));
  const file = join(dir, 'warden.config.yaml');
  writeFileSync(
    file,
    [
      `stateDir: ${dir}`,
      'identity:',
      '  devIssuer:',
      '    enabled: true',
      'targets:',
      '  - name: billing',
      '    kind: postgres',
      '    host: 127.0.0.1',
      '    credential: billing-db',
      '    environment: production',
      '  - name: sandbox',
      '    kind: postgres',
      '    host: 127.0.0.1',
      '    credential: sandbox-db',
      'policy:',
      `  dir: ${POLICIES}`,
      '',
    ].join('\n'),
  );
  return file;
}

describe('warden policy', { concurrency: true }, () => {
  it('validate: a valid folder exits 0 and prints the count, the schema and the version', async () => {
    const r = await warden(['policy', 'validate', '--dir', 'policies']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^policies\/ : \d+ policies valid against warden\.cedarschema \(strict\), version cedar:[0-9a-f]{16}$/m);
  });

  it('validate: a broken policy exits 1 with file:line:column and Cedar\'s message, with no configuration file anywhere', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'warden-policy-broken-'));
    mkdirSync(join(dir, 'policies'));
    copyFileSync(join(POLICIES, 'warden.cedarschema'), join(dir, 'policies/warden.cedarschema'));
    copyFileSync(join(POLICIES, 'connect.cedar'), join(dir, 'policies/connect.cedar'));
    writeFileSync(
      join(dir, 'policies/reads.cedar'),
      '// reads\n@id("reads.typo")\npermit (principal, action == Warden::Action::"sql.read", resource)\nwhen { context.readonly };\n',
    );
    const r = await warden(['policy', 'validate', '--dir', 'policies'], dir);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^policies\/reads\.cedar:4:8: policy reads\.typo: .*attribute `readonly` in context .* not found; did you mean `readOnly`\?/m);
    assert.match(r.stdout, /1 problem/);
  });

  it('explain: a writer\'s DELETE on a production target is held for a database approver', async () => {
    const r = await warden([
      '--config', productionConfig(),
      'policy', 'explain', '--sub', 'ci-bot', '--groups', 'writers', '--target', 'billing',
      '--sql', 'DELETE FROM customers WHERE id = 1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /target\s+billing\s+\(postgres, production\)/);
    assert.match(r.stdout, /operation\s+write \(DELETE\)/);
    assert.match(r.stdout, /tables\s+customers/);
    assert.match(r.stdout, /action\s+Warden::Action::"sql\.write"/);
    assert.match(r.stdout, /decision\s+HOLD FOR APPROVAL/);
    assert.match(r.stdout, /approval\s+1 approval from db-approvers/);
    assert.ok(r.stdout.includes(`sql.write.production-approval (permit)  policies/writes.cedar:${lineOf('writes.cedar', 'sql.write.production-approval')}`), r.stdout);
    assert.match(r.stdout, /as is\s+deny/);
    assert.match(r.stdout, /as if approved\s+allow\s+sql\.write\.production-approval/);
    assert.match(r.stdout, /overall\s+HOLD FOR APPROVAL/);
    assert.match(r.stdout, /version\s+cedar:[0-9a-f]{16}/);
  });

  it('explain: DROP TABLE is denied by guard.drop, cited with its file and line', async () => {
    const r = await warden(['policy', 'explain', '--sub', 'ci-bot', '--groups', 'writers', '--target', 'x', '--environment', 'development', '--dir', POLICIES, '--sql', 'DROP TABLE x']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /risks\s+drop/);
    assert.match(r.stdout, /decision\s+DENY/);
    assert.match(r.stdout, /reason\s+DROP is not allowed through Warden/);
    assert.ok(r.stdout.includes(`guard.drop (forbid)  ${join('policies', 'guardrails.cedar')}:${lineOf('guardrails.cedar', 'guard.drop')}`), r.stdout);
    assert.match(r.stdout, /overall\s+DENY/);
  });

  it('explain --json: the same explanation, statement by statement, as JSON', async () => {
    const r = await warden([
      '--config', productionConfig(),
      'policy', 'explain', '--sub', 'ci-bot', '--groups', 'writers', '--target', 'billing', '--json',
      '--sql', 'SELECT 1; DELETE FROM customers WHERE id = 1; DROP TABLE x',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.match(out.policyVersion, /^cedar:[0-9a-f]{16}$/);
    assert.deepEqual(out.target, { name: 'billing', kind: 'postgres', environment: 'production' });
    assert.deepEqual(out.explanations.map((e: { effect: string }) => e.effect), ['allow', 'approval', 'deny']);
    const held = out.explanations[1];
    assert.equal(held.classification.command, 'DELETE');
    assert.deepEqual(held.approval, { approvers: ['db-approvers'], approvals: 1 });
    assert.equal(held.policies[0].id, 'sql.write.production-approval');
    assert.equal(held.evaluations.length, 2);
    assert.equal(out.explanations[2].policies[0].id, 'guard.drop');
    assert.equal(out.explanations[2].policies[0].line, lineOf('guardrails.cedar', 'guard.drop'));
    // The Query is decided by its first statement that is not allowed.
    assert.deepEqual(out.overall, { effect: 'approval', decision: 'HOLD FOR APPROVAL', statement: 2 });
  });

  it('explain --connect: an agent in no group may not open a session', async () => {
    const r = await warden(['--config', productionConfig(), 'policy', 'explain', '--sub', 'nobody', '--target', 'sandbox', '--connect']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /target\s+sandbox\s+\(postgres, development\)/);
    assert.match(r.stdout, /action\s+Warden::Action::"connect"/);
    assert.match(r.stdout, /decision\s+DENY/);
  });

  it('explain: an unknown target is a usage error that lists the known targets', async () => {
    const r = await warden(['--config', productionConfig(), 'policy', 'explain', '--sub', 'a', '--target', 'nope', '--sql', 'SELECT 1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown target 'nope'.*known targets: billing \(production\), sandbox \(development\)/);
  });
});
