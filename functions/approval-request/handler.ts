/**
 * The approval wait's task function: middy and Powertools wired around requestApproval
 * (approval-request.ts). Clients and configuration are built once per container; an invalid
 * APPROVALS_CONFIG fails the cold start, so the task fails instead of posting to nobody.
 *
 * Environment: APPROVALS_TABLE, APPROVALS_CONFIG (JSON of the configuration's `approvals` section),
 * SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_SECRET_ID (slack-secrets.ts), SLACK_API_URL (optional),
 * POWERTOOLS_LOG_LEVEL, POWERTOOLS_SERVICE_NAME.
 */
import middy, { type MiddlewareObj } from '@middy/core';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import {
  ApprovalConfigError,
  ApprovalRequestConflictError,
  ApprovalRoutingError,
  ApprovalTaskInvalidError,
  approvalClientsFromEnv,
  approvalsConfigFromEnv,
  requestApproval,
  type ApprovalRequestResult,
} from './approval-request.ts';
import { slackSecret } from './slack-secrets.ts';

const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'warden-approval-request' });

const dependencies = {
  // The token is passed per call, so a provider may fetch or rotate it; a few quick retries fit the task's timeout.
  ...approvalClientsFromEnv({ slack: { retryConfig: { retries: 2, factor: 2, minTimeout: 200, maxTimeout: 2000 }, timeout: 5000 } }),
  slackToken: slackSecret('SLACK_BOT_TOKEN'),
  config: approvalsConfigFromEnv(),
  log: logger,
};

/** Faults of the input or configuration that no retry fixes: a warning, not an error alarm. */
const PERMANENT = [ApprovalTaskInvalidError, ApprovalRoutingError, ApprovalRequestConflictError, ApprovalConfigError];

/** Logs the failure; the error is rethrown by middy, which fails the task with the error's name. */
function errorsLogged(): MiddlewareObj<unknown, ApprovalRequestResult> {
  return {
    onError: (request) => {
      const err = request.error as Error;
      if (PERMANENT.some((c) => err instanceof c)) logger.warn('approval task refused', { errorName: err.name, errorMessage: err.message });
      else logger.error('approval task failed', err);
    },
  };
}

// The error middleware is registered first so that its onError runs last, after Powertools' own.
export const handler = middy<unknown, ApprovalRequestResult>()
  .use(errorsLogged())
  .use(injectLambdaContext(logger, { resetKeys: true }))
  .handler((event) => requestApproval(event, dependencies));
