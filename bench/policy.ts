/**
 * What policy costs: Cedar decisions per second in process (cache cold and warm), and pgbench through
 * Warden with the shipped policy set beside the allow-all decider, in one run on one machine.
 *
 *   node --import tsx bench/policy.ts [--duration 15] [--clients 8] [--jobs 2] [--scale 5] [--repeat 3]
 *                                     [--decisions 20000] [--json out.json]
 *
 * 1. Decisions: the statements pgbench sends plus a mix of refused and held ones, decided by a
 *    CedarDecider over `policies/` with the cache off (every call evaluates, twice for a refusal: as-is
 *    and as-if-approved) and on (a repeated statement is a map lookup). Classification is cached by text
 *    in both, as in the proxy.
 * 2. pgbench -c C -j J -T D, select-only (-M simple, -M prepared) and TPC-B-like (-M simple) against two
 *    Wardens in this process on one target: `allow-all` (no evaluation) and `policy` (the shipped set; the
 *    agent is in readers and writers, the target is a development one, so every pgbench statement is
 *    allowed). Runs alternate between the two, repeated --repeat times; medians are shown.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadPolicyDirectory } from '../adapters/local/policy-files.ts';
import type { Principal } from '../core/identity/principal.ts';
import { CedarDecider } from '../core/policy/cedar-decider.ts';
import type { TargetRef } from '../core/policy/decision.ts';
import { classifySql, initSqlParser } from '../core/sql/classify.ts';
import { runPgbench, type Endpoint } from './lib/pgbench-run.ts';
import { cleanEnv, killLiveChildren, runOk, waitQuiet } from './lib/proc.ts';
import { startBenchTarget } from './lib/target.ts';
import { DEFAULT_POLICY_DIR, startBenchWarden, type BenchWarden } from './lib/warden.ts';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '15' },
    clients: { type: 'string', default: '8' },
    jobs: { type: 'string', default: '2' },
    scale: { type: 'string', default: '5' },
    repeat: { type: 'string', default: '3' },
    decisions: { type: 'string', default: '20000' },
    json: { type: 'string' },
  },
});
const D = Number(values.duration);
const C = Number(values.clients);
const J = Number(values.jobs);
const S = Number(values.scale);
const R = Number(values.repeat);
const N = Number(values.decisions);
const log = (m: string): void => void process.stderr.write(`${m}\n`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

const STATEMENTS = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 4711;',
  'UPDATE pgbench_accounts SET abalance = abalance + 12 WHERE aid = 4711;',
  'UPDATE pgbench_tellers SET tbalance = tbalance + 12 WHERE tid = 3;',
  'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 4711, 12, CURRENT_TIMESTAMP);',
  'BEGIN;',
  'END;',
  'DELETE FROM pgbench_history',
  'DROP TABLE pgbench_history',
  "SELECT pg_read_file('/etc/passwd')",
  'CREATE INDEX ON pgbench_history (mtime)',
];

async function decisionsPerSecond(): Promise<Record<string, { perSecond: number; usPerDecision: number }>> {
  await initSqlParser();
  const set = loadPolicyDirectory(DEFAULT_POLICY_DIR);
  const principal: Principal = { issuer: 'http://127.0.0.1:6480', subject: 'bench-agent', groups: ['readers', 'writers'], username: 'bench-agent', claims: {} };
  const target: TargetRef = { name: 'benchdb', kind: 'postgres', environment: 'development' };
  const statements = STATEMENTS.map((t) => classifySql(t).statements[0]!);
  const out: Record<string, { perSecond: number; usPerDecision: number }> = {};
  for (const [label, cacheEntries, n] of [['cold (cache off)', 0, Math.max(200, Math.floor(N / 20))], ['warm (cache on)', 10_000, N * 10]] as const) {
    const d = new CedarDecider(set, { cacheEntries });
    for (const s of statements) d.decideStatement(principal, target, s); // warm up the WASM module and, when on, the cache
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) d.decideStatement(principal, target, statements[i % statements.length]!);
    const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
    out[label] = { perSecond: 1e6 / us, usPerDecision: us };
    log(`decisions ${label}: ${(1e6 / us).toFixed(0)}/s, ${us.toFixed(2)} µs each (${n} decisions over ${statements.length} statements)`);
  }
  return out;
}

async function main(): Promise<void> {
  const decisions = await decisionsPerSecond();
  await waitQuiet(0.15, 600, log);
  const target = await startBenchTarget();
  const wardens: BenchWarden[] = [];
  try {
    const pgbench = target.bin('pgbench');
    log(`pgbench -i -s ${S} (direct)`);
    await runOk(pgbench, ['-i', '-s', String(S), '-q', '-h', target.host, '-p', String(target.port), '-U', target.user, target.database], {
      env: cleanEnv({ PGPASSWORD: target.password, PGSSLMODE: 'disable' }),
      timeoutMs: 10 * 60_000,
    });
    const spec = { targetHost: target.host, targetPort: target.port, targetDatabase: target.database, targetUser: target.user, targetPassword: target.password };
    const allowAll = await startBenchWarden(spec);
    wardens.push(allowAll);
    const policy = await startBenchWarden({ ...spec, policyDir: DEFAULT_POLICY_DIR });
    wardens.push(policy);
    log(`policy set ${policy.gw.policyVersion} from ${DEFAULT_POLICY_DIR}`);
    const endpoint = (name: string, w: BenchWarden): Endpoint => ({ name, host: w.host, port: w.port, user: w.user, password: w.token, database: w.database });
    const endpoints = [endpoint('allow-all', allowAll), endpoint('policy', policy)];
    const common = ['-c', String(C), '-j', String(J), '-T', String(D)];
    const workloads = [
      { key: 'select-only simple', args: ['-S', '-M', 'simple', ...common] },
      { key: 'select-only prepared', args: ['-S', '-M', 'prepared', ...common] },
      { key: 'tpcb simple', args: ['-M', 'simple', ...common] },
    ];
    const results: Record<string, Record<string, number[]>> = {};
    for (const w of workloads) {
      results[w.key] = { 'allow-all': [], policy: [] };
      for (let r = 0; r < R; r++) {
        for (const e of r % 2 === 0 ? endpoints : [...endpoints].reverse()) {
          const run = await runPgbench(pgbench, e, w.args);
          if (run.failed > 0) throw new Error(`${run.failed} transactions failed through ${e.name}`);
          results[w.key]![e.name]!.push(run.tps);
          log(`${w.key} [${r + 1}/${R}] ${e.name}: ${run.tps.toFixed(0)} TPS`);
        }
      }
    }
    const evaluations = (policy.gw.decider as CedarDecider).evaluationCount;
    const lines = [
      '',
      `Decisions in process (${DEFAULT_POLICY_DIR}, ${loadPolicyDirectory(DEFAULT_POLICY_DIR).policies.size} policies):`,
      ...Object.entries(decisions).map(([k, v]) => `  ${k.padEnd(18)} ${v.perSecond.toFixed(0).padStart(10)} decisions/s  ${v.usPerDecision.toFixed(2).padStart(8)} µs`),
      '',
      `pgbench -c ${C} -j ${J} -T ${D}, scale ${S}, median of ${R} (TPS):`,
      `  ${'workload'.padEnd(22)} ${'allow-all'.padStart(10)} ${'policy'.padStart(10)}  policy/allow-all`,
      ...workloads.map((w) => {
        const a = median(results[w.key]!['allow-all']!);
        const p = median(results[w.key]!.policy!);
        return `  ${w.key.padEnd(22)} ${a.toFixed(0).padStart(10)} ${p.toFixed(0).padStart(10)}  ${(p / a).toFixed(3)} (${((p / a - 1) * 100).toFixed(1)}%)`;
      }),
      `  Cedar evaluations in the policy Warden over all runs: ${evaluations} (the rest were cache hits)`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    if (values.json) writeFileSync(values.json, JSON.stringify({ decisions, pgbench: results, evaluations, clients: C, jobs: J, duration: D, scale: S, repeat: R }, null, 2));
  } finally {
    for (const w of wardens) await w.stop().catch(() => undefined);
    await target.stop();
    killLiveChildren();
  }
}

main().catch((err: unknown) => {
  log(String(err instanceof Error ? err.stack : err));
  killLiveChildren();
  process.exit(1);
});
