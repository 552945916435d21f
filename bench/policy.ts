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
 *    allowed). Runs alternate between the two, repeated --repeat times, each on a quiet machine; medians
 *    are shown. Besides TPS, the CPU time this process (so the Warden under load: the other one idles)
 *    spends per transaction: on a shared 2-core machine TPS moves with other guests' load (steal), CPU
 *    per transaction much less.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadPolicyDirectory } from '../adapters/local/policy-files.ts';
import type { Principal } from '../core/identity/principal.ts';
import { CedarDecider } from '../core/policy/cedar-decider.ts';
import type { TargetRef } from '../core/policy/decision.ts';
import { classifySql, initSqlParser } from '../core/sql/classify.ts';
import { runPgbench, type Endpoint } from './lib/pgbench-run.ts';
import { CpuMonitor } from './lib/cpu-monitor.ts';
import { cleanEnv, killLiveChildren, runBenchMain, runOk, waitQuiet } from './lib/proc.ts';
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
  const probe = new CedarDecider(set);
  const allowed = statements.filter((s) => probe.decideStatement(principal, target, s).effect === 'allow');
  const refused = statements.filter((s) => !allowed.includes(s));
  const runs = [
    ['cold, allowed (1 evaluation)', 0, Math.max(200, Math.floor(N / 20)), allowed],
    ['cold, refused (2 evaluations)', 0, Math.max(200, Math.floor(N / 20)), refused],
    ['warm (cache hit)', 10_000, N * 10, statements],
  ] as const;
  for (const [label, cacheEntries, n, list] of runs) {
    const d = new CedarDecider(set, { cacheEntries });
    for (const s of list) d.decideStatement(principal, target, s); // warm up the WASM module and, when on, the cache
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) d.decideStatement(principal, target, list[i % list.length]!);
    const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
    out[label] = { perSecond: 1e6 / us, usPerDecision: us };
    log(`decisions ${label}: ${(1e6 / us).toFixed(0)}/s, ${us.toFixed(2)} µs each (${n} decisions over ${list.length} statements)`);
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
    // Time spent deciding statements in the policy Warden under load, measured around each call.
    const decider = policy.gw.decider as CedarDecider;
    const timed = { ns: 0n, calls: 0 };
    const decide = decider.decideStatement.bind(decider);
    decider.decideStatement = (...args) => {
      const t0 = process.hrtime.bigint();
      try {
        return decide(...args);
      } finally {
        timed.ns += process.hrtime.bigint() - t0;
        timed.calls++;
      }
    };
    const endpoint = (name: string, w: BenchWarden): Endpoint => ({ name, host: w.host, port: w.port, user: w.user, password: w.token, database: w.database });
    const endpoints = [endpoint('allow-all', allowAll), endpoint('policy', policy)];
    const common = ['-c', String(C), '-j', String(J), '-T', String(D)];
    const workloads = [
      { key: 'select-only simple', args: ['-S', '-M', 'simple', ...common] },
      { key: 'select-only prepared', args: ['-S', '-M', 'prepared', ...common] },
      { key: 'tpcb simple', args: ['-M', 'simple', ...common] },
    ];
    type Run = { tps: number; cpuUsPerTx: number; steal: number; decisionUsPerTx?: number };
    const results: Record<string, Record<string, Run[]>> = {};
    const monitor = new CpuMonitor(() => [process.pid]);
    for (const w of workloads) {
      results[w.key] = { 'allow-all': [], policy: [] };
      for (let r = 0; r < R; r++) {
        for (const e of r % 2 === 0 ? endpoints : [...endpoints].reverse()) {
          await waitQuiet(0.15, 600, log);
          monitor.start();
          const cpu0 = process.cpuUsage();
          const ns0 = timed.ns;
          const run = await runPgbench(pgbench, e, w.args);
          const cpu = process.cpuUsage(cpu0);
          const share = monitor.stop();
          if (run.failed > 0) throw new Error(`${run.failed} transactions failed through ${e.name}`);
          const m: Run = { tps: run.tps, cpuUsPerTx: (cpu.user + cpu.system) / run.transactions, steal: share.steal + share.foreign };
          if (e.name === 'policy') m.decisionUsPerTx = Number(timed.ns - ns0) / 1000 / run.transactions;
          results[w.key]![e.name]!.push(m);
          log(`${w.key} [${r + 1}/${R}] ${e.name}: ${run.tps.toFixed(0)} TPS, Warden CPU ${m.cpuUsPerTx.toFixed(1)} µs/transaction${m.decisionUsPerTx !== undefined ? ` (deciding ${m.decisionUsPerTx.toFixed(2)} µs)` : ''}, others+steal ${(m.steal * 100).toFixed(0)}%`);
        }
      }
    }
    const evaluations = (policy.gw.decider as CedarDecider).evaluationCount;
    const lines = [
      '',
      `Decisions in process (${DEFAULT_POLICY_DIR}, ${loadPolicyDirectory(DEFAULT_POLICY_DIR).policies.size} policies):`,
      ...Object.entries(decisions).map(([k, v]) => `  ${k.padEnd(30)} ${v.perSecond.toFixed(0).padStart(10)} decisions/s  ${v.usPerDecision.toFixed(2).padStart(8)} µs`),
      '',
      `pgbench -c ${C} -j ${J} -T ${D}, scale ${S}, median of ${R} alternating runs (ratio: median of the ${R} adjacent pairs):`,
      `  ${'workload'.padEnd(22)} ${'TPS allow-all'.padStart(14)} ${'TPS policy'.padStart(11)} ${'ratio'.padStart(7)}   ${'Warden CPU µs/tx allow-all'.padStart(27)} ${'policy'.padStart(7)}   ${'deciding µs/tx'.padStart(15)} ${'of CPU'.padStart(7)}`,
      ...workloads.map((w) => {
        const a = results[w.key]!['allow-all']!;
        const p = results[w.key]!.policy!;
        const [at, pt] = [median(a.map((x) => x.tps)), median(p.map((x) => x.tps))];
        const pairRatio = median(p.map((x, k) => x.tps / a[k]!.tps));
        const [ac, pc] = [median(a.map((x) => x.cpuUsPerTx)), median(p.map((x) => x.cpuUsPerTx))];
        const dec = median(p.map((x) => x.decisionUsPerTx ?? NaN));
        return `  ${w.key.padEnd(22)} ${at.toFixed(0).padStart(14)} ${pt.toFixed(0).padStart(11)} ${pairRatio.toFixed(3).padStart(7)}   ${ac.toFixed(1).padStart(27)} ${pc.toFixed(1).padStart(7)}   ${dec.toFixed(2).padStart(15)} ${`${((dec / pc) * 100).toFixed(1)}%`.padStart(7)}`;
      }),
      `  Decisions timed under load: ${timed.calls} calls, ${(Number(timed.ns) / 1000 / Math.max(1, timed.calls)).toFixed(2)} µs each on average (the wrapper's own clock reads included).`,
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

runBenchMain(main);
