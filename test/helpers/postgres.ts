/**
 * A throwaway PostgreSQL cluster for integration tests, tuned for speed over durability.
 * `log: true` (or WARDEN_TEST_PG_LOG=1) logs every statement and connection and prints the log path.
 */
import { PostgresServer } from '../../proxy-task/src/embedded/postgres-server.ts';
import type { PostgresServerOptions } from '../../proxy-task/src/embedded/postgres-server.ts';

export async function startTestPostgres(
  opts: Partial<PostgresServerOptions> & { log?: boolean } = {},
): Promise<PostgresServer> {
  const { log = process.env.WARDEN_TEST_PG_LOG === '1', settings, ...rest } = opts;
  const server = await PostgresServer.start({
    ...rest,
    settings: {
      // Crash safety is pointless for a cluster deleted after the test.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      ...(log ? { log_statement: 'all', log_connections: 'on', log_disconnections: 'on' } : {}),
      ...settings,
    },
  });
  if (log) process.stderr.write(`[test postgres] 127.0.0.1:${server.port} log: ${server.logFile}\n`);
  return server;
}
