/**
 * Where the audit trail and the forensic vault live.
 *
 * - Four DynamoDB tables (on demand, point-in-time recovery, deletion protection, the audit key):
 *   sessions and events (the audit trail, adapters/aws/audit-aws-layout.ts), approvals
 *   (adapters/aws/dynamodb-approval-store.ts) and revocations (adapters/aws/dynamodb-revocation-list.ts).
 *   Their key schemas and TTL attributes are those modules'.
 * - The recordings bucket: versioned, S3 Object Lock in compliance mode with a default retention, so no
 *   one — the account root included — can delete or overwrite a recording before it expires.
 * - The forensic vault bucket. Each record in it is envelope-encrypted by the proxy under the vault key
 *   (adapters/aws/s3-forensic-vault.ts), which only the forensic reader role this construct creates can
 *   decrypt (assumable with MFA by principals of the account that are allowed to assume it). At rest S3
 *   encrypts the objects once more, under the audit key: SSE-KMS under the vault key would need
 *   kms:Decrypt for the proxy's multipart uploads, which the vault key refuses to everyone but the reader.
 * - An access-log bucket receiving the server access logs of the other two.
 *
 * Every bucket blocks public access, refuses requests without TLS (and below TLS 1.2) and is retained
 * when the stack is deleted.
 */
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { ExplicitRole } from './explicit-role.ts';

/** Key schema and TTL attribute of each table, as the adapters that read and write them define them. */
export const AUDIT_TABLES = {
  sessions: { partitionKey: { name: 'sessionId', type: dynamodb.AttributeType.STRING }, ttl: 'expiresAt' },
  events: {
    partitionKey: { name: 'sessionId', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'seq', type: dynamodb.AttributeType.NUMBER },
    ttl: 'expiresAt',
  },
  approvals: { partitionKey: { name: 'id', type: dynamodb.AttributeType.STRING }, ttl: 'expiresAtEpoch' },
  revocations: { partitionKey: { name: 'identity', type: dynamodb.AttributeType.STRING }, ttl: 'expiresAt' },
} as const;

const READER_OBJECTS_SID = 'ReadVaultRecords';

export interface AuditStoreProps {
  /** Encrypts the tables and, at rest, both buckets. */
  readonly auditKey: kms.IKey;
  /** Object Lock (compliance mode) default retention of each recording, in days (1 to 36500). */
  readonly objectLockDays: number;
  /**
   * Days after which access logs are deleted.
   * @default 365
   */
  readonly accessLogDays?: number;
  /**
   * What happens to tables and buckets when the stack is deleted. Audit data outlives the stack by
   * default; recordings under Object Lock cannot be deleted before their retention ends anyway.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

export class AuditStore extends Construct {
  public readonly sessionsTable: dynamodb.Table;
  public readonly eventsTable: dynamodb.Table;
  public readonly approvalsTable: dynamodb.Table;
  public readonly revocationsTable: dynamodb.Table;
  /** Session recordings and large event lines; Object Lock in compliance mode. */
  public readonly recordingsBucket: s3.Bucket;
  /** Originals of masked values, under the vault key. */
  public readonly vaultBucket: s3.Bucket;
  /** Server access logs of the recordings and vault buckets. */
  public readonly accessLogsBucket: s3.Bucket;
  /** The one role that may read the vault and decrypt with its key (see WardenKeys.restrictVaultDecryptTo). */
  public readonly forensicReaderRole: iam.Role;

  constructor(scope: Construct, id: string, props: AuditStoreProps) {
    super(scope, id);
    if (!Number.isInteger(props.objectLockDays) || props.objectLockDays < 1 || props.objectLockDays > 36500) {
      throw new Error(`AuditStore: objectLockDays must be a whole number of days from 1 to 36500, got ${props.objectLockDays}`);
    }
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;

    const table = (name: keyof typeof AUDIT_TABLES): dynamodb.Table => {
      const spec = AUDIT_TABLES[name];
      return new dynamodb.Table(this, `${name[0]!.toUpperCase()}${name.slice(1)}Table`, {
        partitionKey: spec.partitionKey,
        ...('sortKey' in spec ? { sortKey: spec.sortKey } : {}),
        timeToLiveAttribute: spec.ttl,
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryptionKey: props.auditKey,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        deletionProtection: true,
        removalPolicy,
      });
    };
    this.sessionsTable = table('sessions');
    this.eventsTable = table('events');
    this.approvalsTable = table('approvals');
    this.revocationsTable = table('revocations');

    const common = {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
    } satisfies s3.BucketProps;

    // S3 server access logging can deliver only to a bucket encrypted with SSE-S3, never SSE-KMS.
    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogsBucket', {
      ...common,
      encryption: s3.BucketEncryption.S3_MANAGED,
      lifecycleRules: [{ expiration: Duration.days(props.accessLogDays ?? 365), noncurrentVersionExpiration: Duration.days(30) }],
    });

    this.recordingsBucket = new s3.Bucket(this, 'RecordingsBucket', {
      ...common,
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: props.auditKey,
      bucketKeyEnabled: true,
      objectLockEnabled: true,
      objectLockDefaultRetention: s3.ObjectLockRetention.compliance(Duration.days(props.objectLockDays)),
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'recordings/',
    });

    this.vaultBucket = new s3.Bucket(this, 'VaultBucket', {
      ...common,
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: props.auditKey,
      bucketKeyEnabled: true,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'vault/',
      // Large records are multipart uploads; the proxy aborts a failed one, this removes what it could not.
      lifecycleRules: [{ abortIncompleteMultipartUploadAfter: Duration.days(1) }],
    });

    const account = Stack.of(this).account;
    const reader = new ExplicitRole(this, 'ForensicReader', {
      description: 'Reads originals of masked values from the Warden forensic vault (the only principal that can decrypt them)',
      assumedBy: new iam.AccountPrincipal(account).withConditions({ Bool: { 'aws:MultiFactorAuthPresent': 'true' } }),
      statements: [
        new iam.PolicyStatement({ sid: READER_OBJECTS_SID, actions: ['s3:GetObject', 's3:GetObjectVersion'], resources: [this.vaultBucket.arnForObjects('*')] }),
        new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [this.vaultBucket.bucketArn] }),
        // The bucket's at-rest encryption; the records' own key (the vault key) allows this role in its key policy.
        new iam.PolicyStatement({
          actions: ['kms:Decrypt'],
          resources: [props.auditKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
        }),
      ],
    });
    this.forensicReaderRole = reader.role;
    reader.acknowledgeWildcards({ [READER_OBJECTS_SID]: 'Any record of the vault: a forensic read starts from a session and statement id found in the audit trail, which names the object.' });

    const pitr =
      'Point-in-time recovery (35 days, continuous) is on for every table, and deletion protection too. The audit events and sessions are also written as recordings to the S3 bucket under Object Lock in compliance mode, a second system that keeps them for the configured retention (AU-9(2)).';
    for (const t of [this.sessionsTable, this.eventsTable, this.approvalsTable, this.revocationsTable]) {
      Validations.of(t).acknowledge({ id: 'NIST.800.53.R5-DynamoDBInBackupPlan', reason: pitr });
    }
    const replication =
      'A deployment lives in one region; replicating audit data to another region is an organisation-level choice (a second bucket, its own key and Object Lock settings) outside this stack. Versioning and Object Lock protect the objects in place.';
    for (const b of [this.recordingsBucket, this.vaultBucket, this.accessLogsBucket]) {
      Validations.of(b).acknowledge({ id: 'NIST.800.53.R5-S3BucketReplicationEnabled', reason: replication });
    }
    Validations.of(this.accessLogsBucket).acknowledge({
      id: 'NIST.800.53.R5-S3DefaultEncryptionKMS',
      reason: 'S3 server access logs can be delivered only to a bucket encrypted with SSE-S3 (AES-256); SSE-KMS destination buckets are not supported.',
    });
  }
}
