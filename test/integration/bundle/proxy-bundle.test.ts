/**
 * The container's program: dist/proxy (scripts/bundle-proxy.mjs), copied to a folder with no
 * node_modules anywhere above it, run with plain `node` exactly as the image's CMD does. It must load
 * its WASM parser and policy engine, the Cedar policies shipped beside it, serve psql through TLS,
 * answer the image's health check, and on SIGTERM let a live session finish, then seal the audit trail
 * and exit 0. Then once more with the configuration in WARDEN_CONFIG_JSON, as a deployed task gets it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { auditKeyPaths, listSessions, loadAuditPublicKey, readSessionEvents } from '../../../adapters/local/audit-sink.ts';
import { DevIssuer } from '../../../adapters/local/dev-issuer.ts';
import { loadPolicyDirectory } from '../../../adapters/local/policy-files.ts';
import { LocalSecretsFile } from '../../../adapters/local/secrets-file.ts';
import { verifyChainLines } from '../../../core/audit/hash-chain.ts';
import type { PostgresServer } from '../../../proxy-task/src/embedded/postgres-server.ts';
import { CLEAN_PG_ENV, describeRun, psqlPath, run, type RunResult } from '../../helpers/clients.ts';
import { startTestPostgres } from '../../helpers/postgres.ts';
import { DEFAULT_POLICY_DIR, freePort, TARGET_PASSWORD, TARGET_USER } from '../../helpers/warden.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DIST = join(ROOT, 'dist/proxy');
// Read or copied by the bundle script besides the modules esbuild lists in dist/proxy.meta.json.
const BUNDLE_EXTRAS = ['policies', 'proxy-task/src/embedded/demo-seed.sql', 'scripts/bundle-proxy.mjs', 'package-lock.json', 'tsconfig.json'];
const BUNDLE_FILES = ['main.mjs', 'main.mjs.map', 'healthcheck.mjs', 'libpg-query.wasm', 'cedar_wasm_bg.wasm', 'policies/warden.cedarschema'];

let pgServer: PostgresServer;
let work: string;
let appDir: string;
const children: ChildProcess[] = [];

function newestMtime(path: string): number {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return Infinity; // a source that is gone: rebuild
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...readdirSync(path).map((n) => newestMtime(join(path, n))));
}

/** Rebuilds dist/proxy unless it is newer than every module in it and every file the script adds. */
function ensureBundle(): string {
  const built = Math.min(...BUNDLE_FILES.map((f) => statSync(join(DIST, f), { throwIfNoEntry: false })?.mtimeMs ?? 0));
  let inputs: string[] = [];
  try {
    inputs = Object.keys((JSON.parse(readFileSync(join(ROOT, 'dist/proxy.meta.json'), 'utf8')) as { inputs: Record<string, unknown> }).inputs);
  } catch {
    inputs = [];
  }
  const sources = inputs.length === 0 ? Infinity : Math.max(...[...inputs, ...BUNDLE_EXTRAS].map((p) => newestMtime(join(ROOT, p))));
  if (built > sources) return 'reused';
  const r = spawnSync(process.execPath, ['scripts/bundle-proxy.mjs'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `npm run bundle failed:\n${r.stdout}\n${r.stderr}`);
  return 'built';
}

interface Running {
  child: ChildProcess;
  port: number;
  banner: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node --enable-source-maps dist/proxy/main.mjs [args]` in appDir, as the image's CMD runs it. */
async function startBundle(args: string[], env: Record<string, string>): Promise<Running> {
  const childEnv: Record<string, string | undefined> = { ...process.env, NODE_PATH: undefined, NODE_OPTIONS: undefined, WARDEN_CONFIG: undefined, WARDEN_CONFIG_JSON: undefined, WARDEN_ADAPTERS: undefined, ...env };
  const child = spawn(process.execPath, ['--enable-source-maps', 'dist/proxy/main.mjs', ...args], { cwd: appDir, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the bundle did not start:\n${out}`)), 15_000);
    const check = (): void => {
      const m = /Warden is listening for PostgreSQL on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', check);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`the bundle exited (${code}) before listening:\n${out}`));
    });
  });
  return { child, port, banner: out, output: () => out, exited };
}

function healthcheck(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run(process.execPath, ['dist/proxy/healthcheck.mjs', ...args], { cwd: appDir, env: { WARDEN_CONFIG_JSON: undefined, ...env }, timeoutMs: 10_000 });
}

function psql(port: number, user: string, token: string, sql: string, sslmode: 'require' | 'disable'): Promise<RunResult> {
  return run(psqlPath()!, ['-X', '-A', '-t', '-v', 'VERBOSITY=verbose', `host=127.0.0.1 port=${port} user=${user} dbname=appdb sslmode=${sslmode}`], {
    env: { ...CLEAN_PG_ENV, PGPASSWORD: token, PGCONNECT_TIMEOUT: '10' },
    input: sql,
    timeoutMs: 15_000,
  });
}

/** Every session of the trail has ended and carries a seal whose signature verifies. */
async function assertSealed(stateDir: string, expectedSessions: number): Promise<void> {
  const auditDir = join(stateDir, 'audit');
  const key = await loadAuditPublicKey(auditKeyPaths(stateDir).publicKeyPath);
  assert.ok(key, 'the audit signing key was created in the state folder');
  const sessions = await listSessions(auditDir);
  assert.equal(sessions.length, expectedSessions, `sessions in the trail: ${JSON.stringify(sessions.map((s) => s.sessionId))}`);
  for (const s of sessions) {
    assert.ok(s.endTime, `session ${s.sessionId} ended`);
    const trail = await readSessionEvents(auditDir, s.sessionId);
    const verdict = verifyChainLines(trail.lines, key.publicKey, { keyId: key.keyId });
    assert.deepEqual(verdict, { ok: true, count: trail.lines.length, sealed: true, keyId: key.keyId }, `session ${s.sessionId}`);
  }
}

async function tokenFor(stateDir: string, issuerPort: number, sub: string): Promise<string> {
  const issuer = await DevIssuer.loadOrCreate(stateDir, { issuerUrl: `http://127.0.0.1:${issuerPort}`, audience: 'warden' });
  return issuer.issueToken({ sub, groups: ['readers'] });
}

function targetConfig(): Record<string, unknown> {
  return { name: 'appdb', kind: 'postgres', host: '127.0.0.1', port: pgServer.port, credential: 'appdb' };
}

before(async () => {
  const started = Date.now();
  const how = ensureBundle();
  work = mkdtempSync(join(tmpdir(), 'warden-bundle-'));
  appDir = join(work, 'app');
  cpSync(DIST, join(appDir, 'dist/proxy'), { recursive: true });
  // Nothing above the copy may hold packages: the bundle must run on its own, as in the image.
  for (let d = appDir; d !== dirname(d); d = dirname(d)) assert.ok(!existsSync(join(d, 'node_modules')), `${d}/node_modules exists`);
  console.log(`bundle ${how} in ${Date.now() - started} ms`);
  pgServer = await startTestPostgres({ authMethod: 'scram-sha-256' });
  await pgServer.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
  await pgServer.createDatabase('appdb', TARGET_USER);
  await pgServer.psql('CREATE TABLE marks (id int primary key)', { database: 'appdb', user: TARGET_USER });
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await pgServer?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the bundle serves psql with the shipped policies, passes the health check, drains and seals on SIGTERM', { skip: !psqlPath() && 'psql not installed' }, async () => {
  const stateDir = join(work, 'state-file');
  const issuerPort = await freePort();
  const config = {
    stateDir,
    listeners: { postgres: { host: '127.0.0.1', port: 0, tls: { mode: 'self-signed' } } },
    identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
    targets: [targetConfig()],
    policy: { dir: join(appDir, 'dist/proxy/policies') },
  };
  const file = join(work, 'warden.config.yaml');
  writeFileSync(file, JSON.stringify(config)); // JSON is YAML
  new LocalSecretsFile(join(stateDir, 'secrets.json')).put('appdb', { username: TARGET_USER, password: TARGET_PASSWORD });

  const t0 = Date.now();
  const w = await startBundle(['--config', file], { WARDEN_DRAIN_SECONDS: '20' });
  console.log(`bundle listening after ${Date.now() - t0} ms`);
  const shipped = loadPolicyDirectory(DEFAULT_POLICY_DIR).version;
  assert.match(w.banner, new RegExp(`Policy: ${shipped} from ${join(appDir, 'dist/proxy/policies')}`), 'the policies next to the bundle are the repository\'s');

  // The image's health check: 'S' from a TLS listener; a closed port fails.
  const healthy = await healthcheck([String(w.port)]);
  assert.equal(healthy.code, 0, describeRun(healthy));
  assert.match(healthy.stdout, /answered 'S'/);
  const closedPort = await freePort();
  const unhealthy = await healthcheck([String(closedPort)]);
  assert.equal(unhealthy.code, 1, describeRun(unhealthy));
  assert.match(unhealthy.stderr, /ECONNREFUSED/);

  // psql through TLS: the WASM parser and the Cedar engine both run from the bundle.
  const token = await tokenFor(stateDir, issuerPort, 'bundle-agent');
  const r = await psql(w.port, 'bundle-agent', token, 'SELECT 1 AS one;\nDROP TABLE marks;\nSELECT count(*) FROM marks;\n', 'require');
  assert.equal(r.code, 0, describeRun(r));
  assert.deepEqual(r.stdout.trim().split('\n'), ['1', '0'], describeRun(r));
  assert.match(r.stderr, /ERROR:\s+42501: .*DROP is not allowed through Warden/, describeRun(r));

  // A session that is live when SIGTERM arrives may finish its work; new connections are refused.
  const live = new pg.Client({ host: '127.0.0.1', port: w.port, user: 'live-agent', database: 'appdb', password: await tokenFor(stateDir, issuerPort, 'live-agent'), ssl: { rejectUnauthorized: false } });
  live.on('error', () => undefined);
  await live.connect();
  const stopAt = Date.now();
  w.child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal((await live.query('SELECT 2 AS two')).rows[0].two, 2, 'the live session still runs statements during the drain');
  const late = await healthcheck([String(w.port)]);
  assert.equal(late.code, 1, `no new connections while draining: ${describeRun(late)}`);
  await live.end();

  const exit = await w.exited;
  const drainedIn = Date.now() - stopAt;
  console.log(`SIGTERM to exit: ${drainedIn} ms (drain allowed 20 s; the last session ended first)`);
  assert.deepEqual(exit, { code: 0, signal: null }, w.output());
  assert.ok(drainedIn < 10_000, 'the process exits once the last session has ended, not at the end of the drain window');
  await assertSealed(stateDir, 2);
});

test('the bundle takes its configuration from WARDEN_CONFIG_JSON: state under the temporary folder, policies beside the bundle', { skip: !psqlPath() && 'psql not installed' }, async () => {
  const tmp = join(work, 'tmp');
  const stateDir = join(tmp, 'warden', '.warden'); // the default stateDir under <tmpdir>/warden
  const [port, issuerPort] = [await freePort(), await freePort()];
  const configJson = JSON.stringify({
    listeners: { postgres: { host: '127.0.0.1', port, tls: { mode: 'off' } } },
    identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
    targets: [targetConfig()],
  });
  new LocalSecretsFile(join(stateDir, 'secrets.json')).put('appdb', { username: TARGET_USER, password: TARGET_PASSWORD });

  const w = await startBundle([], { WARDEN_CONFIG_JSON: configJson, TMPDIR: tmp, WARDEN_DRAIN_SECONDS: '0' });
  assert.equal(w.port, port);
  assert.match(w.banner, new RegExp(`Audit trail: ${join(stateDir, 'audit')}`));
  assert.match(w.banner, new RegExp(`Policy: ${loadPolicyDirectory(DEFAULT_POLICY_DIR).version} from ${join(appDir, 'dist/proxy/policies')}`));

  // Without arguments the health check finds the port in the same configuration; TLS off answers 'N'.
  const healthy = await healthcheck([], { WARDEN_CONFIG_JSON: configJson });
  assert.equal(healthy.code, 0, describeRun(healthy));
  assert.match(healthy.stdout, new RegExp(`127\\.0\\.0\\.1:${port} answered 'N'`));

  const plain = await psql(port, 'env-agent', await tokenFor(stateDir, issuerPort, 'env-agent'), 'SELECT 1;\nDROP TABLE marks;\n', 'disable');
  assert.equal(plain.code, 0, describeRun(plain));
  assert.equal(plain.stdout.trim(), '1');
  assert.match(plain.stderr, /ERROR:\s+42501: /);

  w.child.kill('SIGTERM');
  assert.deepEqual(await w.exited, { code: 0, signal: null }, w.output());
  await assertSealed(stateDir, 1);
});
