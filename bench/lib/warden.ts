/**
 * Warden for the benchmarks, wired exactly like `npm start` and the tests (startGateway): the
 * development issuer, a SCRAM login upstream with a credential from the local secrets file, the audit
 * trail ON with the default durability (statements that may write are durable before they are forwarded,
 * read-only ones within audit.readOnlyWindowMs = 100 ms) and the default allow-all decider.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig } from '../../core/config/schema.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { LocalSecretsFile } from '../../adapters/local/secrets-file.ts';
import { startGateway, type Gateway } from '../../proxy-task/src/gateway.ts';
import { createLogger, type LogLevel } from '../../proxy-task/src/log.ts';
import { freePort } from './proc.ts';
import { allowAllDecider } from '../../core/policy/decision.ts';

/** The policy folder shipped with Warden (the default policy set). */
export const DEFAULT_POLICY_DIR = fileURLToPath(new URL('../../policies', import.meta.url));

export const BENCH_TARGET_NAME = 'benchdb';
export const BENCH_SUBJECT = 'bench-agent';
export const BENCH_CREDENTIAL = 'bench-target';
const CREDENTIAL = BENCH_CREDENTIAL;

export interface BenchWardenSpec {
  targetHost: string;
  targetPort: number;
  targetDatabase: string;
  targetUser: string;
  targetPassword: string;
  /** Fresh temp folder when omitted (removed by stop()). */
  stateDir?: string;
  /** Extra top-level config keys (e.g. { audit: { ... } }); the default is none: default durability. */
  config?: Record<string, unknown>;
  /** Decide with the Cedar policies of this folder; default: the allow-all decider (no evaluation). */
  policyDir?: string;
  /** Groups in the bench agent's token (default readers, writers: TPC-B writes on a development target). */
  groups?: string[];
}

export interface BenchWarden {
  gw: Gateway;
  loaded: LoadedConfig;
  host: string;
  port: number;
  /** The database name clients ask for (the target's name). */
  database: string;
  user: string;
  /** A dev-issuer token for `user`, the client's password. */
  token: string;
  stop(): Promise<void>;
}

export async function buildBenchConfig(spec: BenchWardenSpec): Promise<{ loaded: LoadedConfig; ownsStateDir: boolean }> {
  const ownsStateDir = !spec.stateDir;
  const stateDir = spec.stateDir ?? mkdtempSync(join(tmpdir(), 'warden-bench-'));
  const config = parseConfig(
    {
      stateDir,
      listeners: { postgres: { host: '127.0.0.1', port: 0 } },
      identity: { devIssuer: { enabled: true, port: await freePort(), audience: 'warden' } },
      targets: [
        {
          name: BENCH_TARGET_NAME,
          kind: 'postgres',
          host: spec.targetHost,
          port: spec.targetPort,
          database: spec.targetDatabase,
          credential: CREDENTIAL,
          environment: 'development',
        },
      ],
      ...spec.config,
    },
    'bench',
  );
  const loaded: LoadedConfig = { config, file: 'bench', stateDir, secretsFile: join(stateDir, 'secrets.json'), auditDir: join(stateDir, 'audit'), policyDir: spec.policyDir ?? DEFAULT_POLICY_DIR };
  new LocalSecretsFile(loaded.secretsFile).put(CREDENTIAL, { username: spec.targetUser, password: spec.targetPassword });
  return { loaded, ownsStateDir };
}

export async function startBenchWarden(spec: BenchWardenSpec, logLevel: LogLevel = 'warn'): Promise<BenchWarden> {
  const { loaded, ownsStateDir } = await buildBenchConfig(spec);
  let gw: Gateway;
  try {
    gw = await startGateway(loaded, { postgresPort: 0, log: createLogger(logLevel), ...(spec.policyDir ? {} : { decider: allowAllDecider }) });
  } catch (err) {
    if (ownsStateDir) rmSync(loaded.stateDir, { recursive: true, force: true });
    throw err;
  }
  const token = await gw.devIssuer!.issueToken({ sub: BENCH_SUBJECT, groups: spec.groups ?? ['readers', 'writers'], ttlSeconds: 12 * 3600 });
  let stopping: Promise<void> | undefined;
  return {
    gw,
    loaded,
    host: '127.0.0.1',
    port: gw.postgres.port,
    database: BENCH_TARGET_NAME,
    user: BENCH_SUBJECT,
    token,
    stop: () =>
      (stopping ??= (async () => {
        await gw.close();
        if (ownsStateDir) rmSync(loaded.stateDir, { recursive: true, force: true });
      })()),
  };
}
