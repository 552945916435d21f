/** The `warden` command as an operator runs it: `npx warden ...` from the repository. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';

const run = promisify(execFile);
const warden = (args: string[], env: Record<string, string> = {}) =>
  run(process.execPath, ['cli/bin/warden.mjs', ...args], { env: { ...process.env, ...env }, timeout: 30_000 });

test('every subcommand has --help', async () => {
  const top = await warden(['--help']);
  assert.match(top.stdout, /Usage: warden/);
  const commands = [...top.stdout.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
  assert.ok(commands.includes('token') && commands.includes('audit'), `commands: ${commands.join(', ')}`);
  for (const c of commands) {
    const h = await warden([c, '--help']);
    assert.match(h.stdout, new RegExp(`Usage: warden ${c}`), c);
  }
  for (const sub of ['sessions', 'show', 'verify']) assert.match((await warden(['audit', sub, '--help'])).stdout, new RegExp(`Usage: warden audit ${sub}`));
});

test('warden token prints a dev-issuer token with the subject, groups and ttl asked for', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'warden-cli-'));
  const cfg = join(dir, 'warden.config.yaml');
  writeFileSync(cfg, `stateDir: ${dir}\nidentity:\n  devIssuer:\n    enabled: true\n    port: 6999\n`);
  const { stdout } = await warden(['--config', cfg, 'token', '--sub', 'ci-bot', '--groups', 'readers,deployers', '--ttl', '5m']);
  const token = stdout.trim();
  const claims = decodeJwt(token);
  assert.equal(claims.sub, 'ci-bot');
  assert.deepEqual(claims.groups, ['readers', 'deployers']);
  assert.equal(claims.iss, 'http://127.0.0.1:6999');
  assert.equal(claims.aud, 'warden');
  assert.equal(claims.exp! - claims.iat!, 300);
  assert.equal(decodeProtectedHeader(token).alg, 'ES256');
  // The same key is reused: a second token has the same kid.
  const again = (await warden(['--config', cfg, 'token', '--sub', 'x'])).stdout.trim();
  assert.equal(decodeProtectedHeader(again).kid, decodeProtectedHeader(token).kid);
});

test('warden token refuses a bad ttl and a disabled dev issuer with a clear message', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'warden-cli-'));
  const cfg = join(dir, 'warden.config.yaml');
  writeFileSync(cfg, `stateDir: ${dir}\nidentity:\n  devIssuer:\n    enabled: true\n`);
  await assert.rejects(warden(['--config', cfg, 'token', '--sub', 'a', '--ttl', 'forever']), (e: { stderr: string }) => /duration|ttl/i.test(e.stderr));
  writeFileSync(cfg, `stateDir: ${dir}\nidentity:\n  issuers:\n    - issuer: https://idp.example.com\n      audiences: [warden]\n`);
  await assert.rejects(warden(['--config', cfg, 'token', '--sub', 'a']), (e: { stderr: string }) => /development issuer is disabled/.test(e.stderr));
});

test('an invalid configuration is refused with the file, the key and what is allowed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'warden-cli-'));
  const cfg = join(dir, 'warden.config.yaml');
  writeFileSync(cfg, `identity:\n  devIssuer:\n    enabled: yes-please\n`);
  await assert.rejects(warden(['--config', cfg, 'token', '--sub', 'a']), (e: { stderr: string }) => e.stderr.includes(cfg) && /identity\.devIssuer\.enabled: expected boolean/.test(e.stderr));
});
