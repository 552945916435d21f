/**
 * The policy decision function: middy and Powertools wired around answerDecisionRequest
 * (decision-request.ts). Policies and the SQL parser are loaded once per container, at module scope: an
 * invalid policy set fails the cold start, so every invocation fails and the proxy denies (fail closed).
 *
 * Environment: POLICY_DIR (default: the `policies` folder next to the handler bundle, or in the repository
 * `<repo>/policies`), POWERTOOLS_LOG_LEVEL, POWERTOOLS_SERVICE_NAME.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import middy, { type MiddlewareObj } from '@middy/core';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { loadPolicyDirectory } from '../../adapters/local/policy-files.ts';
import { CedarDecider } from '../../core/policy/cedar-decider.ts';
import { initSqlParser } from '../../core/sql/classify.ts';
import { answerDecisionRequest, errorResponse, parseDecisionRequest, type DecisionResponse } from './decision-request.ts';

const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'warden-policy-decision' });

function policyDirectory(): string {
  if (process.env.POLICY_DIR) return process.env.POLICY_DIR;
  const candidates = [new URL('./policies', import.meta.url), new URL('../../policies', import.meta.url)].map((u) => fileURLToPath(u));
  return candidates.find((d) => existsSync(d)) ?? candidates[0]!;
}

const decider = new CedarDecider(loadPolicyDirectory(policyDirectory()));
await initSqlParser();
logger.info('policy set loaded', { policyVersion: decider.version });

async function decide(event: unknown): Promise<DecisionResponse> {
  const request = parseDecisionRequest(event);
  const decision = answerDecisionRequest(decider, request);
  // Who, what and the outcome; never the SQL text, which may hold data.
  logger.info('decided', {
    action: request.action,
    principal: { issuer: request.principal.issuer, subject: request.principal.subject },
    target: request.target.name,
    effect: decision.effect,
    policies: decision.policies,
    policyVersion: decision.policyVersion,
  });
  return { statusCode: 200, decision };
}

/** Turns every error into an answer: a 400 naming the bad fields, or a generic 500 that is logged. */
function errorsAsAnswers(): MiddlewareObj<unknown, DecisionResponse> {
  return {
    onError: (request) => {
      const response = errorResponse(request.error);
      if (response.statusCode === 500) logger.error('decision failed', request.error as Error);
      else logger.warn('invalid decision request', { problems: response.error.message });
      request.response = response;
    },
  };
}

// The error middleware is registered first so that its onError runs last, after Powertools' own.
export const handler = middy<unknown, DecisionResponse>()
  .use(errorsAsAnswers())
  .use(injectLambdaContext(logger, { resetKeys: true }))
  .handler(decide);
