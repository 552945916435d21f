/**
 * A fake AWS service at the SDK's HTTP boundary, for services with no local emulator (Secrets Manager,
 * KMS). The real SDK v3 client is used with a `requestHandler` that answers in process: the client still
 * serialises each command, signs it, and parses the answer and the service's JSON errors into its own
 * exception classes, exactly as it does against AWS. Only the service behind it is fake.
 *
 * `serveAwsJson` puts the same fake behind an HTTP server on 127.0.0.1, for a client in another process
 * (a Warden process pointed at it with AWS_ENDPOINT_URL_<SERVICE>).
 *
 * Both services speak the AWS JSON 1.1 protocol: a POST with `X-Amz-Target: <Service>.<Operation>` and a
 * JSON body; errors are `{ "__type": "<ErrorCode>", "message": "..." }` with a 4xx/5xx status.
 */

import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AwsJsonCall {
  readonly operation: string;
  readonly input: Record<string, unknown>;
  /** The access key id the request was signed with (tests use it to play different IAM roles). */
  readonly accessKeyId: string | undefined;
}

/** Thrown by a fake operation: becomes the service's JSON error response. */
export class AwsFault extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
    this.name = code;
  }
}

interface FakeHttpRequest {
  headers: Record<string, string>;
  body?: unknown;
}

type Operate = (call: AwsJsonCall) => Promise<unknown> | unknown;

interface AwsJsonAnswer {
  status: number;
  body: Buffer;
}

const ANSWER_HEADERS = { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'fake-request' } as const;

/** One request of the JSON protocol: the operation from X-Amz-Target, the caller from the signature. */
async function answer(operate: Operate, headers: Record<string, string | undefined>, body: string): Promise<AwsJsonAnswer> {
  const target = header(headers, 'x-amz-target') ?? '';
  const operation = target.slice(target.indexOf('.') + 1);
  const accessKeyId = /Credential=([^/]+)\//.exec(header(headers, 'authorization') ?? '')?.[1];
  let status = 200;
  let payload: unknown;
  try {
    payload = await operate({ operation, input: JSON.parse(body || '{}') as Record<string, unknown>, accessKeyId });
  } catch (err) {
    if (!(err instanceof AwsFault)) throw err;
    status = err.status;
    payload = { __type: err.code, message: err.message };
  }
  return { status, body: Buffer.from(JSON.stringify(payload ?? {})) };
}

/** A `requestHandler` for an SDK client config: each request goes to `operate`. */
export function awsJsonRequestHandler(operate: Operate): { handle(request: FakeHttpRequest): Promise<{ response: unknown }> } {
  return {
    async handle(request) {
      const raw = request.body;
      const body = raw === undefined ? '{}' : raw instanceof Uint8Array ? new TextDecoder().decode(raw) : String(raw);
      const a = await answer(operate, request.headers, body);
      return { response: { statusCode: a.status, headers: { ...ANSWER_HEADERS }, body: a.body } };
    },
  };
}

export interface AwsJsonServer {
  /** `http://127.0.0.1:<port>`, for AWS_ENDPOINT_URL_<SERVICE> or a client's `endpoint`. */
  readonly endpoint: string;
  close(): Promise<void>;
}

/**
 * `operate` behind an HTTP server on 127.0.0.1. A fault that is not an AwsFault is a fake's bug: it
 * answers 500 with the message, which the SDK reports as an unknown service error.
 */
export async function serveAwsJson(operate: Operate): Promise<AwsJsonServer> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      answer(operate, flatHeaders(req.headers), Buffer.concat(chunks).toString('utf8')).then(
        (a) => {
          res.writeHead(a.status, ANSWER_HEADERS);
          res.end(a.body);
        },
        (err: unknown) => {
          res.writeHead(500, ANSWER_HEADERS);
          res.end(JSON.stringify({ __type: 'InternalFailure', message: (err as Error).message }));
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      // Keep-alive sockets of the SDK would otherwise hold the server open.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function flatHeaders(headers: IncomingHttpHeaders): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) out[k] = Array.isArray(v) ? v.join(',') : v;
  return out;
}

function header(headers: Record<string, string | undefined>, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return undefined;
}
