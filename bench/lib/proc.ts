/**
 * Child processes and ports for the benchmarks: run a command and capture its output, wait for a TCP
 * port, find a free one. Children get an environment without PG* variables, so nothing redirects them.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** process.env without PG* variables, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  return { ...env, ...extra };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Children started by run()/spawnTracked() that are still alive: killed on an abort. */
const liveChildren = new Set<ChildProcess>();

export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  const child = spawn(cmd, args, opts);
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => liveChildren.delete(child));
  return child;
}

/** Sends SIGTERM to every child still running (each by its own pid). */
export function killLiveChildren(): void {
  for (const c of liveChildren) {
    try {
      c.kill('SIGTERM');
    } catch {
      // already gone
    }
  }
}

export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(cmd, args, { env: opts.env ?? cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.once('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`, { cause: e }));
    });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(opts.input ?? '');
  });
}

/** Like run() but throws, with stderr, on a non-zero exit. */
export async function runOk(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code ?? r.signal}):\n${(r.stderr || r.stdout).trim()}`);
  }
  return r;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once a TCP connection to host:port succeeds; rejects after timeoutMs. */
export async function waitForPort(host: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function cpuTimes(): { idle: number; total: number } {
  // /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
  let idle = 0;
  let total = 0;
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    idle = f[3]! + f[4]! + f[5]! + f[6]!; // idle, iowait, irq, softirq; steal (other guests) counts as busy
    total = f.reduce((a, b) => a + b, 0);
  } catch {
    // not Linux: report idle
  }
  return { idle, total };
}

/** Fraction (0..1) of all CPUs busy during the next `ms` milliseconds, from /proc/stat. */
export async function cpuBusy(ms = 1000): Promise<number> {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/**
 * Waits until the machine is quiet: less than `threshold` of all CPUs busy over a 2-second sample while
 * the benchmark itself is idle (between runs). Gives up after timeoutMs and returns the last sample.
 */
export async function waitQuiet(threshold: number, timeoutMs: number, log: (m: string) => void): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let warned = false;
  for (;;) {
    const busy = await cpuBusy(2000);
    if (busy < threshold || threshold <= 0) return busy;
    if (Date.now() > deadline) {
      log(`machine still busy (${(busy * 100).toFixed(0)}% CPU outside runs) after ${timeoutMs / 1000} s; running anyway`);
      return busy;
    }
    if (!warned) log(`machine busy (${(busy * 100).toFixed(0)}% CPU while the benchmark is idle): waiting for it to quiet down`);
    warned = true;
    await sleep(3000);
  }
}

/** Runs a bench script's main: a failure is printed with its stack, children are killed, exit 1. */
export function runBenchMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${String(err instanceof Error ? err.stack : err)}\n`);
    killLiveChildren();
    process.exit(1);
  });
}
