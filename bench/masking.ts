/**
 * What masking costs on a large result: a 1,000,000-row result of realistic rows (name, email, SSN, card
 * number, phone, free text) read with psql directly, through Warden with masking off, and through Warden
 * with two masked columns (email: hash, ssn: partial) and every content detector on; then the same with
 * email redacted instead of hashed (no keyed hash per row), and with the two rules but no detectors.
 *
 *   node --import tsx bench/masking.ts [--rows 1000000] [--repeat 3] [--json out.json]
 *
 * Throughput is rows per second of `psql -At -c 'SELECT * FROM people' -o /dev/null` (psql reads the whole
 * result, so its own cost is the same on all three paths). Warden runs in this process; its peak resident
 * memory is sampled every 20 ms during each run (psql's memory is its own process's).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { cleanEnv, killLiveChildren, runBenchMain, runOk, waitQuiet } from './lib/proc.ts';
import { startBenchTarget } from './lib/target.ts';
import { BENCH_CREDENTIAL, startBenchWarden, type BenchWarden } from './lib/warden.ts';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    repeat: { type: 'string', default: '3' },
    json: { type: 'string' },
  },
});
const ROWS = Number(values.rows);
const R = Number(values.repeat);
const log = (m: string): void => void process.stderr.write(`${m}\n`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

const SEED = `
CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text, card text, phone text, note text);
INSERT INTO people
SELECT g,
       'Customer ' || g,
       'customer' || g || '@example.com',
       lpad(((g % 899) + 100)::text, 3, '0') || '-' || lpad(((g % 98) + 1)::text, 2, '0') || '-' || lpad(((g % 9998) + 1)::text, 4, '0'),
       '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0'),
       '+1 415 555 ' || lpad((g % 10000)::text, 4, '0'),
       CASE WHEN g % 10 = 0 THEN 'please call me back, order ' || (7000000000000000 + g) ELSE 'delivered on time' END
  FROM generate_series(1, ${ROWS}) g;
ANALYZE people;`;

async function main(): Promise<void> {
  const target = await startBenchTarget();
  let warden: BenchWarden | undefined;
  try {
    log(`seeding ${ROWS} rows`);
    await runOk(target.bin('psql'), ['-X', '-q', '-h', target.host, '-p', String(target.port), '-U', target.user, '-d', target.database, '-c', SEED], {
      env: cleanEnv({ PGPASSWORD: target.password, PGSSLMODE: 'disable' }),
      timeoutMs: 10 * 60_000,
    });
    const base = { kind: 'postgres', host: target.host, port: target.port, database: target.database, credential: BENCH_CREDENTIAL, environment: 'development' };
    warden = await startBenchWarden({
      targetHost: target.host,
      targetPort: target.port,
      targetDatabase: target.database,
      targetUser: target.user,
      targetPassword: target.password,
      config: {
        targets: [
          { name: 'plain', ...base },
          {
            name: 'masked',
            ...base,
            masking: {
              columns: [
                { column: 'public.people.email', strategy: 'hash' },
                { column: 'public.people.ssn', strategy: 'partial' },
              ],
              detectors: 'all',
            },
          },
          {
            name: 'masked-redact',
            ...base,
            masking: {
              columns: [
                { column: 'public.people.email', strategy: 'redact' },
                { column: 'public.people.ssn', strategy: 'partial' },
              ],
              detectors: 'all',
            },
          },
          {
            name: 'masked-rules-only',
            ...base,
            masking: {
              columns: [
                { column: 'public.people.email', strategy: 'redact' },
                { column: 'public.people.ssn', strategy: 'partial' },
              ],
              detectors: 'none',
            },
          },
        ],
      },
    });
    const paths = [
      { name: 'direct', host: target.host, port: target.port, user: target.user, password: target.password, database: target.database },
      { name: 'warden, masking off', host: warden.host, port: warden.port, user: warden.user, password: warden.token, database: 'plain' },
      { name: 'warden, masking on', host: warden.host, port: warden.port, user: warden.user, password: warden.token, database: 'masked' },
      { name: 'warden, redact not hash', host: warden.host, port: warden.port, user: warden.user, password: warden.token, database: 'masked-redact' },
      { name: 'warden, rules only', host: warden.host, port: warden.port, user: warden.user, password: warden.token, database: 'masked-rules-only' },
    ];
    const results: Record<string, { rowsPerSecond: number[]; peakRssMb: number[]; baselineRssMb: number[] }> = {};
    for (let r = 0; r < R; r++) {
      for (const p of r % 2 === 0 ? paths : [...paths].reverse()) {
        await waitQuiet(0.15, 600, log);
        global.gc?.();
        const baseline = process.memoryUsage.rss();
        let peak = baseline;
        const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
        const t0 = process.hrtime.bigint();
        const out = await runOk(target.bin('psql'), ['-X', '-At', '-h', p.host, '-p', String(p.port), '-U', p.user, '-d', p.database, '-c', 'SELECT * FROM people', '-o', '/dev/null'], {
          env: cleanEnv({ PGPASSWORD: p.password, PGSSLMODE: 'disable' }),
          timeoutMs: 30 * 60_000,
        });
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        clearInterval(sampler);
        if (out.stderr.trim()) throw new Error(`${p.name}: ${out.stderr}`);
        const entry = (results[p.name] ??= { rowsPerSecond: [], peakRssMb: [], baselineRssMb: [] });
        entry.rowsPerSecond.push(ROWS / seconds);
        entry.peakRssMb.push(peak / 1024 / 1024);
        entry.baselineRssMb.push(baseline / 1024 / 1024);
        log(`[${r + 1}/${R}] ${p.name}: ${(ROWS / seconds).toFixed(0)} rows/s (${seconds.toFixed(2)} s), this process's RSS ${(baseline / 1024 / 1024).toFixed(0)} MB before, peak ${(peak / 1024 / 1024).toFixed(0)} MB`);
      }
    }
    const direct = median(results.direct!.rowsPerSecond);
    const lines = [
      '',
      `SELECT * FROM people (${ROWS} rows, 7 columns) with psql, median of ${R}:`,
      `  ${'path'.padEnd(22)} ${'rows/s'.padStart(10)} ${'of direct'.padStart(10)} ${'peak RSS (MB)'.padStart(14)} ${'RSS before (MB)'.padStart(16)}`,
      ...paths.map((p) => {
        const x = results[p.name]!;
        const rps = median(x.rowsPerSecond);
        return `  ${p.name.padEnd(22)} ${rps.toFixed(0).padStart(10)} ${(rps / direct).toFixed(2).padStart(10)} ${p.name === 'direct' ? '-'.padStart(14) : Math.max(...x.peakRssMb).toFixed(0).padStart(14)} ${Math.min(...x.baselineRssMb).toFixed(0).padStart(16)}`;
      }),
      '  (peak RSS: the bench process holding Warden; the direct path does not touch it)',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    if (values.json) writeFileSync(values.json, JSON.stringify({ rows: ROWS, repeat: R, results }, null, 2));
  } finally {
    await warden?.stop().catch(() => undefined);
    await target.stop();
    killLiveChildren();
  }
}

runBenchMain(main);
