/**
 * Decides `connect` by invoking the policy decision function (functions/policy-decision), and every
 * statement in process. A Lambda round trip per statement would cost far more than the statement, so
 * statements go to the in-process decider, which runs the same code on the same policy files.
 *
 * Every failure throws: the SDK call failing (unknown function, credentials, network), no answer within
 * the timeout, the function failing, or an answer that is not a decision. The proxy turns a thrown error
 * into a denial (fail closed), so nothing here ever guesses an allow.
 *
 * @see https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html
 */
import { DecisionResponseSchema } from '../../core/policy/decision-answer.ts';
import { InvokeCommand, type InvokeCommandOutput, type LambdaClient } from '@aws-sdk/client-lambda';
import { z } from 'zod';
import type { Principal } from '../../core/identity/principal.ts';
import type { Decision, StatementDecider, TargetRef } from '../../core/policy/decision.ts';
import type { StatementClass } from '../../core/sql/classify.ts';

export interface LambdaConnectDeciderOptions {
  readonly client: LambdaClient;
  /** Name or ARN of the policy decision function. */
  readonly functionName: string;
  /** The whole invocation, retries included, must answer within this many milliseconds. */
  readonly timeoutMs: number;
  /** Decides statements (and knows the local policy version, when it is a CedarDecider). */
  readonly statements: StatementDecider & { readonly version?: string };
  /** Called when the function answers with a policy version other than the local one (once per version seen). */
  readonly onPolicyVersionMismatch?: (versions: { readonly lambda: string; readonly local: string }) => void;
}

export class PolicyLambdaError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PolicyLambdaError';
  }
}

/** No answer within the timeout. */
export class PolicyLambdaTimeoutError extends PolicyLambdaError {
  constructor(functionName: string, timeoutMs: number) {
    super(`policy decision function "${functionName}" did not answer within ${timeoutMs} ms`);
    this.name = 'PolicyLambdaTimeoutError';
  }
}

/** The Invoke call itself failed: unknown function, no permission, throttled, network. */
export class PolicyLambdaInvokeError extends PolicyLambdaError {
  constructor(functionName: string, cause: unknown) {
    super(`invoking policy decision function "${functionName}" failed: ${describe(cause)}`, { cause });
    this.name = 'PolicyLambdaInvokeError';
  }
}

/** The function ran and failed (X-Amz-Function-Error): an uncaught error, a timeout or a crash inside Lambda. */
export class PolicyLambdaFunctionError extends PolicyLambdaError {
  constructor(
    functionName: string,
    readonly functionError: string,
    readonly errorType: string | undefined,
    errorMessage: string | undefined,
  ) {
    super(`policy decision function "${functionName}" failed (${functionError}${errorType ? `, ${errorType}` : ''})${errorMessage ? `: ${errorMessage}` : ''}`);
    this.name = 'PolicyLambdaFunctionError';
  }
}

/** The function answered, but not with a decision: an error answer, or something malformed. */
export class PolicyLambdaAnswerError extends PolicyLambdaError {
  constructor(functionName: string, problem: string) {
    super(`policy decision function "${functionName}" gave no decision: ${problem}`);
    this.name = 'PolicyLambdaAnswerError';
  }
}

const AnswerSchema = DecisionResponseSchema;
const FunctionErrorPayloadSchema = z.object({ errorType: z.string().optional(), errorMessage: z.string().optional() });

const MAX_QUOTED_CHARS = 200;

export class LambdaConnectDecider implements StatementDecider {
  private readonly client: LambdaClient;
  private readonly functionName: string;
  private readonly timeoutMs: number;
  private readonly statements: StatementDecider & { readonly version?: string };
  private readonly onPolicyVersionMismatch: ((versions: { readonly lambda: string; readonly local: string }) => void) | undefined;
  private lambdaVersion: string | undefined;
  private reportedMismatch: string | undefined;

  constructor(opts: LambdaConnectDeciderOptions) {
    this.client = opts.client;
    this.functionName = opts.functionName;
    this.timeoutMs = opts.timeoutMs;
    this.statements = opts.statements;
    this.onPolicyVersionMismatch = opts.onPolicyVersionMismatch;
  }

  /** The policy version of the function's last answer (undefined before the first). */
  get lambdaPolicyVersion(): string | undefined {
    return this.lambdaVersion;
  }

  async decideConnect(principal: Principal, target: TargetRef): Promise<Decision> {
    const request = {
      action: 'connect',
      principal: { issuer: principal.issuer, subject: principal.subject, groups: [...principal.groups] },
      target: { name: target.name, kind: target.kind, environment: target.environment },
    };
    const out = await this.invoke(JSON.stringify(request));
    const decision = this.readDecision(out);
    this.noteVersion(decision.policyVersion);
    return Object.freeze({
      effect: decision.effect,
      policies: Object.freeze([...decision.policies]),
      ...(decision.reason !== undefined ? { reason: decision.reason } : {}),
      policyVersion: decision.policyVersion,
      ...(decision.approval ? { approval: Object.freeze({ approvers: Object.freeze([...decision.approval.approvers]), approvals: decision.approval.approvals }) } : {}),
    });
  }

  decideStatement(principal: Principal, target: TargetRef, statement: StatementClass): Decision {
    return this.statements.decideStatement(principal, target, statement);
  }

  private async invoke(payload: string): Promise<InvokeCommandOutput> {
    const signal = AbortSignal.timeout(this.timeoutMs);
    const sent = this.client.send(new InvokeCommand({ FunctionName: this.functionName, InvocationType: 'RequestResponse', Payload: Buffer.from(payload) }), { abortSignal: signal });
    // The SDK honours the signal during a request but not while it waits between retries: race it too.
    let fire: (() => void) | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      fire = () => reject(new PolicyLambdaTimeoutError(this.functionName, this.timeoutMs));
      signal.addEventListener('abort', fire, { once: true });
    });
    try {
      return await Promise.race([sent, timedOut]);
    } catch (err) {
      sent.catch(() => undefined); // settles later, after an abort; nobody waits for it
      if (err instanceof PolicyLambdaTimeoutError || signal.aborted) throw new PolicyLambdaTimeoutError(this.functionName, this.timeoutMs);
      throw new PolicyLambdaInvokeError(this.functionName, err);
    } finally {
      if (fire) signal.removeEventListener('abort', fire);
    }
  }

  private readDecision(out: InvokeCommandOutput): Extract<z.infer<typeof DecisionResponseSchema>, { decision: unknown }>["decision"] {
    const text = out.Payload ? new TextDecoder().decode(out.Payload) : '';
    if (out.FunctionError) {
      const details = FunctionErrorPayloadSchema.safeParse(parseJson(text));
      const { errorType, errorMessage } = details.success ? details.data : {};
      throw new PolicyLambdaFunctionError(this.functionName, out.FunctionError, errorType, errorMessage && quote(errorMessage));
    }
    if (out.StatusCode !== 200) throw new PolicyLambdaAnswerError(this.functionName, `invoke status ${String(out.StatusCode)}`);
    const answer = AnswerSchema.safeParse(parseJson(text));
    if (!answer.success) {
      const where = answer.error.issues.map((i) => i.path.join('.') || '(answer)').slice(0, 5).join(', ');
      throw new PolicyLambdaAnswerError(this.functionName, `malformed answer (${where}): ${quote(text)}`);
    }
    if (!('decision' in answer.data)) throw new PolicyLambdaAnswerError(this.functionName, `status ${answer.data.statusCode} ${answer.data.error.code}: ${quote(answer.data.error.message)}`);
    return answer.data.decision;
  }

  private noteVersion(lambda: string): void {
    this.lambdaVersion = lambda;
    const local = this.statements.version;
    if (local === undefined || lambda === local) return;
    if (this.reportedMismatch === lambda) return;
    this.reportedMismatch = lambda;
    this.onPolicyVersionMismatch?.({ lambda, local });
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function quote(s: string): string {
  return JSON.stringify(s.length > MAX_QUOTED_CHARS ? `${s.slice(0, MAX_QUOTED_CHARS)}…` : s);
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
