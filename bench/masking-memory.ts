/**
 * Warden's memory while it masks a large result, measured on the process as it runs in production: the
 * esbuild bundle (`npm run bundle`) started with plain node, in a process of its own, so the figure is
 * Warden's alone (not the bench's, not psql's). The kernel's own peak (VmHWM in /proc/<pid>/status) is
 * read before and after each result; VmRSS is also sampled every 20 ms.
 *
 *   npm run bundle && node --import tsx bench/masking-memory.ts [--rows 1000000] [--json out.json]
 *   (BENCH_NODE_FLAGS='--max-semi-space-size=2' passes V8 flags to Warden's process)
 *
 * Results: the same 7-column rows as bench/masking.ts, with two masked columns (email: hash, ssn:
 * partial) and every detector on; then a result 5x as large, to show that memory does not grow with it.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DevIssuer } from '../adapters/local/dev-issuer.ts';
import { LocalSecretsFile } from '../adapters/local/secrets-file.ts';
import { cleanEnv, freePort, killLiveChildren, runBenchMain, runOk } from './lib/proc.ts';
import { startBenchTarget } from './lib/target.ts';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, json: { type: 'string' } } });
const ROWS = Number(values.rows);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BUNDLE = join(ROOT, 'dist/proxy/main.mjs');
const log = (m: string): void => void process.stderr.write(`${m}\n`);

/** VmRSS and VmHWM (peak) of a process, in MB. */
function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

async function main(): Promise<void> {
  if (!existsSync(BUNDLE)) throw new Error('no bundle: run `npm run bundle` first');
  const target = await startBenchTarget();
  const work = mkdtempSync(join(tmpdir(), 'warden-masking-memory-'));
  try {
    log(`seeding ${ROWS * 5} rows`);
    const seed = `CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text, card text, phone text, note text);
      INSERT INTO people SELECT g, 'Customer ' || g, 'customer' || g || '@example.com',
        lpad(((g % 899) + 100)::text, 3, '0') || '-' || lpad(((g % 98) + 1)::text, 2, '0') || '-' || lpad(((g % 9998) + 1)::text, 4, '0'),
        '4111 1111 1111 ' || lpad((g % 10000)::text, 4, '0'), '+1 415 555 ' || lpad((g % 10000)::text, 4, '0'),
        CASE WHEN g % 10 = 0 THEN 'please call me back, order ' || (7000000000000000 + g) ELSE 'delivered on time' END
      FROM generate_series(1, ${ROWS * 5}) g; ANALYZE people;`;
    await runOk(target.bin('psql'), ['-X', '-q', '-h', target.host, '-p', String(target.port), '-U', target.user, '-d', target.database, '-c', seed], {
      env: cleanEnv({ PGPASSWORD: target.password, PGSSLMODE: 'disable' }),
      timeoutMs: 20 * 60_000,
    });

    const stateDir = join(work, 'state');
    const issuerPort = await freePort();
    const config = {
      stateDir,
      listeners: { postgres: { host: '127.0.0.1', port: 0, tls: { mode: 'off' } } },
      identity: { devIssuer: { enabled: true, port: issuerPort, audience: 'warden' } },
      targets: [
        {
          name: 'masked',
          kind: 'postgres',
          host: target.host,
          port: target.port,
          database: target.database,
          credential: 'bench',
          masking: { columns: [{ column: 'public.people.email', strategy: 'hash' }, { column: 'public.people.ssn', strategy: 'partial' }], detectors: 'all' },
        },
      ],
      policy: { dir: join(ROOT, 'dist/proxy/policies') },
    };
    const file = join(work, 'warden.config.yaml');
    writeFileSync(file, JSON.stringify(config));
    new LocalSecretsFile(join(stateDir, 'secrets.json')).put('bench', { username: target.user, password: target.password });

    const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeFlags, BUNDLE, '--config', file], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: undefined }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Warden did not start:\n${out}`)), 30_000);
      child.stdout!.on('data', () => {
        const m = /listening for PostgreSQL on 127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    const pid = child.pid!;
    const token = await (await DevIssuer.loadOrCreate(stateDir, { issuerUrl: `http://127.0.0.1:${issuerPort}`, audience: 'warden' })).issueToken({ sub: 'bench-agent', groups: ['readers'], ttlSeconds: 3600 });

    const results: { label: string; rows: number; seconds: number; rssBeforeMb: number; peakSampledMb: number; vmHwmMb: number }[] = [];
    const read = async (label: string, rows: number): Promise<void> => {
      const before = memoryOf(pid);
      let peak = before.rss;
      const sampler = setInterval(() => (peak = Math.max(peak, memoryOf(pid).rss)), 20);
      const t0 = process.hrtime.bigint();
      await runOk(target.bin('psql'), ['-X', '-At', '-h', '127.0.0.1', '-p', String(port), '-U', 'bench-agent', '-d', 'masked', '-c', `SELECT * FROM people WHERE id <= ${rows}`, '-o', '/dev/null'], {
        env: cleanEnv({ PGPASSWORD: token, PGSSLMODE: 'disable' }),
        timeoutMs: 60 * 60_000,
      });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      clearInterval(sampler);
      const after = memoryOf(pid);
      results.push({ label, rows, seconds, rssBeforeMb: before.rss, peakSampledMb: Math.max(peak, after.rss), vmHwmMb: after.peak });
      log(`${label}: ${rows} rows in ${seconds.toFixed(1)} s; RSS before ${before.rss.toFixed(0)} MB, sampled peak ${Math.max(peak, after.rss).toFixed(0)} MB, VmHWM ${after.peak.toFixed(0)} MB`);
    };
    const idle = memoryOf(pid);
    await read('1x', ROWS);
    await read('5x', ROWS * 5);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));

    const lines = [
      '',
      `Warden (the bundle, its own process) masking SELECT * FROM people (email: hash, ssn: partial, all detectors), read by psql:`,
      `  idle after start: RSS ${idle.rss.toFixed(0)} MB`,
      ...results.map((r) => `  ${String(r.rows).padStart(8)} rows: ${(r.rows / r.seconds).toFixed(0).padStart(7)} rows/s, RSS before ${r.rssBeforeMb.toFixed(0)} MB, peak ${r.peakSampledMb.toFixed(0)} MB (kernel high-water mark ${r.vmHwmMb.toFixed(0)} MB)`),
      '  goal: peak under 150 MB whatever the result size',
    ];
    process.stdout.write(lines.join('\n') + '\n');
    if (values.json) writeFileSync(values.json, JSON.stringify({ rows: ROWS, idleRssMb: idle.rss, results }, null, 2));
  } finally {
    killLiveChildren();
    await target.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

runBenchMain(main);
