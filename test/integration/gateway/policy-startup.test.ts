/**
 * Start-up with the policy folder: an invalid policy set stops Warden before anything listens, with the
 * file, the line and Cedar's message; a valid one is in force and its version reported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../../core/config/schema.ts';
import { PolicySetInvalidError } from '../../../core/policy/policy-set.ts';
import type { LoadedConfig } from '../../../adapters/local/config-file.ts';
import { startGateway } from '../../../proxy-task/src/gateway.ts';
import { createLogger } from '../../../proxy-task/src/log.ts';
import { DEFAULT_POLICY_DIR, freePort } from '../../helpers/warden.ts';

async function loadedWith(policyDir: string, port: number): Promise<LoadedConfig> {
  const stateDir = mkdtempSync(join(tmpdir(), 'warden-policy-start-'));
  const config = parseConfig(
    {
      stateDir,
      listeners: { postgres: { host: '127.0.0.1', port, tls: { mode: 'off' } } },
      identity: { devIssuer: { enabled: true, port: await freePort(), audience: 'warden' } },
      targets: [],
    },
    'test',
  );
  return { config, file: 'test', stateDir, secretsFile: join(stateDir, 'secrets.json'), auditDir: join(stateDir, 'audit'), policyDir };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

test('an invalid policy stops start-up with the file, the line and the reason, and nothing listens', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'warden-policies-'));
  cpSync(DEFAULT_POLICY_DIR, dir, { recursive: true });
  const reads = join(dir, 'reads.cedar');
  const lines = readFileSync(reads, 'utf8').split('\n');
  const at = lines.findIndex((l) => l.includes('context.readOnly'));
  assert.ok(at >= 0);
  lines[at] = lines[at]!.replace('context.readOnly', 'context.readonly'); // a typo strict validation must catch
  writeFileSync(reads, lines.join('\n'));
  const port = await freePort();
  const loaded = await loadedWith(dir, port);
  try {
    await assert.rejects(startGateway(loaded, { log: createLogger('error') }), (err: unknown) => {
      assert.ok(err instanceof PolicySetInvalidError);
      assert.match(err.message, new RegExp(`reads\\.cedar:${at + 1}:\\d+: policy sql\\.read\\.readers: .*readonly`));
      return true;
    });
    assert.equal(await listening(port), false, 'nothing may listen with an invalid policy set');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(loaded.stateDir, { recursive: true, force: true });
  }
});

test('a valid policy set is in force from start-up, with its version', async () => {
  const loaded = await loadedWith(DEFAULT_POLICY_DIR, 0);
  const gw = await startGateway(loaded, { log: createLogger('error'), postgresPort: 0 });
  try {
    assert.match(gw.policyVersion ?? '', /^cedar:[0-9a-f]{16}$/);
    const principal = { issuer: 'http://127.0.0.1', subject: 'a', groups: ['readers'], username: 'a', claims: {} };
    const d = await gw.decider.decideConnect(principal, { name: 'x', kind: 'postgres', environment: 'development' });
    assert.equal(d.effect, 'allow');
    assert.equal(d.policyVersion, gw.policyVersion);
  } finally {
    await gw.close();
    rmSync(loaded.stateDir, { recursive: true, force: true });
  }
});
