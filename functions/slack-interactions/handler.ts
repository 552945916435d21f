/**
 * Slack's interactivity endpoint (a Lambda function URL): middy and Powertools wired around
 * handleSlackInteraction (slack-interactions.ts). Clients and configuration are built once per container.
 *
 * Environment: APPROVALS_TABLE, APPROVALS_CONFIG (JSON of the configuration's `approvals` section),
 * SLACK_SIGNING_SECRET or SLACK_SIGNING_SECRET_ID, SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_SECRET_ID
 * (../approval-request/slack-secrets.ts), SLACK_API_URL (optional), POWERTOOLS_LOG_LEVEL,
 * POWERTOOLS_SERVICE_NAME.
 */
import middy, { type MiddlewareObj } from '@middy/core';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { approvalClientsFromEnv, approvalsConfigFromEnv, approversOf } from '../approval-request/approval-request.ts';
import { slackSecret } from '../approval-request/slack-secrets.ts';
import { handleSlackInteraction, type FunctionUrlResult } from './slack-interactions.ts';

const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'warden-slack-interactions' });

const dependencies = {
  // Slack waits 3 seconds for the answer: no retries and no waiting on rate limits here.
  ...approvalClientsFromEnv({ slack: { retryConfig: { retries: 0 }, rejectRateLimitedCalls: true, timeout: 2000 } }),
  slackToken: slackSecret('SLACK_BOT_TOKEN'),
  signingSecret: slackSecret('SLACK_SIGNING_SECRET'),
  approvers: approversOf(approvalsConfigFromEnv()),
  log: logger,
};

/** Anything unexpected is a generic 500 (Slack retries; a duplicate vote is harmless); details go to the log only. */
function errorsAsAnswers(): MiddlewareObj<APIGatewayProxyEventV2, FunctionUrlResult> {
  return {
    onError: (request) => {
      logger.error('slack interaction failed', request.error as Error);
      request.response = { statusCode: 500, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 'internal error' };
    },
  };
}

// The error middleware is registered first so that its onError runs last, after Powertools' own.
export const handler = middy<APIGatewayProxyEventV2, FunctionUrlResult>()
  .use(errorsAsAnswers())
  .use(injectLambdaContext(logger, { resetKeys: true }))
  .handler((event) => handleSlackInteraction(event, dependencies));
