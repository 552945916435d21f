/**
 * The Warden CDK app: `npx cdk deploy -c config=warden.aws.yaml` (README.md, "Deploying to AWS").
 * Builds the app (infra/lib/warden-app.ts) and turns a configuration problem into a readable message and
 * exit code 1 instead of a stack trace.
 *
 * Optional context: `-c natGateways=1` gives the task subnets an internet route (identity providers'
 * JWKS, targets not reachable otherwise); `-c slackSecrets=existing` references Slack secrets that
 * already exist under the configured names instead of creating them.
 */
import { fileURLToPath } from 'node:url';
import { ConfigInvalidError } from '../../core/config/schema.ts';
import { PolicySetInvalidError } from '../../core/policy/policy-set.ts';
import { createWardenApp, WardenAppContextError } from '../lib/warden-app.ts';

const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
const account = process.env.CDK_DEFAULT_ACCOUNT;
const region = process.env.CDK_DEFAULT_REGION;

try {
  // With credentials the CLI sets account and region; without (an offline synth) the template is environment-agnostic.
  createWardenApp({ projectRoot, ...(account && region ? { env: { account, region } } : {}) });
} catch (err) {
  if (!(err instanceof ConfigInvalidError || err instanceof PolicySetInvalidError || err instanceof WardenAppContextError)) throw err;
  process.stderr.write(`\n${err.message}\n\n`);
  process.exit(1);
}
