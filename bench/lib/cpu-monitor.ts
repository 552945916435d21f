/**
 * Measures, during a run, how much CPU went to processes that are not part of the benchmark (other
 * people's test suites on a shared machine). Every 500 ms it reads /proc/stat (all CPU time) and the
 * utime+stime of our processes: this process and its descendants (pgbench, pgbouncer) and the target's
 * postmaster with its backends. Foreign = all busy time - ours.
 */
import { readdirSync, readFileSync } from 'node:fs';

interface ProcStat {
  ppid: number;
  ticks: number;
}

function readProcs(): Map<number, ProcStat> {
  const out = new Map<number, ProcStat>();
  let names: string[] = [];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const s = readFileSync(`/proc/${n}/stat`, 'utf8');
      // pid (comm) state ppid ... ; comm may hold spaces and parentheses: split after the last ')'.
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      out.set(Number(n), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/**
 * /proc/stat's first line: user nice system idle iowait irq softirq steal. Process time (user, nice,
 * system) is what per-process counters can be compared with; interrupt time (mostly the loopback TCP
 * stack's softirqs, i.e. our own traffic) is charged to no process, and steal to no one in this guest.
 */
function cpuLine(): { busy: number; irq: number; steal: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: f[0]! + f[1]! + f[2]!, irq: f[5]! + f[6]!, steal: f[7]!, total };
  } catch {
    return { busy: 0, irq: 0, steal: 0, total: 0 };
  }
}

function ourPids(procs: Map<number, ProcStat>, roots: number[]): Set<number> {
  const children = new Map<number, number[]>();
  for (const [pid, p] of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(pid);
    children.set(p.ppid, list);
  }
  const ours = new Set<number>();
  const stack = [...roots];
  while (stack.length) {
    const pid = stack.pop()!;
    if (ours.has(pid)) continue;
    ours.add(pid);
    for (const c of children.get(pid) ?? []) stack.push(c);
  }
  return ours;
}

export interface CpuShare {
  /** Foreign processes' CPU as a fraction of all CPUs over the run (0..1). */
  foreign: number;
  /** Our processes' CPU as a fraction of all CPUs. */
  ours: number;
  /** Interrupt time (irq + softirq: mostly loopback TCP processing) as a fraction of all CPUs. */
  irq: number;
  /** Steal: time the hypervisor ran something else on our virtual CPUs (other guests), fraction of all CPUs. */
  steal: number;
  /** CPU seconds of the named processes (threads included, children not). */
  seconds: Record<string, number>;
}

export class CpuMonitor {
  private timer: NodeJS.Timeout | undefined;
  private foreignTicks = 0;
  private ourTicks = 0;
  private irqTicks = 0;
  private stealTicks = 0;
  private totalTicks = 0;
  private named: Record<string, number> = {};
  private lastCpu = cpuLine();
  private lastProcs = readProcs();

  /**
   * @param roots pids whose process trees are ours (this process, the postmaster).
   * @param watch processes whose own CPU time is reported by name (e.g. the proxy under test).
   */
  constructor(
    private readonly roots: () => number[],
    private readonly watch: () => Record<string, number> = () => ({}),
  ) {}

  start(): void {
    this.lastCpu = cpuLine();
    this.lastProcs = readProcs();
    this.foreignTicks = this.ourTicks = this.irqTicks = this.stealTicks = this.totalTicks = 0;
    this.named = {};
    this.timer = setInterval(() => this.sample(), 500);
    this.timer.unref();
  }

  private sample(): void {
    const cpu = cpuLine();
    const procs = readProcs();
    const ours = ourPids(procs, this.roots());
    let oursDelta = 0;
    for (const pid of ours) {
      const now = procs.get(pid);
      const before = this.lastProcs.get(pid);
      if (now) oursDelta += now.ticks - (before?.ticks ?? now.ticks);
    }
    const busy = cpu.busy - this.lastCpu.busy;
    this.totalTicks += cpu.total - this.lastCpu.total;
    this.ourTicks += oursDelta;
    this.irqTicks += cpu.irq - this.lastCpu.irq;
    this.stealTicks += cpu.steal - this.lastCpu.steal;
    for (const [name, pid] of Object.entries(this.watch())) {
      const now = procs.get(pid);
      const before = this.lastProcs.get(pid);
      if (now && before) this.named[name] = (this.named[name] ?? 0) + (now.ticks - before.ticks) / 100;
    }
    this.foreignTicks += Math.max(0, busy - oursDelta);
    this.lastCpu = cpu;
    this.lastProcs = procs;
  }

  stop(): CpuShare {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const t = this.totalTicks || 1;
    return { foreign: this.foreignTicks / t, ours: this.ourTicks / t, irq: this.irqTicks / t, steal: this.stealTicks / t, seconds: { ...this.named } };
  }
}

export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
