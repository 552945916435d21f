/**
 * What the CDK stack tells a proxy task (and the functions) through environment variables: the one
 * contract between infra/ and proxy-task/src/main.ts. Names of resources only; never a secret value.
 */
export const AwsEnvironment = {
  /** 'aws': use the AWS implementations of the ports; anything else: the embedded default. */
  adapters: 'WARDEN_ADAPTERS',
  /** The validated configuration document (JSON): targets, identity, policy, approvals. */
  configJson: 'WARDEN_CONFIG_JSON',
  /** DynamoDB tables. */
  auditSessionsTable: 'WARDEN_AUDIT_SESSIONS_TABLE',
  auditEventsTable: 'WARDEN_AUDIT_EVENTS_TABLE',
  approvalsTable: 'WARDEN_APPROVALS_TABLE',
  revocationsTable: 'WARDEN_REVOCATIONS_TABLE',
  /** S3 bucket of session recordings (Object Lock) and large event payloads. */
  recordingsBucket: 'WARDEN_RECORDINGS_BUCKET',
  /** KMS key (ARN) that encrypts the audit tables and bucket. */
  auditKeyArn: 'WARDEN_AUDIT_KEY_ARN',
  /** KMS asymmetric key (ARN) that signs each session's seal. */
  auditSigningKeyArn: 'WARDEN_AUDIT_SIGNING_KEY_ARN',
  /** KMS HMAC_256 key (ARN) whose MAC of `warden-masking:<target>` is each masked target's keyed-hash key. */
  maskingKeyArn: 'WARDEN_MASKING_KEY_ARN',
  /** S3 bucket and KMS key (ARN) of the forensic vault. */
  vaultBucket: 'WARDEN_VAULT_BUCKET',
  vaultKeyArn: 'WARDEN_VAULT_KEY_ARN',
  /** The approval state machine (ARN). */
  approvalStateMachineArn: 'WARDEN_APPROVAL_STATE_MACHINE_ARN',
  /** Seconds a stopping task keeps serving live sessions after SIGTERM. */
  drainSeconds: 'WARDEN_DRAIN_SECONDS',
  /** Days after which audit items expire from the tables (their TTL attribute); recordings stay under Object Lock. */
  auditRetentionDays: 'WARDEN_AUDIT_RETENTION_DAYS',
} as const;
export type AwsEnvironmentName = (typeof AwsEnvironment)[keyof typeof AwsEnvironment];
