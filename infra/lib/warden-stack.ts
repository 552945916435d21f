/**
 * The whole of Warden in one stack: keys, network, audit store, Slack secrets, functions, the approval
 * workflow, the proxy service and its alarms, wired together with the least each part needs.
 *
 * The proxy task's role, statement by statement (the tests assert exactly this):
 *
 * | sid | actions | on |
 * |---|---|---|
 * | TargetCredentials | secretsmanager:GetSecretValue | each target's `credential` secret, by name (`secret:<name>-??????`) |
 * | TargetCredentialsKey | kms:Decrypt through Secrets Manager | the secrets key |
 * | AuditSessions | dynamodb:PutItem, UpdateItem, GetItem | sessions table (create, end once, read back a refused write) |
 * | AuditEvents | dynamodb:PutItem, GetItem | events table: create-only writes; no Update, no Delete, no BatchWriteItem (which could delete) |
 * | AuditRecordings | s3:PutObject, s3:GetObject | recordings bucket objects: no Delete; Object Lock keeps every version |
 * | AuditKey | kms:Decrypt, Encrypt, GenerateDataKey, DescribeKey through DynamoDB and S3 | the audit key (tables, and both buckets at rest) |
 * | Approvals | dynamodb:GetItem, UpdateItem | approvals table (read outcomes; mark an async grant used, expire a forgotten request) |
 * | Revocations | dynamodb:Scan | revocations table (the full poll) |
 * | StartApprovals | states:StartExecution | the approval state machine |
 * | FollowApprovals | states:StopExecution, DescribeExecution | its executions |
 * | ForensicVault | s3:PutObject, s3:AbortMultipartUpload | vault bucket objects (no Get: the proxy never reads the vault) |
 * | ConnectDecisions | lambda:InvokeFunction | the policy decision function (only with `policy.connectDecisions.mode: lambda`) |
 *
 * and, in key policies rather than IAM: kms:GenerateDataKey on the vault key (never Decrypt: only the
 * forensic reader role may), kms:Sign and kms:GetPublicKey on the signing key, kms:GenerateMac on the
 * masking key.
 *
 * What IAM cannot express: a PutItem or PutObject without its condition could still overwrite an
 * item or add an object version. The writers always send the condition (adapters/aws/audit-aws-writer.ts),
 * Object Lock keeps the earlier version of every object, and the hash chain and the signed seal make any
 * rewritten event detectable (`warden audit verify`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { AwsEnvironment, type AwsEnvironmentName } from '../../core/config/aws-environment.ts';
import type { DeploymentConfig, ProxyConfig } from './deployment-config.ts';
import { ApprovalWorkflow, executionArnsOf, stateMachineArnOf } from './approval-workflow.ts';
import { AuditStore } from './audit-store.ts';
import { ExplicitRole } from './explicit-role.ts';
import { WardenFunctions } from './functions.ts';
import { WardenKeys } from './keys.ts';
import { WardenNetwork } from './network.ts';
import { drainPlan, ProxyService } from './proxy-service.ts';
import { SlackSecrets } from './slack-secrets.ts';
import { WardenAlarms } from './alarms.ts';

/** The Dockerfile of the proxy image, relative to the repository root (the build context). */
export const PROXY_DOCKERFILE = 'proxy-task/Dockerfile';

export interface WardenStackProps extends StackProps {
  /** The validated deployment configuration (deployment-config.ts). */
  readonly deployment: DeploymentConfig;
  /** The repository root: build context of the proxy image and root of the functions' sources. */
  readonly projectRoot: string;
  /**
   * The proxy image. Built from `proxy-task/Dockerfile` at deploy time when not given (synthesis only
   * stages the build context; it needs no Docker).
   * @default ContainerImage from a DockerImageAsset of `projectRoot` with `file: 'proxy-task/Dockerfile'`
   */
  readonly proxyImage?: { image: ecs.ContainerImage; repositoryArns: string[] };
  /**
   * NAT gateways for the task subnets (an internet route for identity providers' JWKS and targets
   * outside AWS). 0 keeps the subnets isolated.
   * @default 0
   */
  readonly natGateways?: number;
  /**
   * Create the Slack secrets (true) or reference existing ones by the configured names (false).
   * @default true
   */
  readonly createSlackSecrets?: boolean;
  /**
   * Bundle the functions' code. Only tests of the template turn this off (WardenFunctionsProps.bundle).
   * @default true
   */
  readonly bundleFunctions?: boolean;
}

export class WardenStack extends Stack {
  public readonly keys: WardenKeys;
  public readonly network: WardenNetwork;
  public readonly audit: AuditStore;
  public readonly slackSecrets: SlackSecrets;
  public readonly functions: WardenFunctions;
  public readonly approvalWorkflow: ApprovalWorkflow;
  public readonly proxyTaskRole: ExplicitRole;
  public readonly proxy: ProxyService;
  public readonly alarms: WardenAlarms;

  constructor(scope: Construct, id: string, props: WardenStackProps) {
    super(scope, id, { description: 'Warden: identity-aware access gateway for AI agents (PostgreSQL proxy, policy, approvals, audit)', ...props });
    const { aws, config, proxyConfig, policyDir } = props.deployment;
    const logRetention = aws.logRetentionDays as logs.RetentionDays;

    this.keys = new WardenKeys(this, 'Keys');
    this.network = new WardenNetwork(this, 'Network', {
      cidr: aws.vpc.cidr,
      maxAzs: aws.vpc.maxAzs,
      publicSubnets: !aws.loadBalancer.internal,
      natGateways: props.natGateways ?? 0,
      logKey: this.keys.operationsKey,
      logRetention,
    });
    this.audit = new AuditStore(this, 'Audit', { auditKey: this.keys.auditKey, objectLockDays: aws.audit.objectLockDays });
    this.keys.restrictVaultDecryptTo(this.audit.forensicReaderRole);

    const createSlackSecrets = props.createSlackSecrets ?? true;
    this.slackSecrets = new SlackSecrets(this, 'Slack', {
      signingSecretName: aws.slack.signingSecretName,
      botTokenSecretName: aws.slack.botTokenSecretName,
      createSecrets: createSlackSecrets,
      secretsKey: this.keys.secretsKey,
    });

    const stateMachineName = `${this.stackName}-approval`;
    this.functions = new WardenFunctions(this, 'Functions', {
      projectRoot: props.projectRoot,
      policyDir,
      approvals: config.approvals,
      approvalsTable: this.audit.approvalsTable,
      auditKey: this.keys.auditKey,
      slackSigningSecret: this.slackSecrets.signingSecret,
      slackBotToken: this.slackSecrets.botToken,
      ...(createSlackSecrets ? { secretsKey: this.keys.secretsKey } : {}),
      approvalStateMachineArn: stateMachineArnOf(this, stateMachineName),
      vpc: this.network.vpc,
      vpcSubnets: this.network.taskSubnets,
      operationsKey: this.keys.operationsKey,
      logRetention,
      bundle: props.bundleFunctions ?? true,
    });
    this.approvalWorkflow = new ApprovalWorkflow(this, 'Approvals', {
      definitionFile: join(props.projectRoot, 'statemachines', 'approval.asl.json'),
      stateMachineName,
      approvalRequest: this.functions.approvalRequest,
      approvalOutcome: this.functions.approvalOutcome,
      deadLetterQueue: this.functions.deadLetterQueue,
      operationsKey: this.keys.operationsKey,
      logRetention,
    });

    const connectViaLambda = config.policy.connectDecisions.mode === 'lambda';
    this.proxyTaskRole = new ExplicitRole(this, 'ProxyTaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Warden proxy tasks: target credentials, audit writes, approvals, revocations, the forensic vault',
      statements: this.proxyTaskStatements(props.deployment, stateMachineName, connectViaLambda),
    });
    this.proxyTaskRole.acknowledgeWildcards({
      AuditRecordings:
        'Recordings are keyed per session (recordings/<date>/<session id>/..., events/<session id>/...), created as sessions start, so no narrower prefix exists. Writes are create-only (If-None-Match) and Object Lock in compliance mode keeps every version; there is no DeleteObject.',
      FollowApprovals: 'Executions are named by approval request id, created at run time; the ARN pattern is limited to executions of the one approval state machine.',
      ForensicVault: 'Vault records are keyed per session and statement, created at run time; the proxy can only add them (no Get, no Delete), and each is envelope-encrypted under the vault key.',
    });
    this.keys.allowVaultEncrypt(this.proxyTaskRole.role);
    this.keys.allowSealSigning(this.proxyTaskRole.role);
    this.keys.allowMaskingKeyDerivation(this.proxyTaskRole.role);

    const image = props.proxyImage ?? this.proxyImageAsset(props.projectRoot);
    const environment: Record<AwsEnvironmentName, string> = {
      [AwsEnvironment.adapters]: 'aws',
      [AwsEnvironment.configJson]: this.proxyConfigJson(proxyConfig, connectViaLambda),
      [AwsEnvironment.auditSessionsTable]: this.audit.sessionsTable.tableName,
      [AwsEnvironment.auditEventsTable]: this.audit.eventsTable.tableName,
      [AwsEnvironment.approvalsTable]: this.audit.approvalsTable.tableName,
      [AwsEnvironment.revocationsTable]: this.audit.revocationsTable.tableName,
      [AwsEnvironment.recordingsBucket]: this.audit.recordingsBucket.bucketName,
      [AwsEnvironment.auditKeyArn]: this.keys.auditKey.keyArn,
      [AwsEnvironment.auditSigningKeyArn]: this.keys.signingKey.keyArn,
      [AwsEnvironment.maskingKeyArn]: this.keys.maskingKey.keyArn,
      [AwsEnvironment.vaultBucket]: this.audit.vaultBucket.bucketName,
      [AwsEnvironment.vaultKeyArn]: this.keys.vaultKey.keyArn,
      [AwsEnvironment.approvalStateMachineArn]: this.approvalWorkflow.stateMachine.stateMachineArn,
      [AwsEnvironment.drainSeconds]: String(drainPlan(aws.proxy.drainSeconds).afterSigtermSeconds),
      [AwsEnvironment.auditRetentionDays]: String(aws.audit.retentionDays),
    };
    this.proxy = new ProxyService(this, 'Proxy', {
      vpc: this.network.vpc,
      taskSubnets: this.network.taskSubnets,
      loadBalancerSubnets: this.network.loadBalancerSubnets,
      image: image.image,
      imageRepositoryArns: image.repositoryArns,
      taskRole: this.proxyTaskRole,
      environment,
      containerPort: config.listeners.postgres.port,
      internal: aws.loadBalancer.internal,
      allowedCidrs: aws.loadBalancer.allowedCidrs,
      cpu: aws.proxy.cpu,
      memoryMiB: aws.proxy.memoryMiB,
      desiredCount: aws.proxy.desiredCount,
      maxCount: aws.proxy.maxCount,
      drainSeconds: aws.proxy.drainSeconds,
      operationsKey: this.keys.operationsKey,
      logRetention,
    });

    this.alarms = new WardenAlarms(this, 'Alarms', {
      proxyLogGroup: this.proxy.logGroup,
      approvalOutcomeLogGroup: this.functions.logGroups.approvalOutcome,
      stateMachine: this.approvalWorkflow.stateMachine,
      loadBalancer: this.proxy.loadBalancer,
      targetGroup: this.proxy.targetGroup,
      service: this.proxy.service,
      deadLetterQueue: this.functions.deadLetterQueue,
      functions: [this.functions.policyDecision, this.functions.approvalRequest, this.functions.slackInteractions, this.functions.approvalOutcome],
      operationsKey: this.keys.operationsKey,
      ...(aws.alarmEmail ? { alarmEmail: aws.alarmEmail } : {}),
      dashboardName: this.stackName,
    });

    this.outputs(aws.loadBalancer.internal);
  }

  private proxyTaskStatements(deployment: DeploymentConfig, stateMachineName: string, connectViaLambda: boolean): iam.PolicyStatement[] {
    const region = this.region;
    const credentials = [...new Set(deployment.config.targets.map((t) => t.credential))];
    const statements: iam.PolicyStatement[] = [];
    if (credentials.length > 0) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'TargetCredentials',
          actions: ['secretsmanager:GetSecretValue'],
          // Secrets Manager appends a hyphen and six random characters to every secret's ARN.
          resources: credentials.map((name) => `arn:${this.partition}:secretsmanager:${region}:${this.account}:secret:${name}-??????`),
        }),
        new iam.PolicyStatement({
          sid: 'TargetCredentialsKey',
          actions: ['kms:Decrypt'],
          resources: [this.keys.secretsKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${region}.amazonaws.com` } },
        }),
      );
    }
    statements.push(
      new iam.PolicyStatement({ sid: 'AuditSessions', actions: ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:GetItem'], resources: [this.audit.sessionsTable.tableArn] }),
      new iam.PolicyStatement({ sid: 'AuditEvents', actions: ['dynamodb:PutItem', 'dynamodb:GetItem'], resources: [this.audit.eventsTable.tableArn] }),
      new iam.PolicyStatement({ sid: 'AuditRecordings', actions: ['s3:PutObject', 's3:GetObject'], resources: [this.audit.recordingsBucket.arnForObjects('*')] }),
      new iam.PolicyStatement({
        sid: 'AuditKey',
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
        resources: [this.keys.auditKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': [`dynamodb.${region}.amazonaws.com`, `s3.${region}.amazonaws.com`] } },
      }),
      new iam.PolicyStatement({ sid: 'Approvals', actions: ['dynamodb:GetItem', 'dynamodb:UpdateItem'], resources: [this.audit.approvalsTable.tableArn] }),
      new iam.PolicyStatement({ sid: 'Revocations', actions: ['dynamodb:Scan'], resources: [this.audit.revocationsTable.tableArn] }),
      new iam.PolicyStatement({ sid: 'StartApprovals', actions: ['states:StartExecution'], resources: [stateMachineArnOf(this, stateMachineName)] }),
      new iam.PolicyStatement({ sid: 'FollowApprovals', actions: ['states:StopExecution', 'states:DescribeExecution'], resources: [executionArnsOf(this, stateMachineName)] }),
      // PutObject covers multipart uploads (create, parts, complete); a failed one is aborted.
      new iam.PolicyStatement({ sid: 'ForensicVault', actions: ['s3:PutObject', 's3:AbortMultipartUpload'], resources: [this.audit.vaultBucket.arnForObjects('*')] }),
    );
    if (connectViaLambda) {
      statements.push(new iam.PolicyStatement({ sid: 'ConnectDecisions', actions: ['lambda:InvokeFunction'], resources: [this.functions.policyDecision.functionArn] }));
    }
    return statements;
  }

  /** WARDEN_CONFIG_JSON: the configuration without `aws`; in `lambda` mode, pointed at the deployed policy function. */
  private proxyConfigJson(proxyConfig: ProxyConfig, connectViaLambda: boolean): string {
    if (!connectViaLambda) return JSON.stringify(proxyConfig);
    const decisions = proxyConfig.policy.connectDecisions;
    return this.toJsonString({
      ...proxyConfig,
      policy: { ...proxyConfig.policy, connectDecisions: { ...decisions, functionName: this.functions.policyDecision.functionArn, region: this.region } },
    });
  }

  private proxyImageAsset(projectRoot: string): { image: ecs.ContainerImage; repositoryArns: string[] } {
    if (!existsSync(join(projectRoot, PROXY_DOCKERFILE))) {
      throw new Error(`WardenStack: ${PROXY_DOCKERFILE} not found under ${projectRoot}; the proxy image is built from it`);
    }
    // Synthesis stages the build context (what .dockerignore admits); `cdk deploy` builds and pushes.
    const asset = new ecrAssets.DockerImageAsset(this, 'ProxyImage', {
      directory: projectRoot,
      file: PROXY_DOCKERFILE,
      platform: ecrAssets.Platform.LINUX_AMD64,
    });
    return { image: ecs.ContainerImage.fromDockerImageAsset(asset), repositoryArns: [asset.repository.repositoryArn] };
  }

  private outputs(internal: boolean): void {
    new CfnOutput(this, 'ProxyEndpoint', {
      description: `PostgreSQL endpoint of Warden (${internal ? 'internal' : 'internet-facing'} Network Load Balancer, port 5432)`,
      value: this.proxy.loadBalancer.loadBalancerDnsName,
    });
    new CfnOutput(this, 'SlackRequestUrl', { description: "The Slack app's Interactivity Request URL (slack/README.md)", value: this.functions.slackInteractionsUrl.url });
    new CfnOutput(this, 'SlackSigningSecretArn', { value: this.slackSecrets.signingSecret.secretArn });
    new CfnOutput(this, 'SlackBotTokenArn', { value: this.slackSecrets.botToken.secretArn });
    new CfnOutput(this, 'SecretsKeyArn', { description: 'Encrypt target credentials with this key (aws secretsmanager create-secret --kms-key-id)', value: this.keys.secretsKey.keyArn });
    new CfnOutput(this, 'SessionsTable', { value: this.audit.sessionsTable.tableName });
    new CfnOutput(this, 'EventsTable', { value: this.audit.eventsTable.tableName });
    new CfnOutput(this, 'ApprovalsTable', { value: this.audit.approvalsTable.tableName });
    new CfnOutput(this, 'RevocationsTable', { value: this.audit.revocationsTable.tableName });
    new CfnOutput(this, 'RecordingsBucket', { value: this.audit.recordingsBucket.bucketName });
    new CfnOutput(this, 'VaultBucket', { value: this.audit.vaultBucket.bucketName });
    new CfnOutput(this, 'ForensicReaderRoleArn', { description: 'Assume (with MFA) to read originals of masked values', value: this.audit.forensicReaderRole.roleArn });
    new CfnOutput(this, 'SigningKeyArn', { description: 'Verifies session seals (kms get-public-key)', value: this.keys.signingKey.keyArn });
    new CfnOutput(this, 'ApprovalStateMachineArn', { value: this.approvalWorkflow.stateMachine.stateMachineArn });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarms.topic.topicArn });
  }
}
