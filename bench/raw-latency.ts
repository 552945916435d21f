/**
 * Simple-query round-trip latency at one client, measured on the wire: a Query message ('Q') is sent and
 * the clock stops at ReadyForQuery ('Z'); the next query goes out at once. No driver, no promise per
 * query: only the cost of the path under test plus a few microseconds of this loop. Two queries:
 *  - select1: `SELECT 1`, the same text every time (Warden's classifier answers from its text cache);
 *  - point:   pgbench's `SELECT abalance FROM pgbench_accounts WHERE aid = N`, N different every time
 *             (a fresh text: Warden parses and classifies each one), on pgbench's tables.
 *
 * Several endpoints are measured in interleaved blocks (A B, B A, A B...), so a drift in machine load
 * hits all of them alike. Run as its own process (pgbench.ts starts it), so the client does not share
 * an event loop with an in-process Warden.
 *
 *   BENCH_RAW_ENDPOINTS='[{"name":"direct","host":...,"port":...,"user":...,"password":...,"database":...}]' \
 *     node --import tsx bench/raw-latency.ts [--iterations 20000] [--warmup 2000] [--block 1000] [--queries select1,point]
 * Prints one JSON object on stdout: { query: { endpoint name: { n, medianUs, p90Us, p99Us, meanUs, minUs, maxUs } } }.
 */
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { connectUpstream } from '../proxy-task/src/postgres/upstream-connection.ts';
import type { Endpoint } from './lib/pgbench-run.ts';

export interface LatencySummary {
  n: number;
  medianUs: number;
  p90Us: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
  maxUs: number;
}

function queryMessage(sql: string): Buffer {
  const text = Buffer.from(sql + '\0', 'utf8');
  const b = Buffer.alloc(5 + text.length);
  b[0] = 0x51; // Q
  b.writeInt32BE(4 + text.length, 1);
  text.copy(b, 5);
  return b;
}

type MessageSource = () => Buffer;

const QUERIES: Record<string, () => MessageSource> = {
  select1: () => {
    const m = queryMessage('SELECT 1');
    return () => m;
  },
  point: () => {
    // Distinct aids (scale >= 1 has 100000 accounts), never repeated on this connection.
    let next = 1;
    return () => queryMessage(`SELECT abalance FROM pgbench_accounts WHERE aid = ${next++};`);
  },
};

/** One connection that runs `count` Query round trips and records each one's duration in ns. */
class Pinger {
  private leftover: Buffer | undefined;
  private remaining = 0;
  private started = 0n;
  private samples: bigint[] = [];
  private done: ((s: bigint[]) => void) | undefined;
  private failed: ((e: Error) => void) | undefined;

  private msg: MessageSource = () => Buffer.alloc(0);

  constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.failed?.(e));
    socket.on('close', () => this.failed?.(new Error('connection closed')));
    socket.resume();
  }

  run(count: number, msg: MessageSource): Promise<bigint[]> {
    this.msg = msg;
    return new Promise((resolve, reject) => {
      this.samples = [];
      this.remaining = count;
      this.done = resolve;
      this.failed = reject;
      this.send();
    });
  }

  private send(): void {
    const m = this.msg();
    this.started = process.hrtime.bigint();
    this.socket.write(m);
  }

  private onData(chunk: Buffer): void {
    const buf = this.leftover ? Buffer.concat([this.leftover, chunk]) : chunk;
    this.leftover = undefined;
    let i = 0;
    while (buf.length - i >= 5) {
      const type = buf[i]!;
      const len = buf.readInt32BE(i + 1);
      if (buf.length - i < len + 1) break;
      if (type === 0x45) {
        // ErrorResponse: the measurement is void.
        this.failed?.(new Error(`server error: ${buf.subarray(i + 5, i + 1 + len).toString('utf8').replace(/\0/g, ' ')}`));
        return;
      }
      i += len + 1;
      if (type === 0x5a) {
        this.samples.push(process.hrtime.bigint() - this.started);
        if (--this.remaining > 0) this.send();
        else this.done?.(this.samples);
      }
    }
    if (i < buf.length) this.leftover = Buffer.from(buf.subarray(i));
  }

  close(): void {
    this.failed = undefined;
    this.socket.end(Buffer.from([0x58, 0, 0, 0, 4])); // Terminate
  }
}

function summarize(samplesNs: bigint[]): LatencySummary {
  const us = samplesNs.map((s) => Number(s) / 1000).sort((a, b) => a - b);
  const q = (p: number): number => us[Math.min(us.length - 1, Math.floor(p * us.length))]!;
  const mean = us.reduce((a, b) => a + b, 0) / us.length;
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { n: us.length, medianUs: r(q(0.5)), p90Us: r(q(0.9)), p99Us: r(q(0.99)), meanUs: r(mean), minUs: r(us[0]!), maxUs: r(us[us.length - 1]!) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '20000' },
      warmup: { type: 'string', default: '2000' },
      block: { type: 'string', default: '1000' },
      queries: { type: 'string', default: 'select1,point' },
    },
  });
  const iterations = Number(values.iterations);
  const warmup = Number(values.warmup);
  const block = Number(values.block);
  const endpoints = JSON.parse(process.env.BENCH_RAW_ENDPOINTS ?? '[]') as Endpoint[];
  if (endpoints.length === 0) throw new Error('BENCH_RAW_ENDPOINTS lists no endpoint');
  const queries = values.queries!.split(',').map((q) => q.trim()).filter(Boolean);
  for (const q of queries) if (!QUERIES[q]) throw new Error(`unknown query ${q}: one of ${Object.keys(QUERIES).join(', ')}`);

  const pingers: Pinger[] = [];
  for (const e of endpoints) {
    const s = await connectUpstream({
      host: e.host,
      port: e.port,
      database: e.database,
      user: e.user,
      password: e.password,
      tls: { mode: 'disable' },
      parameters: new Map([['application_name', 'warden-bench-raw']]),
      timeoutMs: 20_000,
    });
    s.socket.setNoDelay(true);
    pingers.push(new Pinger(s.socket));
  }
  const out: Record<string, Record<string, LatencySummary>> = {};
  for (const q of queries) {
    const sources = pingers.map(() => QUERIES[q]!());
    for (const [k, p] of pingers.entries()) await p.run(warmup, sources[k]!);
    const all: bigint[][] = endpoints.map(() => []);
    for (let b = 0, done = 0; done < iterations; b++) {
      const n = Math.min(block, iterations - done);
      const order = b % 2 === 0 ? pingers.map((_, k) => k) : pingers.map((_, k) => pingers.length - 1 - k);
      for (const k of order) all[k]!.push(...(await pingers[k]!.run(n, sources[k]!)));
      done += n;
    }
    out[q] = {};
    endpoints.forEach((e, k) => (out[q]![e.name] = summarize(all[k]!)));
  }
  for (const p of pingers) p.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(
  () => setTimeout(() => process.exit(0), 100).unref(),
  (err: unknown) => {
    process.stderr.write(`raw-latency: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
