/**
 * The AWS implementations of the ports (Secrets Manager, DynamoDB + S3, S3 + KMS, Step Functions,
 * the revocation table), built from the names the stack passes in `AwsEnvironment`
 * (core/config/aws-environment.ts). `main.ts` loads this module only when WARDEN_ADAPTERS is 'aws', so
 * the embedded default never loads the AWS SDK.
 *
 * Every name must be there: a task that cannot reach its audit trail, vault or revocation list must not
 * start (fail closed), so a missing variable stops start-up with its name.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GenerateMacCommand, KMSClient } from '@aws-sdk/client-kms';
import { S3Client } from '@aws-sdk/client-s3';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDbApprovalStore } from '../../adapters/aws/dynamodb-approval-store.ts';
import { DynamoDbAuditSink } from '../../adapters/aws/dynamodb-audit-sink.ts';
import { KmsAuditSealSigner } from '../../adapters/aws/audit-seal-signer.ts';
import { DynamoDbRevocationList } from '../../adapters/aws/dynamodb-revocation-list.ts';
import { S3ForensicVault } from '../../adapters/aws/s3-forensic-vault.ts';
import { SecretsManagerStore } from '../../adapters/aws/secrets-manager-store.ts';
import { StepFunctionsApprovalService } from '../../adapters/aws/step-functions-approval-service.ts';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
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
  const need = (name: string): string => {
    const v = env[name];
    if (!v) throw new AwsAdaptersUnavailableError(`environment variable ${name} is not set (the stack sets it on every proxy task)`);
    return v;
  };
  const names = {
    sessions: need(AwsEnvironment.auditSessionsTable),
    events: need(AwsEnvironment.auditEventsTable),
    recordings: need(AwsEnvironment.recordingsBucket),
    signingKey: need(AwsEnvironment.auditSigningKeyArn),
    vaultBucket: need(AwsEnvironment.vaultBucket),
    vaultKey: need(AwsEnvironment.vaultKeyArn),
    approvals: need(AwsEnvironment.approvalsTable),
    stateMachine: need(AwsEnvironment.approvalStateMachineArn),
    revocations: need(AwsEnvironment.revocationsTable),
    maskingKey: need(AwsEnvironment.maskingKeyArn),
  };
  const retentionDays = Number(env[AwsEnvironment.auditRetentionDays] ?? '0');

  // The audit sink retries itself (with its own time limits): its clients make one attempt each.
  const auditDynamo = new DynamoDBClient({ maxAttempts: 1 });
  // Path-style S3 addressing for S3-compatible endpoints (AWS_ENDPOINT_URL_S3 pointing at one).
  const forcePathStyle = env.WARDEN_S3_FORCE_PATH_STYLE === 'true';
  const auditS3 = new S3Client({ maxAttempts: 1, forcePathStyle });
  const dynamo = new DynamoDBClient({});
  const s3 = new S3Client({ forcePathStyle });
  const kms = new KMSClient({});

  let signer: KmsAuditSealSigner;
  try {
    signer = await KmsAuditSealSigner.create(kms, names.signingKey);
  } catch (err) {
    throw new AwsAdaptersUnavailableError(`the audit signing key ${names.signingKey} cannot be used`, { cause: err });
  }
  const audit = new DynamoDbAuditSink({
    dynamodb: auditDynamo,
    s3: auditS3,
    signer,
    sessionsTable: names.sessions,
    eventsTable: names.events,
    recordingsBucket: names.recordings,
    readOnlyWindowMs: config.audit.readOnlyWindowMs,
    ...(retentionDays > 0 ? { retentionSeconds: retentionDays * 24 * 3600 } : {}),
  });
  const revocations = new DynamoDbRevocationList({ client: dynamo, tableName: names.revocations, log });
  log.info('AWS adapters', { auditTables: [names.sessions, names.events], recordings: names.recordings, vault: names.vaultBucket, revocations: names.revocations });
  return {
    secrets: new SecretsManagerStore({ client: new SecretsManagerClient({}), log }),
    audit,
    vault: new S3ForensicVault({ s3, kms, bucket: names.vaultBucket, keyId: names.vaultKey }),
    approvals: new StepFunctionsApprovalService({
      client: new SFNClient({}),
      stateMachineArn: names.stateMachine,
      store: new DynamoDbApprovalStore({ client: dynamo, tableName: names.approvals }),
      timeoutSeconds: config.approvals.timeoutSeconds,
      grantTtlMs: config.approvals.grantTtlSeconds * 1000,
    }),
    revocations,
    maskingHashKey: async (target) => {
      try {
        const out = await kms.send(new GenerateMacCommand({ KeyId: names.maskingKey, MacAlgorithm: 'HMAC_SHA_256', Message: Buffer.from(`warden-masking:${target}`, 'utf8') }));
        if (!out.Mac || out.Mac.length < 32) throw new Error('no MAC in the answer');
        return out.Mac;
      } catch (err) {
        throw new AwsAdaptersUnavailableError(`the masking key ${names.maskingKey} cannot be used for target ${target}`, { cause: err });
      }
    },
  };
}
