/**
 * Time from an approver's decision to the held statement's result at the agent, on the embedded default:
 * the shipped policies hold a writer's UPDATE on a production target (wait mode); an approver's vote is
 * written with the same core call `warden approvals approve` makes; the agent (node-postgres, in this
 * process with Warden) gets its result.
 *
 *   node --import tsx bench/approvals.ts [--rounds 30] [--json out.json]
 *
 * Per round: `vote` = the vote's conditional write (lock, re-read, write, rename, fsync); `to result` =
 * from the vote written to the agent's CommandComplete (Warden noticing the file change, recording the
 * outcome in the session's trail, running the UPDATE). Also one round through the CLI process itself, for
 * what an approver at a terminal waits for (mostly Node starting).
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { approvalsDir, LocalApprovalStore } from '../adapters/local/approval-files.ts';
import type { ApprovalState } from '../core/approval/approval-request.ts';
import { approverById } from '../core/approval/approval-rules.ts';
import { recordVote } from '../core/approval/approval-store.ts';
import { killLiveChildren, runBenchMain } from './lib/proc.ts';
import { startBenchTarget } from './lib/target.ts';
import { BENCH_CREDENTIAL, BENCH_TARGET_NAME, DEFAULT_POLICY_DIR, startBenchWarden } from './lib/warden.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '30' }, json: { type: 'string' } } });
const ROUNDS = Number(values.rounds);
const APPROVERS = [{ id: 'alice', groups: ['db-approvers'] }];
const BIN = fileURLToPath(new URL('../cli/bin/warden.mjs', import.meta.url));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const target = await startBenchTarget();
  const warden = await startBenchWarden({
    targetHost: target.host,
    targetPort: target.port,
    targetDatabase: target.database,
    targetUser: target.user,
    targetPassword: target.password,
    policyDir: DEFAULT_POLICY_DIR,
    groups: ['writers'],
    config: {
      targets: [{ name: BENCH_TARGET_NAME, kind: 'postgres', host: target.host, port: target.port, database: target.database, credential: BENCH_CREDENTIAL, environment: 'production' }],
      approvals: { mode: 'wait', approvers: APPROVERS },
    },
  });
  const store = new LocalApprovalStore({ dir: approvalsDir(warden.loaded.stateDir) });
  const agent = new pg.Client({ host: warden.host, port: warden.port, user: warden.user, password: warden.token, database: warden.database });
  try {
    await agent.connect();
    const direct = new pg.Client({ host: target.host, port: target.port, user: target.user, password: target.password, database: target.database });
    await direct.connect();
    await direct.query('CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n int NOT NULL); INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING');
    await direct.end();

    const pending = async (): Promise<ApprovalState> => {
      for (;;) {
        const [s] = await store.listPending();
        if (s) return s;
        await new Promise((r) => setTimeout(r, 2));
      }
    };
    const voteMs: number[] = [];
    const toResultMs: number[] = [];
    for (let r = 0; r < ROUNDS + 1; r++) {
      const q = agent.query('UPDATE counter SET n = n + 1 WHERE id = 1');
      const held = await pending();
      const t0 = performance.now();
      const v = await recordVote(store, held.request.id, { approver: approverById(APPROVERS, 'alice'), choice: 'approve', channel: 'cli', now: new Date() });
      if (v.kind !== 'accepted') throw new Error(`vote not accepted: ${JSON.stringify(v)}`);
      const t1 = performance.now();
      const res = await q;
      const t2 = performance.now();
      if (res.rowCount !== 1) throw new Error('the UPDATE did not run');
      if (r === 0) continue; // warm-up
      voteMs.push(t1 - t0);
      toResultMs.push(t2 - t1);
    }

    // One round through the CLI process.
    const configFile = join(warden.loaded.stateDir, 'bench.config.yaml');
    writeFileSync(configFile, [`stateDir: ${warden.loaded.stateDir}`, 'identity:', '  devIssuer:', '    enabled: true', 'approvals:', '  approvers:', '    - { id: alice, groups: [db-approvers] }', ''].join('\n'));
    const q = agent.query('UPDATE counter SET n = n + 1 WHERE id = 1');
    const held = await pending();
    const c0 = performance.now();
    let resultAt = 0;
    void q.then(() => (resultAt = performance.now()));
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, [BIN, '--config', configFile, 'approvals', 'approve', held.request.id, '--as', 'alice'], { timeout: 60_000 }, (err) => (err ? reject(err) : resolve())),
    );
    const cliExit = performance.now() - c0;
    await q;
    const cliToResult = resultAt - c0;

    const lines = [
      '',
      `Approval on the embedded default, ${ROUNDS} rounds (after one warm-up), wait mode, node-postgres agent:`,
      `  vote written (core recordVote)        p50 ${pct(voteMs, 50).toFixed(1)} ms  p95 ${pct(voteMs, 95).toFixed(1)} ms  max ${Math.max(...voteMs).toFixed(1)} ms`,
      `  vote written -> result at the agent   p50 ${pct(toResultMs, 50).toFixed(1)} ms  p95 ${pct(toResultMs, 95).toFixed(1)} ms  max ${Math.max(...toResultMs).toFixed(1)} ms`,
      `  through the CLI: command started -> result ${cliToResult.toFixed(0)} ms (the command itself exited after ${cliExit.toFixed(0)} ms)`,
      `  goal: under 500 ms from the decision to the result`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    if (values.json) writeFileSync(values.json, JSON.stringify({ rounds: ROUNDS, voteMs, toResultMs, cliToResultMs: cliToResult, cliExitMs: cliExit }, null, 2));
  } finally {
    await agent.end().catch(() => undefined);
    await warden.stop().catch(() => undefined);
    await target.stop();
    killLiveChildren();
  }
}

runBenchMain(main);
