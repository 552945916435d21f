/**
 * Warden in a process of its own, for profiling (`node --cpu-prof --import tsx bench/warden-process.ts`):
 * the same wiring as bench/pgbench.ts (startGateway, audit on with the default durability, dev issuer).
 *
 * Input: env BENCH_WARDEN_SPEC, JSON of BenchWardenSpec (target host, port, database, user, password).
 * Output: one JSON line on stdout once listening: { port, host, user, database, token }.
 * SIGTERM / SIGINT: closes the gateway and exits normally, so --cpu-prof writes its profile; the audit
 * sink's counters and the process's resource usage (CPU seconds, context switches: a sampling profile
 * counts wall time, so time spent preempted inside a syscall shows up as that syscall) go to stderr as
 * one JSON line.
 */
import type { BenchWardenSpec } from './lib/warden.ts';
import { startBenchWarden } from './lib/warden.ts';

async function main(): Promise<void> {
  const raw = process.env.BENCH_WARDEN_SPEC;
  if (!raw) throw new Error('BENCH_WARDEN_SPEC is not set');
  const spec = JSON.parse(raw) as BenchWardenSpec;
  const w = await startBenchWarden(spec, (process.env.WARDEN_LOG_LEVEL as 'warn' | undefined) ?? 'warn');
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    const stats = w.gw.localAudit?.stats();
    const ru = process.resourceUsage();
    const usage = {
      userSeconds: ru.userCPUTime / 1e6,
      systemSeconds: ru.systemCPUTime / 1e6,
      voluntaryContextSwitches: ru.voluntaryContextSwitches,
      involuntaryContextSwitches: ru.involuntaryContextSwitches,
      wallSeconds: process.uptime(),
    };
    w.stop().then(
      () => {
        process.stderr.write(JSON.stringify({ audit: stats, usage }) + '\n');
        process.exit(0);
      },
      (err: unknown) => {
        process.stderr.write(`warden-process: stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(JSON.stringify({ host: w.host, port: w.port, user: w.user, database: w.database, token: w.token }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`warden-process: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
