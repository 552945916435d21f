/**
 * The CDK app of a deployment, built from its context: `config` (the configuration file, required) and
 * `slackSecrets` (`create`, the default, or `existing`). The configuration
 * is validated (the schema, the `aws` section, the Cedar policies it names) before anything is built, and
 * both cdk-nag packs, AWS Solutions and NIST 800-53 rev 5, are registered as validation plugins: a finding
 * nobody acknowledged with a reason fails synthesis.
 */
import { App, Validations, type Environment } from 'aws-cdk-lib';
import { AwsSolutionsChecks, NIST80053R5Checks } from 'cdk-nag';
import { loadPolicyDirectory } from '../../adapters/local/policy-files.ts';
import { loadDeploymentConfig } from './deployment-config.ts';
import { WardenStack } from './warden-stack.ts';

/** A context value the app cannot use; the message says which and what is expected. */
export class WardenAppContextError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WardenAppContextError';
  }
}

export interface WardenAppOptions {
  /** The repository root: the proxy image's build context and the functions' sources. */
  readonly projectRoot: string;
  /** Context on top of what the CDK CLI passes (cdk.json, `-c` values). */
  readonly context?: Record<string, unknown>;
  /** Where the cloud assembly goes. @default the CLI's choice, else a temporary folder */
  readonly outdir?: string;
  /** Account and region. @default environment-agnostic */
  readonly env?: Environment;
}

export function createWardenApp(options: WardenAppOptions): { app: App; stack: WardenStack } {
  const app = new App({ ...(options.context ? { context: options.context } : {}), ...(options.outdir ? { outdir: options.outdir } : {}) });
  const configFile: unknown = app.node.tryGetContext('config');
  if (typeof configFile !== 'string' || configFile === '') {
    throw new WardenAppContextError('Name the configuration file: npx cdk deploy -c config=warden.aws.yaml (start from warden.aws.example.yaml)');
  }
  const deployment = loadDeploymentConfig(configFile);
  // The policies the functions and the proxy will load: a set that would not load fails here, not at run time.
  loadPolicyDirectory(deployment.policyDir);

  const slackSecrets: unknown = app.node.tryGetContext('slackSecrets') ?? 'create';
  if (slackSecrets !== 'create' && slackSecrets !== 'existing') throw new WardenAppContextError(`slackSecrets must be 'create' or 'existing', got '${String(slackSecrets)}'`);

  const stack = new WardenStack(app, deployment.aws.stackName, {
    deployment,
    projectRoot: options.projectRoot,
    natGateways: deployment.aws.vpc.natGateways,
    createSlackSecrets: slackSecrets === 'create',
    ...(options.env ? { env: options.env } : {}),
  });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app), new NIST80053R5Checks(app));
  return { app, stack };
}
