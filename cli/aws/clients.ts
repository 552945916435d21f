/**
 * AWS SDK clients for the CLI's --aws commands. Region, credentials and endpoints come from the SDK's
 * usual chain (AWS_REGION / AWS_PROFILE, the shared config files, SSO, instance roles,
 * AWS_ENDPOINT_URL_<SERVICE>), so an operator runs the CLI as any other AWS tool.
 * WARDEN_S3_FORCE_PATH_STYLE=true selects path-style S3 addressing, as on the proxy task
 * (proxy-task/src/aws-adapters.ts), for S3-compatible endpoints.
 *
 * Only modules under cli/aws/ import the SDK, and the commands import them only when --aws is given.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';

export const S3_FORCE_PATH_STYLE_VARIABLE = 'WARDEN_S3_FORCE_PATH_STYLE';

/** Clients made on first use; `destroy()` closes their sockets so the command exits at once. */
export class AwsCliClients {
  private made: { destroy(): void }[] = [];
  private dynamodbClient: DynamoDBClient | undefined;
  private s3Client: S3Client | undefined;
  private kmsClient: KMSClient | undefined;

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  get dynamodb(): DynamoDBClient {
    return (this.dynamodbClient ??= this.keep(new DynamoDBClient({})));
  }

  get s3(): S3Client {
    return (this.s3Client ??= this.keep(new S3Client({ forcePathStyle: this.env[S3_FORCE_PATH_STYLE_VARIABLE] === 'true' })));
  }

  get kms(): KMSClient {
    return (this.kmsClient ??= this.keep(new KMSClient({})));
  }

  destroy(): void {
    for (const c of this.made) c.destroy();
    this.made = [];
    this.dynamodbClient = undefined;
    this.s3Client = undefined;
    this.kmsClient = undefined;
  }

  private keep<C extends { destroy(): void }>(client: C): C {
    this.made.push(client);
    return client;
  }
}
