/**
 * A local stand-in for the Lambda service at the level of its HTTP API, for tests: no Lambda emulator is
 * available here, so this server answers the Invoke operation the way Lambda does and runs the real
 * handler in process. Point a real `LambdaClient` at it (`endpoint: server.url`, any credentials,
 * region us-east-1) and the SDK's serialisation, signing, error parsing and retries are all exercised.
 *
 * Implemented: `POST /2015-03-31/functions/{FunctionName}/invocations` (name, partial or full ARN, with an
 * optional `Qualifier`), RequestResponse only. A handler's return value is the 200 payload (JSON); a
 * handler that throws gives 200 with `X-Amz-Function-Error: Unhandled` and `{errorType, errorMessage,
 * trace}`; an unknown function 404 ResourceNotFoundException; a payload that is not JSON 400
 * InvalidRequestContentException.
 *
 * @see https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context } from 'aws-lambda';

export type LambdaFunction = (event: unknown, context: Context) => unknown;

export interface InvokeRecord {
  readonly functionName: string;
  readonly payload: unknown;
}

export interface LambdaInvokeServer {
  /** `http://127.0.0.1:<port>`: the LambdaClient's endpoint. */
  readonly url: string;
  readonly port: number;
  /** Every Invoke request received, in order (also those for unknown functions). */
  readonly requests: InvokeRecord[];
  /** Stops listening and drops open connections (a hanging invocation included). */
  close(): Promise<void>;
}

const ACCOUNT = '123456789012';
const REGION = 'us-east-1';
const INVOKE_PATH = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/;

/** A Lambda context object as the Node.js runtime passes it. */
export function lambdaContext(functionName: string, o: { timeoutMs?: number; memoryMB?: number } = {}): Context {
  const deadline = Date.now() + (o.timeoutMs ?? 3000);
  const unsupported = (): never => {
    throw new Error('callback-style completion is not supported by async handlers');
  };
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${functionName}`,
    memoryLimitInMB: String(o.memoryMB ?? 256),
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `${new Date().toISOString().slice(0, 10).replaceAll('-', '/')}/[$LATEST]${randomUUID().replaceAll('-', '')}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: unsupported,
    fail: unsupported,
    succeed: unsupported,
  };
}

/** `name`, `name:qualifier`, `123456789012:function:name` or a full ARN → `name`. */
function functionNameOf(raw: string): string {
  const parts = raw.split(':');
  const i = parts.indexOf('function');
  return i >= 0 ? (parts[i + 1] ?? '') : parts[0]!;
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) ?? 'null';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-amzn-requestid': randomUUID(), ...headers });
  res.end(text);
}

function sendServiceError(res: http.ServerResponse, status: number, type: string, message: string): void {
  send(res, status, { Type: 'User', message }, { 'x-amzn-errortype': type });
}

export async function startLambdaInvokeServer(functions: Readonly<Record<string, LambdaFunction>>): Promise<LambdaInvokeServer> {
  const requests: InvokeRecord[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        const m = INVOKE_PATH.exec(url.pathname);
        if (req.method !== 'POST' || !m) return sendServiceError(res, 404, 'UnknownOperationException', `no such operation: ${req.method} ${url.pathname}`);
        const name = functionNameOf(decodeURIComponent(m[1]!));
        const body = Buffer.concat(chunks).toString('utf8');
        let payload: unknown;
        try {
          payload = body === '' ? null : JSON.parse(body);
        } catch {
          return sendServiceError(res, 400, 'InvalidRequestContentException', 'Could not parse request body into json');
        }
        requests.push({ functionName: name, payload });
        const fn = functions[name];
        if (!fn) return sendServiceError(res, 404, 'ResourceNotFoundException', `Function not found: arn:aws:lambda:${REGION}:${ACCOUNT}:function:${name}`);
        const headers = { 'x-amz-executed-version': '$LATEST' };
        try {
          const result = await fn(payload, lambdaContext(name));
          send(res, 200, result ?? null, headers);
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          send(res, 200, { errorType: e.name, errorMessage: e.message, trace: (e.stack ?? '').split('\n') }, { ...headers, 'x-amz-function-error': 'Unhandled' });
        }
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
