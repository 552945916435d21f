/**
 * The AWS implementations of the ports (Secrets Manager, DynamoDB + S3, S3 + KMS, Step Functions,
 * the revocation table), built from the names the stack passes in `AwsEnvironment`
 * (core/config/aws-environment.ts). `main.ts` loads this module only when WARDEN_ADAPTERS is 'aws', so
 * the embedded default never loads the AWS SDK.
 */
import type { WardenConfig } from '../../core/config/schema.ts';
import type { GatewayAdapters } from './gateway.ts';
import type { Logger } from './log.ts';

export class AwsAdaptersUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AwsAdaptersUnavailableError';
  }
}

export async function awsAdaptersFromEnvironment(config: WardenConfig, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<GatewayAdapters> {
  throw new AwsAdaptersUnavailableError('the AWS adapters are not wired yet');
}
