/**
 * Container health check: opens a TCP connection to the PostgreSQL listener and sends an SSLRequest.
 * A listener that answers 'S' or 'N' is accepting and framing connections; anything else (refused,
 * silent, another byte) exits 1. The connection is closed before any startup message, so no session and
 * no audit event is created.
 * Usage: node dist/proxy/healthcheck.mjs [port] [host]
 * The port defaults to `listeners.postgres.port` of WARDEN_CONFIG_JSON (the container's configuration),
 * else 5432, the port the image exposes: a listener configured anywhere else fails the check on purpose.
 * The host defaults to 127.0.0.1 (in the container the listener binds every address).
 * @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL
 */
import net from 'node:net';

const SSL_REQUEST_CODE = 80877103;
const TIMEOUT_MS = 3000;
const DEFAULT_PORT = 5432;

type HealthResult = { ok: true; answer: 'S' | 'N' } | { ok: false; reason: string };

function configuredPort(configJson: string | undefined): number {
  if (!configJson) return DEFAULT_PORT;
  try {
    const port: unknown = (JSON.parse(configJson) as { listeners?: { postgres?: { port?: unknown } } }).listeners?.postgres?.port;
    return typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536 ? port : DEFAULT_PORT;
  } catch {
    return DEFAULT_PORT;
  }
}

function checkListener(host: string, port: number, timeoutMs = TIMEOUT_MS): Promise<HealthResult> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const finish = (r: HealthResult): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    socket.once('connect', () => {
      const request = Buffer.alloc(8);
      request.writeInt32BE(8, 0);
      request.writeInt32BE(SSL_REQUEST_CODE, 4);
      socket.write(request);
    });
    socket.once('data', (chunk: Buffer) => {
      const answer = String.fromCharCode(chunk[0]!);
      finish(answer === 'S' || answer === 'N' ? { ok: true, answer } : { ok: false, reason: `unexpected answer 0x${chunk[0]!.toString(16)}` });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => finish({ ok: false, reason: err.code ?? err.message }));
    socket.once('close', () => finish({ ok: false, reason: 'closed without an answer' }));
  });
}

async function main(): Promise<void> {
  const port = process.argv[2] ? Number(process.argv[2]) : configuredPort(process.env.WARDEN_CONFIG_JSON);
  const host = process.argv[3] ?? '127.0.0.1';
  const r = await checkListener(host, port);
  if (r.ok) {
    process.stdout.write(`healthy: ${host}:${port} answered '${r.answer}'\n`);
    process.exit(0);
  }
  process.stderr.write(`unhealthy: ${host}:${port}: ${r.reason}\n`);
  process.exit(1);
}

await main();
