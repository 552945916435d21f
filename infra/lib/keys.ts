/**
 * Warden's customer-managed KMS keys, one per kind of data, each with a key policy that names what may
 * use it. None of them grants `kms:*` to the account: account principals may administer a key (describe,
 * enable, disable, rotate, tag, schedule deletion, change its policy — all recorded by CloudTrail) but
 * may use it only through the AWS services listed for that key, and only where their own IAM policy
 * allows too. The vault key goes further: an explicit deny leaves decryption to one role.
 *
 * | key | protects | used through |
 * |---|---|---|
 * | audit | the audit tables, the recordings bucket | DynamoDB, S3 |
 * | vault | the forensic vault's records (originals of masked values, envelope-encrypted by the proxy) | direct use by named principals only |
 * | secrets | target credentials, the Slack secrets | Secrets Manager |
 * | operations | log groups, the alarm topic, the dead-letter queue | CloudWatch Logs, SNS, SQS |
 * | signing | the seal of each session (ECC_NIST_P256, ECDSA_SHA_256) | Sign by the proxy; anyone in the account may fetch the public key to verify |
 * | masking | keyed hashes of masked values (HMAC_256): its MAC of `warden-masking:<target>` is each target's hash key | GenerateMac by the proxy only |
 *
 * @see https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html
 * @see https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
 */
import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

export interface WardenKeysProps {
  /**
   * What happens to the keys when the stack is deleted. Retained by default: deleting a key makes
   * everything encrypted under it unreadable, including audit records under Object Lock.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Waiting period before a key scheduled for deletion is deleted (7 to 30 days).
   * @default Duration.days(30)
   */
  readonly pendingWindow?: Duration;
}

/** Actions that manage a key without using it (no Encrypt, Decrypt, GenerateDataKey, ReEncrypt, Sign or CreateGrant). */
export const KEY_ADMINISTRATION_ACTIONS = [
  'kms:CancelKeyDeletion',
  'kms:CreateAlias',
  'kms:DeleteAlias',
  'kms:DescribeKey',
  'kms:DisableKey',
  'kms:DisableKeyRotation',
  'kms:EnableKey',
  'kms:EnableKeyRotation',
  'kms:GetKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:ListGrants',
  'kms:ListKeyPolicies',
  'kms:ListKeyRotations',
  'kms:ListResourceTags',
  'kms:PutKeyPolicy',
  'kms:RevokeGrant',
  'kms:RotateKeyOnDemand',
  'kms:ScheduleKeyDeletion',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateAlias',
  'kms:UpdateKeyDescription',
] as const;

/** What a symmetric key's users may do through a service (the service calls KMS with their credentials). */
const SERVICE_USE_ACTIONS = ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:CreateGrant', 'kms:DescribeKey'];

export class WardenKeys extends Construct {
  /** The audit tables and the recordings bucket. */
  public readonly auditKey: kms.Key;
  /** The forensic vault; only the forensic reader role may decrypt (see `restrictVaultDecryptTo`). */
  public readonly vaultKey: kms.Key;
  /** Target credentials and the Slack secrets in Secrets Manager. */
  public readonly secretsKey: kms.Key;
  /** CloudWatch log groups, the alarm topic and the dead-letter queue. */
  public readonly operationsKey: kms.Key;
  /** Asymmetric ECC_NIST_P256 key that signs each session's seal. */
  public readonly signingKey: kms.Key;
  /** HMAC_256 key from which each target's keyed-hash masking key is derived. */
  public readonly maskingKey: kms.Key;

  constructor(scope: Construct, id: string, props: WardenKeysProps = {}) {
    super(scope, id);
    const stack = Stack.of(this);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const pendingWindow = props.pendingWindow ?? Duration.days(30);
    const days = pendingWindow.toDays();
    if (days < 7 || days > 30) throw new Error(`WardenKeys: pendingWindow must be 7 to 30 days, got ${days}`);
    const via = (...services: string[]): Record<string, unknown> => ({
      // A list of values matches any of them; kms:ViaService holds one service per request.
      StringEquals: { 'kms:CallerAccount': stack.account, 'kms:ViaService': services.map((s) => `${s}.${stack.region}.amazonaws.com`) },
    });
    const symmetric = (name: string, description: string, statements: iam.PolicyStatement[]): kms.Key =>
      new kms.Key(this, name, {
        description,
        enableKeyRotation: true,
        pendingWindow,
        removalPolicy,
        policy: new iam.PolicyDocument({ statements: [administration(), ...statements] }),
      });

    this.auditKey = symmetric('AuditKey', 'Warden audit trail: sessions, events, approvals and revocations tables; recordings bucket', [
      new iam.PolicyStatement({
        sid: 'UseThroughDynamoDbAndS3',
        principals: [new iam.AccountRootPrincipal()],
        actions: SERVICE_USE_ACTIONS,
        resources: ['*'],
        conditions: via('dynamodb', 's3'),
      }),
      new iam.PolicyStatement({
        sid: 'DynamoDbReadsKeyMetadata',
        principals: [new iam.ServicePrincipal('dynamodb.amazonaws.com')],
        actions: ['kms:DescribeKey'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
      }),
    ]);

    // No via-service delegation: a principal uses the vault key only if this policy names it.
    this.vaultKey = symmetric('VaultKey', 'Warden forensic vault: originals of masked values; decryptable by the forensic reader role only', []);

    this.secretsKey = symmetric('SecretsKey', 'Warden secrets: target credentials and the Slack app secrets in Secrets Manager', [
      new iam.PolicyStatement({
        sid: 'UseThroughSecretsManager',
        principals: [new iam.AccountRootPrincipal()],
        actions: SERVICE_USE_ACTIONS,
        resources: ['*'],
        conditions: via('secretsmanager'),
      }),
    ]);

    this.operationsKey = symmetric('OperationsKey', 'Warden operations: log groups, the alarm topic and the dead-letter queue', [
      new iam.PolicyStatement({
        sid: 'CloudWatchLogsEncryptsLogGroupsOfThisAccount',
        principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: { ArnLike: { 'kms:EncryptionContext:aws:logs:arn': stack.formatArn({ service: 'logs', resource: 'log-group', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) } },
      }),
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublishToTheEncryptedTopic',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
      }),
      // No aws:SourceAccount here: EventBridge's delivery calls to KMS do not carry it, and a condition on
      // it would drop every dead letter silently.
      new iam.PolicyStatement({
        sid: 'EventBridgeSendsToTheEncryptedDeadLetterQueue',
        principals: [new iam.ServicePrincipal('events.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
        resources: ['*'],
      }),
      new iam.PolicyStatement({
        sid: 'UseThroughSnsAndSqs',
        principals: [new iam.AccountRootPrincipal()],
        actions: SERVICE_USE_ACTIONS,
        resources: ['*'],
        conditions: via('sns', 'sqs'),
      }),
    ]);

    // Asymmetric keys cannot rotate automatically; a new key means a new keyId in new seals, and old
    // seals stay verifiable with the old key's public half as long as that key exists (it is retained).
    this.signingKey = new kms.Key(this, 'SigningKey', {
      description: 'Warden audit seals: signs each session digest (ECDSA P-256, SHA-256)',
      keySpec: kms.KeySpec.ECC_NIST_P256,
      keyUsage: kms.KeyUsage.SIGN_VERIFY,
      pendingWindow,
      removalPolicy,
      policy: new iam.PolicyDocument({
        statements: [
          administration(),
          new iam.PolicyStatement({
            sid: 'AccountPrincipalsVerifySeals',
            principals: [new iam.AccountRootPrincipal()],
            actions: ['kms:GetPublicKey', 'kms:Verify'],
            resources: ['*'],
          }),
        ],
      }),
    });

    // HMAC keys cannot rotate automatically either, and must not: a new key changes every keyed hash, so
    // masked values would stop matching across the change. Nobody but the proxy may compute MACs with it
    // (anyone who could would be able to test guesses against the hashes).
    this.maskingKey = new kms.Key(this, 'MaskingKey', {
      description: 'Warden masking: derives the keyed-hash key of each masked target (HMAC-SHA-256)',
      keySpec: kms.KeySpec.HMAC_256,
      keyUsage: kms.KeyUsage.GENERATE_VERIFY_MAC,
      pendingWindow,
      removalPolicy,
      policy: new iam.PolicyDocument({ statements: [administration()] }),
    });
  }

  /** Lets `role` derive targets' masking hash keys (GenerateMac) and nothing else. */
  public allowMaskingKeyDerivation(role: iam.IRole): void {
    this.maskingKey.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'ProxyDerivesMaskingKeys', principals: [role], actions: ['kms:GenerateMac'], resources: ['*'] }),
    );
  }

  /**
   * Lets `role` have data keys generated under the vault key (each vault record's envelope key,
   * adapters/aws/s3-forensic-vault.ts) and nothing else: no Decrypt, no ReEncrypt, no grants. The key
   * policy names the role, which KMS honours without an IAM policy on the role's side.
   */
  public allowVaultEncrypt(role: iam.IRole): void {
    this.vaultKey.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'ProxyEncryptsVaultRecords', principals: [role], actions: ['kms:GenerateDataKey'], resources: ['*'] }),
    );
  }

  /** Lets `role` sign seals with the signing key (and read its public half, which the signer checks at start). */
  public allowSealSigning(role: iam.IRole): void {
    this.signingKey.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'ProxySignsSeals', principals: [role], actions: ['kms:Sign', 'kms:GetPublicKey'], resources: ['*'] }),
    );
  }

  /**
   * Makes `reader` the only principal that can decrypt with the vault key: an allow for it, and an
   * explicit deny of Decrypt, ReEncrypt and CreateGrant for every other principal, which no IAM policy,
   * administrator or grant can override.
   */
  public restrictVaultDecryptTo(reader: iam.IRole): void {
    this.vaultKey.addToResourcePolicy(
      new iam.PolicyStatement({ sid: 'ForensicReaderDecrypts', principals: [reader], actions: ['kms:Decrypt', 'kms:DescribeKey'], resources: ['*'] }),
    );
    this.vaultKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'NobodyElseDecrypts',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Decrypt', 'kms:ReEncrypt*', 'kms:CreateGrant'],
        resources: ['*'],
        conditions: { ArnNotEquals: { 'aws:PrincipalArn': reader.roleArn } },
      }),
    );
  }
}

function administration(): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'AccountAdministersTheKey',
    principals: [new iam.AccountRootPrincipal()],
    actions: [...KEY_ADMINISTRATION_ACTIONS],
    resources: ['*'],
  });
}
