/**
 * Profiles Warden under pgbench load: Warden runs in a process of its own (bench/warden-process.ts) under
 * `node --cpu-prof`, one process per workload, loaded by pgbench like bench/pgbench.ts does; then the
 * profile is summarised (bench/summarize-cpuprofile.ts).
 *
 *   node --import tsx bench/profile.ts [--workloads select,tpcb,prepared] [--duration 15] [--clients 8]
 *                                      [--jobs 2] [--scale 5] [--out bench/profiles] [--top 30]
 *                                      [--config '{"audit":{...}}'] [--env UV_THREADPOOL_SIZE=16] [--no-prof]
 *
 * --config merges keys into Warden's configuration and --env sets variables for the Warden process: for
 * diagnostic variants (what does TPC-B do without durable-before-forward, with more fsync threads...).
 * Such variants are not the default configuration and say so in their summary.
 */
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatSummary, summarizeProfile, type CpuProfile } from './lib/cpuprofile.ts';
import { runPgbench, type Endpoint } from './lib/pgbench-run.ts';
import { describeTree, treeState } from './lib/git-state.ts';
import { cleanEnv, killLiveChildren, runOk, spawnTracked, waitQuiet } from './lib/proc.ts';
import { startBenchTarget } from './lib/target.ts';
import type { BenchWardenSpec } from './lib/warden.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const WORKLOADS: Record<string, string[]> = {
  select: ['-S', '-M', 'simple'],
  tpcb: ['-M', 'simple'],
  prepared: ['-S', '-M', 'prepared'],
};

function log(msg: string): void {
  process.stderr.write(`[profile ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function profileOne(name: string, spec: BenchWardenSpec, pgbench: string, args: string[], outDir: string, top: number, env: Record<string, string>, prof: boolean): Promise<string> {
  const dir = path.join(outDir, `${name}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  await waitQuiet(0.15, 600_000, log);
  const nodeArgs = [...(prof ? ['--cpu-prof', '--cpu-prof-dir', dir] : []), '--import', 'tsx', path.join(HERE, 'warden-process.ts')];
  const child = spawnTracked(process.execPath, nodeArgs, {
    env: cleanEnv({ ...env, BENCH_WARDEN_SPEC: JSON.stringify(spec) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const first = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (l) => resolve(l));
    void exited.then(() => reject(new Error(`warden-process exited early:\n${stderr}`)));
  });
  const info = JSON.parse(first) as { host: string; port: number; user: string; database: string; token: string };
  const ep: Endpoint = { name: 'warden', host: info.host, port: info.port, user: info.user, password: info.token, database: info.database };
  log(`${name}: pgbench ${args.join(' ')} -> warden (pid ${child.pid}), load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const run = await runPgbench(pgbench, ep, args);
  log(`${name}: tps ${run.tps.toFixed(0)}, latency ${run.latencyMs.toFixed(3)} ms`);
  child.kill('SIGTERM');
  const code = await exited;
  if (code !== 0) throw new Error(`warden-process exited with ${code}:\n${stderr}`);
  const audit = stderr.split('\n').find((l) => l.startsWith('{"audit"')) ?? '';
  const variant = [spec.config ? `config ${JSON.stringify(spec.config)}` : '', Object.keys(env).length ? `env ${JSON.stringify(env)}` : ''].filter(Boolean).join(', ');
  const tree = describeTree(await treeState());
  const head = `${tree}\nworkload ${name}: pgbench ${args.join(' ')} -> tps ${run.tps.toFixed(0)}, avg latency ${run.latencyMs.toFixed(3)} ms${variant ? `\nDIAGNOSTIC VARIANT, not the default configuration: ${variant}` : ''}\n${audit}\n`;
  if (!prof) return head;
  // One profile per thread: CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile. Thread 0 is the main
  // thread; tsx's module loader hooks run on another one.
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const main = files.find((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  const file = main
    ? path.join(dir, main)
    : files.map((f) => path.join(dir, f)).sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (!file) throw new Error(`no .cpuprofile in ${dir}`);
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
  const text = `${head}${formatSummary(summary, top)}\n`;
  writeFileSync(path.join(dir, 'summary.txt'), text);
  log(`${name}: profile ${file}`);
  return text;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workloads: { type: 'string', default: 'select,tpcb,prepared' },
      duration: { type: 'string', default: '15' },
      clients: { type: 'string', default: '8' },
      jobs: { type: 'string', default: '2' },
      scale: { type: 'string', default: '5' },
      out: { type: 'string', default: path.join(HERE, 'profiles') },
      top: { type: 'string', default: '30' },
      config: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      'no-prof': { type: 'boolean', default: false },
    },
  });
  const names = values.workloads!.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!WORKLOADS[n]) throw new Error(`unknown workload ${n}: one of ${Object.keys(WORKLOADS).join(', ')}`);
  const common = ['-c', values.clients!, '-j', values.jobs!, '-T', values.duration!];

  const target = await startBenchTarget();
  const stop = async (): Promise<void> => {
    killLiveChildren();
    await target.stop().catch(() => undefined);
  };
  process.once('SIGINT', () => void stop().finally(() => process.exit(130)));
  try {
    const pgbench = target.bin('pgbench');
    log(`pgbench -i -s ${values.scale}`);
    await runOk(pgbench, ['-i', '-s', values.scale!, '-q', '-h', target.host, '-p', String(target.port), '-U', target.user, target.database], {
      env: cleanEnv({ PGPASSWORD: target.password, PGSSLMODE: 'disable' }),
    });
    const spec: BenchWardenSpec = {
      targetHost: target.host,
      targetPort: target.port,
      targetDatabase: target.database,
      targetUser: target.user,
      targetPassword: target.password,
      ...(values.config ? { config: JSON.parse(values.config) as Record<string, unknown> } : {}),
    };
    const env: Record<string, string> = {};
    for (const kv of values.env!) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new Error(`--env wants NAME=VALUE, got ${kv}`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    for (const n of names) {
      process.stdout.write(`\n${await profileOne(n, spec, pgbench, [...WORKLOADS[n]!, ...common], values.out!, Number(values.top), env, !values['no-prof'])}`);
    }
  } finally {
    await stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`profile failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
