/**
 * A fake Step Functions at its HTTP boundary: no Step Functions emulator is available here, so a local
 * server answers StartExecution, StopExecution and DescribeExecution in the service's JSON 1.0 protocol,
 * as the API reference describes them (a running execution started again with the same name and input
 * answers as the first call; a closed one, or another input, is ExecutionAlreadyExists; an unknown
 * execution is ExecutionDoesNotExist). A real SFNClient talks to it (`client`, or another process through
 * AWS_ENDPOINT_URL_SFN = `endpoint`), so the SDK's serialisation and error parsing are exercised. Nothing
 * runs: an execution stays RUNNING until a test changes its status.
 *
 * @see https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SFNClient } from '@aws-sdk/client-sfn';
import { TEST_CREDENTIALS, TEST_REGION } from './dynalite.ts';

export interface FakeExecution {
  name: string;
  stateMachineArn: string;
  input: string;
  status: 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'ABORTED';
  startDate: number;
  stop?: { error?: string; cause?: string };
}

export interface StepFunctionsCall {
  operation: string;
  body: Record<string, unknown>;
}

export interface FakeStepFunctions {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** A client of this fake (dummy credentials, no retries); closed by `close()`. */
  readonly client: SFNClient;
  /** By execution ARN. */
  readonly executions: Map<string, FakeExecution>;
  /** Every request, in arrival order. */
  readonly calls: StepFunctionsCall[];
  /** The execution named `name` (names are unique per state machine; tests use one). */
  execution(name: string): FakeExecution | undefined;
  close(): Promise<void>;
}

export async function startFakeStepFunctions(): Promise<FakeStepFunctions> {
  const executions = new Map<string, FakeExecution>();
  const calls: StepFunctionsCall[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const operation = String(req.headers['x-amz-target'] ?? '').replace(/^AWSStepFunctions\./, '');
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, string>;
      calls.push({ operation, body });
      const reply = (status: number, payload: unknown, errorType?: string): void => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'req-1', ...(errorType ? { 'x-amzn-errortype': errorType } : {}) });
        res.end(JSON.stringify(payload));
      };
      const fail = (type: string, message: string): void => reply(400, { __type: `com.amazonaws.swf.service.v2.model#${type}`, message }, type);
      if (operation === 'StartExecution') {
        const arn = body.stateMachineArn!.replace(':stateMachine:', ':execution:') + ':' + body.name;
        const existing = executions.get(arn);
        if (existing) {
          if (existing.status === 'RUNNING' && existing.input === body.input) return reply(200, { executionArn: arn, startDate: existing.startDate / 1000 });
          return fail('ExecutionAlreadyExists', `Execution Already Exists: '${arn}'`);
        }
        const started: FakeExecution = { name: body.name!, stateMachineArn: body.stateMachineArn!, input: body.input!, status: 'RUNNING', startDate: Date.now() };
        executions.set(arn, started);
        return reply(200, { executionArn: arn, startDate: started.startDate / 1000 });
      }
      const execution = executions.get(body.executionArn!);
      if (!execution) return fail('ExecutionDoesNotExist', `Execution Does Not Exist: '${body.executionArn}'`);
      if (operation === 'StopExecution') {
        if (execution.status === 'RUNNING') {
          execution.status = 'ABORTED';
          execution.stop = { ...(body.error !== undefined ? { error: body.error } : {}), ...(body.cause !== undefined ? { cause: body.cause } : {}) };
        }
        return reply(200, { stopDate: Date.now() / 1000 });
      }
      if (operation === 'DescribeExecution') {
        return reply(200, {
          executionArn: body.executionArn,
          stateMachineArn: execution.stateMachineArn,
          name: execution.name,
          status: execution.status,
          startDate: execution.startDate / 1000,
          input: execution.input,
        });
      }
      return fail('UnknownOperationException', operation);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new SFNClient({ endpoint, region: TEST_REGION, credentials: TEST_CREDENTIALS, maxAttempts: 1 });
  return {
    endpoint,
    client,
    executions,
    calls,
    execution: (name) => [...executions.values()].find((e) => e.name === name),
    async close() {
      client.destroy();
      // Keep-alive sockets of the SDK would otherwise hold the server open.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
