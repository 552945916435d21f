/** Runs pgbench against one endpoint and parses its summary. */
import { cleanEnv, run } from './proc.ts';

export interface Endpoint {
  /** Shown in the tables: direct, pgbouncer, warden. */
  name: string;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface PgbenchRun {
  tps: number;
  latencyMs: number;
  transactions: number;
  failed: number;
  /** The command line, password omitted. */
  command: string;
  output: string;
}

/** libpq settings shared by every run: no TLS anywhere (direct, PgBouncer and Warden alike). */
export function libpqEnv(e: Endpoint): NodeJS.ProcessEnv {
  return cleanEnv({ PGPASSWORD: e.password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '20', PGAPPNAME: 'warden-bench' });
}

export function parsePgbench(output: string): { tps: number; latencyMs: number; transactions: number; failed: number } {
  const tps = /^tps = ([\d.]+) \((?:without|excluding) initial connection/m.exec(output) ?? /^tps = ([\d.]+)/m.exec(output);
  const lat = /^latency average = ([\d.]+) ms/m.exec(output);
  const tx = /^number of transactions actually processed: (\d+)/m.exec(output);
  const failed = /^number of failed transactions: (\d+)/m.exec(output);
  if (!tps || !lat) throw new Error(`cannot parse pgbench output:\n${output}`);
  return { tps: Number(tps[1]), latencyMs: Number(lat[1]), transactions: tx ? Number(tx[1]) : NaN, failed: failed ? Number(failed[1]) : 0 };
}

export async function runPgbench(pgbench: string, e: Endpoint, args: string[]): Promise<PgbenchRun> {
  const full = ['-h', e.host, '-p', String(e.port), '-U', e.user, ...args, e.database];
  const r = await run(pgbench, full, { env: libpqEnv(e), timeoutMs: 30 * 60_000 });
  const output = `${r.stdout}\n${r.stderr}`;
  const command = `pgbench ${full.join(' ')}`;
  if (r.code !== 0) throw new Error(`${command} (${e.name}) failed (exit ${r.code ?? r.signal}):\n${output.trim()}`);
  return { ...parsePgbench(output), command, output };
}
