/**
 * Where the Slack functions read the Slack app's secrets. A deployment names a Secrets Manager secret (its
 * ARN or name) in SLACK_BOT_TOKEN_SECRET_ID and SLACK_SIGNING_SECRET_ID (infra/lib/functions.ts sets
 * them), and the value is fetched at run time, cached for a few minutes, so that a value put into the
 * secret takes effect without a deployment and never appears in the function's configuration. Without
 * such a variable the value is read from `<NAME>` itself (tests, local runs).
 *
 * @see https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
 */
import { GetSecretValueCommand, SecretsManagerClient, type GetSecretValueCommandOutput } from '@aws-sdk/client-secrets-manager';
import { ApprovalConfigError, envSecret } from './approval-request.ts';

/** The Slack values a function may need, and the variable that names each one's secret (ARN or name). */
export const SLACK_SECRET_ID_VARIABLES = {
  SLACK_BOT_TOKEN: 'SLACK_BOT_TOKEN_SECRET_ID',
  SLACK_SIGNING_SECRET: 'SLACK_SIGNING_SECRET_ID',
} as const;
export type SlackSecretName = keyof typeof SLACK_SECRET_ID_VARIABLES;

/** How long a fetched value is used before it is fetched again: a rotated secret takes effect within this. */
export const SECRET_CACHE_MS = 5 * 60_000;

/** The part of SecretsManagerClient used here; a real client satisfies it. */
export interface SecretsManagerReader {
  send(command: GetSecretValueCommand): Promise<GetSecretValueCommandOutput>;
}

/** The provider of a Slack secret: Secrets Manager if the environment names a secret, else the variable itself. */
export function slackSecret(name: SlackSecretName, env: NodeJS.ProcessEnv = process.env, client?: SecretsManagerReader): () => Promise<string> {
  const secretId = env[SLACK_SECRET_ID_VARIABLES[name]];
  if (!secretId) return envSecret(name, env);
  return secretsManagerSecret(secretId, client ?? new SecretsManagerClient({}));
}

/**
 * Reads a plain-text secret, caching its value for `ttlMs`. Concurrent callers share one request; a
 * failed request is not cached (the next call tries again) and its error is passed on, so the caller
 * fails closed.
 */
export function secretsManagerSecret(secretId: string, client: SecretsManagerReader, options: { ttlMs?: number; now?: () => number } = {}): () => Promise<string> {
  const ttlMs = options.ttlMs ?? SECRET_CACHE_MS;
  const now = options.now ?? Date.now;
  let cached: { value: string; at: number } | undefined;
  let inFlight: Promise<string> | undefined;
  return async () => {
    if (cached && now() - cached.at < ttlMs) return cached.value;
    inFlight ??= (async () => {
      try {
        const out = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
        const value = out.SecretString?.trim();
        if (!value) throw new ApprovalConfigError(`secret ${secretId} holds no text value`);
        cached = { value, at: now() };
        return value;
      } finally {
        inFlight = undefined;
      }
    })();
    return inFlight;
  };
}
