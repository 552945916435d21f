/**
 * The benchmark's PostgreSQL target: a fresh cluster from the machine's binaries with SCRAM logins, a
 * role and a database owned by it (as in test/helpers/warden.ts). Unlike the test clusters it keeps the
 * server defaults for durability (fsync, synchronous_commit, full_page_writes on), so TPC-B is honest.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { PostgresServer } from '../../proxy-task/src/embedded/postgres-server.ts';

export const BENCH_USER = 'bench_owner';
export const BENCH_DATABASE = 'benchdb';

export interface BenchTarget {
  pg: PostgresServer;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** Path of a PostgreSQL client binary (pgbench, psql) matching the server. */
  bin(name: string): string;
  stop(): Promise<void>;
}

export async function startBenchTarget(settings: Record<string, string> = {}): Promise<BenchTarget> {
  const pg = await PostgresServer.start({ authMethod: 'scram-sha-256', settings });
  try {
    const password = randomBytes(18).toString('base64url');
    await pg.createRole(BENCH_USER, password, { login: true });
    await pg.createDatabase(BENCH_DATABASE, BENCH_USER);
    return {
      pg,
      host: pg.host,
      port: pg.port,
      user: BENCH_USER,
      password,
      database: BENCH_DATABASE,
      bin: (name) => path.join(pg.binDir, name),
      stop: () => pg.stop(),
    };
  } catch (err) {
    await pg.stop().catch(() => undefined);
    throw err;
  }
}
