/**
 * The approval outcome function: middy and Powertools wired around handleOutcomeEvent
 * (approval-outcome.ts). Invoked by the approval state machine's RecordOutcome task and by the
 * EventBridge rule on "Step Functions Execution Status Change" (status ABORTED) of that state machine.
 *
 * Environment: APPROVALS_TABLE, SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_SECRET_ID
 * (../approval-request/slack-secrets.ts), SLACK_API_URL (optional, e.g. GovSlack's API),
 * POWERTOOLS_LOG_LEVEL, POWERTOOLS_SERVICE_NAME.
 */
import middy, { type MiddlewareObj } from '@middy/core';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { WebClient } from '@slack/web-api';
import { DynamoDbApprovalStore } from '../../adapters/aws/dynamodb-approval-store.ts';
import { slackSecret } from '../approval-request/slack-secrets.ts';
import { ApprovalOutcomeEventInvalidError, handleOutcomeEvent, parseOutcomeEvent, type ApprovalOutcomeDeps, type OutcomeResult } from './approval-outcome.ts';

const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'warden-approval-outcome' });

const tableName = process.env.APPROVALS_TABLE;
if (!tableName) throw new Error('APPROVALS_TABLE is not set');

const web = new WebClient(undefined, {
  ...(process.env.SLACK_API_URL ? { slackApiUrl: process.env.SLACK_API_URL } : {}),
  // The state machine retries the whole invocation; a few quick retries here absorb a blip first.
  retryConfig: { retries: 2, factor: 2, minTimeout: 200, maxTimeout: 2000 },
  timeout: 5000,
  allowAbsoluteUrls: false,
});

const slackToken = slackSecret('SLACK_BOT_TOKEN');

const dependencies: ApprovalOutcomeDeps = {
  store: new DynamoDbApprovalStore({ client: new DynamoDBClient({}), tableName }),
  slack: {
    chat: {
      // Read per call: a missing token fails the Slack update, not the recording of the outcome before it.
      update: async (args) => web.chat.update({ ...args, token: await slackToken() }),
    },
  },
  logger,
};

async function recordOutcome(event: unknown): Promise<OutcomeResult> {
  return handleOutcomeEvent(dependencies, parseOutcomeEvent(event));
}

/** Logs the failure; middy rethrows it, so the task (or the asynchronous invocation) is retried. */
function errorsLogged(): MiddlewareObj<unknown, OutcomeResult> {
  return {
    onError: (request) => {
      const err = request.error as Error;
      if (err instanceof ApprovalOutcomeEventInvalidError) logger.warn('invalid approval outcome event', { problems: err.problems });
      else logger.error('recording the approval outcome failed', err);
    },
  };
}

// The error middleware is registered first so that its onError runs last, after Powertools' own.
export const handler = middy<unknown, OutcomeResult>()
  .use(errorsLogged())
  .use(injectLambdaContext(logger, { resetKeys: true }))
  .handler(recordOutcome);
