/**
 * A fake AWS service at the SDK's HTTP boundary, for services with no local emulator (Secrets Manager,
 * KMS). The real SDK v3 client is used with a `requestHandler` that answers in process: the client still
 * serialises each command, signs it, and parses the answer and the service's JSON errors into its own
 * exception classes, exactly as it does against AWS. Only the service behind it is fake.
 *
 * Both services speak the AWS JSON 1.1 protocol: a POST with `X-Amz-Target: <Service>.<Operation>` and a
 * JSON body; errors are `{ "__type": "<ErrorCode>", "message": "..." }` with a 4xx/5xx status.
 */

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

/** A `requestHandler` for an SDK client config: each request goes to `operate`. */
export function awsJsonRequestHandler(operate: (call: AwsJsonCall) => Promise<unknown> | unknown): { handle(request: FakeHttpRequest): Promise<{ response: unknown }> } {
  return {
    async handle(request) {
      const target = header(request.headers, 'x-amz-target') ?? '';
      const operation = target.slice(target.indexOf('.') + 1);
      const raw = request.body;
      const body = raw === undefined ? '{}' : raw instanceof Uint8Array ? new TextDecoder().decode(raw) : String(raw);
      const accessKeyId = /Credential=([^/]+)\//.exec(header(request.headers, 'authorization') ?? '')?.[1];
      let status = 200;
      let payload: unknown;
      try {
        payload = await operate({ operation, input: JSON.parse(body || '{}') as Record<string, unknown>, accessKeyId });
      } catch (err) {
        if (!(err instanceof AwsFault)) throw err;
        status = err.status;
        payload = { __type: err.code, message: err.message };
      }
      return {
        response: {
          statusCode: status,
          headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'fake-request' },
          body: Buffer.from(JSON.stringify(payload ?? {})),
        },
      };
    },
  };
}

function header(headers: Record<string, string>, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return undefined;
}
