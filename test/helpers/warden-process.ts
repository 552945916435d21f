/**
 * Runs Warden as its own process (`proxy-task/src/main.ts --config <file>`), the way an operator does,
 * for tests that kill it or measure its memory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DevIssuer } from '../../adapters/local/dev-issuer.ts';
import { DEFAULT_POLICY_DIR } from './warden.ts';
import { LocalSecretsFile } from '../../adapters/local/secrets-file.ts';
import type { PostgresServer } from '../../proxy-task/src/embedded/postgres-server.ts';
import { freePort, TARGET_PASSWORD, TARGET_USER } from './warden.ts';

export interface WardenProcess {
  child: ChildProcess;
  port: number;
  stateDir: string;
  auditDir: string;
  issuer: DevIssuer;
  /** Resident memory of the Warden process in bytes (from /proc). */
  rss(): number;
  stop(): Promise<void>;
}

export async function startWardenProcess(pg: PostgresServer, audit: Record<string, unknown> = {}): Promise<WardenProcess> {
  const stateDir = mkdtempSync(join(tmpdir(), 'warden-proc-'));
  const [port, issuerPort] = [await freePort(), await freePort()];
  const config = {
    stateDir,
    listeners: { postgres: { host: '127.0.0.1', port, tls: { mode: 'off' } } },
    identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
    targets: [{ name: 'appdb', kind: 'postgres', host: '127.0.0.1', port: pg.port, credential: 'appdb' }],
    audit: { durableBeforeForward: true, readOnlyWindowMs: 100, ...audit },
    policy: { dir: DEFAULT_POLICY_DIR }, // the shipped policy set: tokens need a group (readers, writers)
  };
  const file = join(stateDir, 'warden.config.yaml');
  writeFileSync(file, JSON.stringify(config)); // JSON is YAML
  new LocalSecretsFile(join(stateDir, 'secrets.json')).put('appdb', { username: TARGET_USER, password: TARGET_PASSWORD });
  const child = spawn(process.execPath, ['--import', 'tsx', 'proxy-task/src/main.ts', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WARDEN_LOG_LEVEL: 'warn' },
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Warden did not start: ${out}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Warden is listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-10_000)));
    child.once('exit', (code) => reject(new Error(`Warden exited (${code}): ${out}`)));
  });
  const issuer = await DevIssuer.loadOrCreate(stateDir, { issuerUrl: `http://127.0.0.1:${issuerPort}`, audience: 'warden' });
  return {
    child,
    port,
    stateDir,
    auditDir: join(stateDir, 'audit'),
    issuer,
    rss: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      }
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
