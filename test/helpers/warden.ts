/**
 * Starts Warden in-process against a real PostgreSQL target for end-to-end tests: a fresh state folder,
 * the development issuer on a free port, SCRAM logins upstream, the local audit trail.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../../core/config/schema.ts';
import { allowAllDecider, type StatementDecider } from '../../core/policy/decision.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { LocalSecretsFile } from '../../adapters/local/secrets-file.ts';
import { startGateway, type Gateway } from '../../proxy-task/src/gateway.ts';
import { createLogger } from '../../proxy-task/src/log.ts';
import type { PostgresServer } from '../../proxy-task/src/embedded/postgres-server.ts';
import { startTestPostgres } from './postgres.ts';

/** The policy folder shipped with Warden (the default policy set). */
export const DEFAULT_POLICY_DIR = fileURLToPath(new URL('../../policies', import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface TestWarden {
  gw: Gateway;
  pg: PostgresServer;
  loaded: LoadedConfig;
  port: number;
  /** A token from the development issuer. */
  token(sub: string, opts?: { groups?: string[]; ttlSeconds?: number }): Promise<string>;
  /** libpq connection string for Warden, user = sub, database = target. */
  conninfo(sub: string, extra?: string): string;
  stop(): Promise<void>;
}

export interface TestWardenOptions {
  config?: Record<string, unknown>;
  decider?: StatementDecider;
  /** Decide by the Cedar policies of this folder (DEFAULT_POLICY_DIR: the shipped set). Default: allow-all. */
  policyDir?: string;
  /** Reuse a target server (not stopped by stop()). */
  pg?: PostgresServer;
  pgSettings?: Record<string, string>;
  authMethod?: 'scram-sha-256' | 'md5' | 'password' | 'trust';
}

export const TARGET_USER = 'app_owner';
export const TARGET_PASSWORD = 'target-secret-Only-Warden-knows';

export async function startTestWarden(o: TestWardenOptions = {}): Promise<TestWarden> {
  const stateDir = mkdtempSync(join(tmpdir(), 'warden-test-'));
  const ownPg = !o.pg;
  const pg = o.pg ?? (await startTestPostgres({ authMethod: o.authMethod ?? 'scram-sha-256', ...(o.pgSettings ? { settings: o.pgSettings } : {}) }));
  if (ownPg) {
    await pg.createRole(TARGET_USER, TARGET_PASSWORD, { login: true });
    await pg.createDatabase('appdb', TARGET_USER);
  }
  const issuerPort = await freePort();
  const config = parseConfig(
    {
      stateDir,
      listeners: { postgres: { host: '127.0.0.1', port: 0, tls: { mode: 'self-signed' } } },
      identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
      targets: [{ name: 'appdb', kind: 'postgres', host: '127.0.0.1', port: pg.port, database: 'appdb', credential: 'appdb-cred', environment: 'development' }],
      audit: { readOnlyWindowMs: 20 },
      ...o.config,
    },
    'test',
  );
  const loaded: LoadedConfig = { config, file: 'test', stateDir, secretsFile: join(stateDir, 'secrets.json'), auditDir: join(stateDir, 'audit'), policyDir: o.policyDir ?? DEFAULT_POLICY_DIR };
  new LocalSecretsFile(loaded.secretsFile).put('appdb-cred', { username: TARGET_USER, password: TARGET_PASSWORD });
  const gw = await startGateway(loaded, {
    postgresPort: 0,
    log: createLogger((process.env.WARDEN_TEST_LOG as 'debug') ?? 'error'),
    ...(o.decider ? { decider: o.decider } : o.policyDir ? {} : { decider: allowAllDecider }),
  });
  const port = gw.postgres.port;
  return {
    gw,
    pg,
    loaded,
    port,
    token: (sub, t = {}) => gw.devIssuer!.issueToken({ sub, groups: t.groups ?? ['readers'], ...(t.ttlSeconds ? { ttlSeconds: t.ttlSeconds } : {}) }),
    conninfo: (sub, extra = '') => `host=127.0.0.1 port=${port} user=${sub} dbname=appdb ${extra}`.trim(),
    stop: async () => {
      await gw.close();
      if (ownPg) await pg.stop();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
