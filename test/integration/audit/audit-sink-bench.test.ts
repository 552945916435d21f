/**
 * Micro-benchmark (printed, not asserted beyond sanity): durable append latency with 8 concurrent
 * sessions, each doing sequential durable appends (the shape of pgbench TPC-B through Warden with
 * durable-before-forward: every write statement waits for its audit event to be on disk).
 * WARDEN_AUDIT_BENCH_MS overrides the 2 s duration.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditEventBodyOf } from '../../../core/audit/events.ts';
import { newSessionId, sessionStart, useAuditSinkFixture } from '../../helpers/audit-sink.ts';

const audit = useAuditSinkFixture({ tempPrefix: 'warden-audit-bench-', readOnlyWindowMs: 100 });

const START = sessionStart({ tls: false, startupUser: 'bench' });

const stmt = (statementId: number): AuditEventBodyOf<'statement'> => ({
  type: 'statement',
  statementId,
  protocol: 'simple',
  text: `UPDATE pgbench_accounts SET abalance = abalance + ${statementId % 5000} WHERE aid = ${statementId * 7919};`,
  classification: { operation: 'update' },
  decision: { effect: 'allow', policies: ['writers'] },
  startedAt: new Date().toISOString(),
});

async function run(label: string, think: (() => Promise<void>) | null): Promise<void> {
  const durationMs = Number(process.env.WARDEN_AUDIT_BENCH_MS ?? 2000);
  const sink = await audit.openSink({ dir: audit.tempDir() });
  const sessions = Array.from({ length: 8 }, () => sink.openSession(newSessionId(), START));
  await Promise.all(sessions.map((s) => s.ready));
  const before = sink.stats();
  const samples: number[] = [];
  const deadline = performance.now() + durationMs;
  const t0 = performance.now();
  await Promise.all(
    sessions.map(async (s) => {
      for (let i = 1; performance.now() < deadline; i++) {
        const t = performance.now();
        await s.append(stmt(i), { durable: true });
        samples.push(performance.now() - t);
        if (think) await think();
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const st = sink.stats();
  await Promise.all(sessions.map((s) => s.end({ reason: 'client_terminate', statements: 0, bytesFromClient: 0, bytesToClient: 0, durationMs: 0 })));
  await sink.close();
  samples.sort((a, b) => a - b);
  const pct = (p: number) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!.toFixed(3);
  const rounds = st.commits - before.commits;
  const fsyncs = st.fsyncs - before.fsyncs;
  console.log(
    `bench ${label}: ${samples.length} appends in ${elapsed.toFixed(2)} s = ${(samples.length / elapsed).toFixed(0)}/s; ` +
      `latency p50 ${pct(0.5)} ms, p90 ${pct(0.9)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms; ` +
      `${rounds} rounds (${(samples.length / Math.max(1, rounds)).toFixed(2)} appends/round), ${fsyncs} fsyncs (${(fsyncs / Math.max(1, rounds)).toFixed(2)}/round)`,
  );
  assert.ok(samples.length > 0);
}

test('bench: durable append latency, 8 sessions x sequential durable appends', async () => {
  // Back to back: the 8 sessions fall into lockstep, every round carries all of them.
  await run('8 sessions back-to-back', null);
  // A simulated server round trip between statements (0 to 1 ms) desynchronizes the sessions,
  // as in pgbench: rounds carry fewer events and arrive more often.
  await run('8 sessions with 0-1 ms think time', () =>
    Math.random() < 0.5 ? new Promise((r) => setTimeout(r, 1)) : new Promise((r) => setImmediate(r)),
  );
});
