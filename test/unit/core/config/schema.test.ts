import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigInvalidError, parseConfig } from '../../../../core/config/schema.ts';
import { loadConfigFile } from '../../../../adapters/local/config-file.ts';

const minimal = { identity: { devIssuer: { enabled: true } } };

test('the committed warden.config.yaml is valid and describes the demo target', () => {
  const { config, stateDir, auditDir } = loadConfigFile(join(process.cwd(), 'warden.config.yaml'));
  assert.equal(config.listeners.postgres.port, 6432);
  assert.equal(config.listeners.postgres.host, '127.0.0.1');
  assert.equal(config.targets[0]?.name, 'demo');
  assert.ok(auditDir.startsWith(stateDir));
});

test('defaults fill in a minimal configuration', () => {
  const c = parseConfig(minimal, 'x.yaml');
  assert.equal(c.listeners.postgres.port, 6432);
  assert.equal(c.audit.readOnlyWindowMs, 100);
  assert.equal(c.audit.durableBeforeForward, true);
  assert.equal(c.identity.claims.username, 'sub');
});

function problems(doc: unknown): { key: string; message: string }[] {
  try {
    parseConfig(doc, 'bad.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigInvalidError);
    assert.match(err.message, /^bad\.yaml: invalid configuration/);
    return err.problems;
  }
  assert.fail('expected the configuration to be refused');
}

test('a bad value is refused with the key and what is allowed', () => {
  assert.deepEqual(problems({ ...minimal, listeners: { postgres: { tls: { mode: 'maybe' } } } }), [
    { key: 'listeners.postgres.tls.mode', message: 'must be one of "self-signed", "files", "off"' },
  ]);
  assert.deepEqual(problems({ ...minimal, listeners: { postgres: { port: 70000 } } }), [{ key: 'listeners.postgres.port', message: 'must be at most 65535' }]);
  assert.deepEqual(problems({ ...minimal, listeners: { postgres: { port: '6432' } } }), [{ key: 'listeners.postgres.port', message: 'expected number' }]);
});

test('unknown keys are refused, so a typo cannot silently disable a setting', () => {
  assert.deepEqual(problems({ ...minimal, audit: { durableBeforeFoward: false } }), [{ key: 'audit', message: "unknown key(s) 'durableBeforeFoward'" }]);
});

test('targets are checked: kind, name, duplicates, upstream TLS mode', () => {
  const t = { name: 'db', kind: 'postgres', host: 'h', credential: 'c' };
  assert.equal(problems({ ...minimal, targets: [{ ...t, kind: 'mysql' }] })[0]?.key, 'targets.0.kind');
  assert.equal(problems({ ...minimal, targets: [{ ...t, name: 'Bad Name' }] })[0]?.key, 'targets.0.name');
  assert.deepEqual(problems({ ...minimal, targets: [t, t] }), [{ key: 'targets.1.name', message: "duplicate target name 'db'" }]);
  assert.equal(problems({ ...minimal, targets: [{ ...t, tls: { mode: 'prefer' } }] })[0]?.key, 'targets.0.tls.mode');
});

test('identity needs an issuer unless the development issuer is on; algorithms are an allowlist without HS*/none', () => {
  assert.equal(problems({})[0]?.key, 'identity.issuers');
  const issuer = { issuer: 'https://idp.example.com', audiences: ['warden'] };
  assert.ok(parseConfig({ identity: { issuers: [issuer] } }, 'x'));
  assert.equal(problems({ identity: { issuers: [{ ...issuer, algorithms: ['HS256'] }] } })[0]?.key, 'identity.issuers.0.algorithms.0');
  assert.equal(problems({ identity: { issuers: [{ ...issuer, algorithms: ['none'] }] } })[0]?.key, 'identity.issuers.0.algorithms.0');
  assert.equal(problems({ identity: { issuers: [{ ...issuer, audiences: [] }] } })[0]?.key, 'identity.issuers.0.audiences');
});

test('the config file loader names the file and the YAML line of a syntax error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'warden-cfg-'));
  const file = join(dir, 'warden.config.yaml');
  writeFileSync(file, 'listeners:\n  postgres:\n    port: [1,\n');
  assert.throws(() => loadConfigFile(file), (err: unknown) => err instanceof ConfigInvalidError && err.message.startsWith(file) && /line \d+/.test(err.message));
  writeFileSync(file, 'identity:\n  devIssuer:\n    enabled: true\nlisteners:\n  postgres:\n    tls:\n      mode: sometimes\n');
  assert.throws(() => loadConfigFile(file), /listeners\.postgres\.tls\.mode: must be one of/);
  assert.throws(() => loadConfigFile(join(dir, 'missing.yaml')), /cannot read the file: ENOENT/);
});
