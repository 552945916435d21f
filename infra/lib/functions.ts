/**
 * The four Lambda functions (functions/*), bundled from source with the local esbuild into ES modules,
 * each with its own log group and its own role holding exactly what it calls:
 *
 * | function | invoked by | may call |
 * |---|---|---|
 * | policy-decision | the proxy (`policy.connectDecisions.mode: lambda`) | nothing: policies ship in its bundle; runs in the VPC |
 * | approval-request | the approval state machine (`.waitForTaskToken`) | approvals table; SendTaskSuccess/Failure (a retried task that finds its request already decided completes the new token); the bot token |
 * | slack-interactions | Slack, through its function URL | approvals table; SendTaskSuccess/Failure once a request closes; the signing secret and bot token |
 * | approval-outcome | the state machine (RecordOutcome); EventBridge (ABORTED executions) | approvals table; the bot token; its dead-letter queue |
 *
 * The three Slack functions run outside the VPC: they call the Slack Web API on the internet and the VPC
 * has no route there by design. The function URL has no AWS authentication because Slack cannot sign AWS
 * requests; every request must carry Slack's signature over its body (checked before anything is read).
 */
import { ESM_BUNDLE_BANNER_LINES, ESM_BUNDLE_DEFINE } from '../../scripts/esm-bundle-banner.mjs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { ApprovalsConfig } from '../../core/config/schema.ts';
import { ExplicitRole } from './explicit-role.ts';

export interface WardenFunctionsProps {
  /** The repository root: entries are `functions/<name>/handler.ts` under it, with its package-lock.json. */
  readonly projectRoot: string;
  /** The Cedar policy folder copied into the policy decision function's bundle. */
  readonly policyDir: string;
  /** The configuration's `approvals` section (APPROVALS_CONFIG). */
  readonly approvals: ApprovalsConfig;
  readonly approvalsTable: dynamodb.ITable;
  /** The key of the approvals table. */
  readonly auditKey: kms.IKey;
  readonly slackSigningSecret: secretsmanager.ISecret;
  readonly slackBotToken: secretsmanager.ISecret;
  /** The key of the Slack secrets, if the stack manages it (referenced secrets keep theirs). */
  readonly secretsKey?: kms.IKey;
  /** ARN of the approval state machine (known before it exists: it has a fixed name). */
  readonly approvalStateMachineArn: string;
  /** VPC and subnets of the policy decision function. */
  readonly vpc: ec2.IVpc;
  readonly vpcSubnets: ec2.SubnetSelection;
  /** Encrypts the log groups and the dead-letter queue. */
  readonly operationsKey: kms.IKey;
  readonly logRetention: logs.RetentionDays;
  /**
   * What happens to the log groups when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Bundle the code (true) or use a small inline stand-in for each handler (false): the template is the
   * same but for the code, and synthesis takes a fraction of the time. Only for tests of the template;
   * a deployment always bundles.
   * @default true
   */
  readonly bundle?: boolean;
}

/** Functions run on the newest Node.js runtime Lambda offers; the bundles target it. */
export const FUNCTION_RUNTIME = lambda.Runtime.NODEJS_24_X;

const ESM_BANNER = ESM_BUNDLE_BANNER_LINES.join(' ');

/** Files the policy decision bundle reads at run time next to index.mjs (their packages use `${__dirname}/<file>`). */
function wasmFiles(): string[] {
  const require = createRequire(import.meta.url);
  return [join(dirname(require.resolve('libpg-query')), 'libpg-query.wasm'), join(dirname(require.resolve('@cedar-policy/cedar-wasm/nodejs')), 'cedar_wasm_bg.wasm')];
}

/**
 * A secret referenced by name has no full ARN (Secrets Manager appends six random characters): IAM gets
 * the name with `-??????`, the function the name itself (GetSecretValue takes either).
 */
const policyArnOf = (s: secretsmanager.ISecret): string => s.secretFullArn ?? `${s.secretArn}-??????`;
const secretIdOf = (s: secretsmanager.ISecret): string => s.secretFullArn ?? s.secretName;

const quote = (p: string): string => `'${p.replace(/'/g, `'\\''`)}'`;

export class WardenFunctions extends Construct {
  public readonly policyDecision: lambda.Function;
  public readonly approvalRequest: lambda.Function;
  public readonly slackInteractions: lambda.Function;
  public readonly approvalOutcome: lambda.Function;
  /** Slack's Request URL for interactivity. */
  public readonly slackInteractionsUrl: lambda.FunctionUrl;
  /** Failed asynchronous invocations of approval-outcome (from EventBridge). */
  public readonly deadLetterQueue: sqs.Queue;
  public readonly logGroups: Record<'policyDecision' | 'approvalRequest' | 'slackInteractions' | 'approvalOutcome', logs.LogGroup>;
  /** The security group of the policy decision function: no ingress, no egress (it calls nothing). */
  public readonly policyDecisionSecurityGroup: ec2.SecurityGroup;
  public readonly roles: Record<'policyDecision' | 'approvalRequest' | 'slackInteractions' | 'approvalOutcome', ExplicitRole>;

  constructor(scope: Construct, id: string, props: WardenFunctionsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const bundle = props.bundle ?? true;

    const logGroup = (name: string): logs.LogGroup =>
      new logs.LogGroup(this, `${name}Logs`, { encryptionKey: props.operationsKey, retention: props.logRetention, removalPolicy });
    this.logGroups = {
      policyDecision: logGroup('PolicyDecision'),
      approvalRequest: logGroup('ApprovalRequest'),
      slackInteractions: logGroup('SlackInteractions'),
      approvalOutcome: logGroup('ApprovalOutcome'),
    };

    const lambdaPrincipal = new iam.ServicePrincipal('lambda.amazonaws.com');
    const writeLogs = (group: logs.ILogGroup): iam.PolicyStatement =>
      new iam.PolicyStatement({ sid: 'WriteOwnLogs', actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [group.logGroupArn] });
    const approvalsTable = (actions: string[]): iam.PolicyStatement[] => [
      new iam.PolicyStatement({ sid: 'ApprovalsTable', actions: actions.map((a) => `dynamodb:${a}`), resources: [props.approvalsTable.tableArn] }),
      new iam.PolicyStatement({
        sid: 'ApprovalsTableKeyThroughDynamoDb',
        actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
        resources: [props.auditKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${stack.region}.amazonaws.com` } },
      }),
    ];
    const completeTasks = new iam.PolicyStatement({
      sid: 'CompleteApprovalTasks',
      actions: ['states:SendTaskSuccess', 'states:SendTaskFailure'],
      resources: [props.approvalStateMachineArn],
    });
    const readSecrets = (...secrets: secretsmanager.ISecret[]): iam.PolicyStatement[] => [
      new iam.PolicyStatement({ sid: 'ReadSlackSecrets', actions: ['secretsmanager:GetSecretValue'], resources: secrets.map(policyArnOf) }),
      ...(props.secretsKey
        ? [
            new iam.PolicyStatement({
              sid: 'SlackSecretsKeyThroughSecretsManager',
              actions: ['kms:Decrypt'],
              resources: [props.secretsKey.keyArn],
              conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${stack.region}.amazonaws.com` } },
            }),
          ]
        : []),
    ];

    this.deadLetterQueue = new sqs.Queue(this, 'ApprovalOutcomeDeadLetters', {
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.operationsKey,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      removalPolicy,
    });

    this.policyDecisionSecurityGroup = new ec2.SecurityGroup(this, 'PolicyDecisionSecurityGroup', {
      vpc: props.vpc,
      description: 'Warden policy decision function: calls nothing, so no egress',
      allowAllOutbound: false,
    });

    this.roles = {
      policyDecision: new ExplicitRole(this, 'PolicyDecisionRole', {
        assumedBy: lambdaPrincipal,
        description: 'Warden policy decision function',
        statements: [
          writeLogs(this.logGroups.policyDecision),
          // What Lambda does with the role to attach the function to the VPC: the interfaces do not exist
          // before Lambda creates them, and ec2:DescribeNetworkInterfaces has no resource-level permissions.
          new iam.PolicyStatement({
            sid: 'AttachToTheVpc',
            actions: ['ec2:CreateNetworkInterface', 'ec2:DeleteNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses'],
            resources: ['*'],
          }),
        ],
      }),
      approvalRequest: new ExplicitRole(this, 'ApprovalRequestRole', {
        assumedBy: lambdaPrincipal,
        description: 'Warden approval request function',
        statements: [writeLogs(this.logGroups.approvalRequest), ...approvalsTable(['GetItem', 'PutItem', 'UpdateItem']), completeTasks, ...readSecrets(props.slackBotToken)],
      }),
      slackInteractions: new ExplicitRole(this, 'SlackInteractionsRole', {
        assumedBy: lambdaPrincipal,
        description: 'Warden Slack interactions function',
        statements: [
          writeLogs(this.logGroups.slackInteractions),
          ...approvalsTable(['GetItem', 'UpdateItem']),
          completeTasks,
          ...readSecrets(props.slackSigningSecret, props.slackBotToken),
        ],
      }),
      approvalOutcome: new ExplicitRole(this, 'ApprovalOutcomeRole', {
        assumedBy: lambdaPrincipal,
        description: 'Warden approval outcome function',
        statements: [
          writeLogs(this.logGroups.approvalOutcome),
          ...approvalsTable(['GetItem', 'UpdateItem']),
          ...readSecrets(props.slackBotToken),
          new iam.PolicyStatement({ sid: 'DeadLetters', actions: ['sqs:SendMessage'], resources: [this.deadLetterQueue.queueArn] }),
          new iam.PolicyStatement({
            sid: 'DeadLetterKeyThroughSqs',
            actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
            resources: [props.operationsKey.keyArn],
            conditions: { StringEquals: { 'kms:ViaService': `sqs.${stack.region}.amazonaws.com` } },
          }),
        ],
      }),
    };

    const powertools = (service: string): Record<string, string> => ({
      POWERTOOLS_SERVICE_NAME: `warden-${service}`,
      POWERTOOLS_LOG_LEVEL: 'INFO',
      NODE_OPTIONS: '--enable-source-maps',
    });
    const approvalsEnvironment = {
      APPROVALS_TABLE: props.approvalsTable.tableName,
      APPROVALS_CONFIG: JSON.stringify(props.approvals),
    };
    const make = (
      name: 'policy-decision' | 'approval-request' | 'slack-interactions' | 'approval-outcome',
      key: keyof WardenFunctions['roles'],
      options: { memorySize: number; timeout: Duration; environment: Record<string, string>; description: string; afterBundling?: (outputDir: string) => string[] } & Pick<
        lambda.FunctionProps,
        'vpc' | 'vpcSubnets' | 'securityGroups' | 'deadLetterQueue' | 'retryAttempts'
      >,
    ): lambda.Function => {
      const common = {
        description: options.description,
        runtime: FUNCTION_RUNTIME,
        architecture: lambda.Architecture.ARM_64,
        memorySize: options.memorySize,
        timeout: options.timeout,
        role: this.roles[key].immutableRole,
        logGroup: this.logGroups[key],
        loggingFormat: lambda.LoggingFormat.JSON,
        environment: { ...powertools(name), ...options.environment },
        ...(options.vpc ? { vpc: options.vpc, vpcSubnets: options.vpcSubnets, securityGroups: options.securityGroups } : {}),
        ...(options.deadLetterQueue ? { deadLetterQueue: options.deadLetterQueue } : {}),
        ...(options.retryAttempts !== undefined ? { retryAttempts: options.retryAttempts } : {}),
      } satisfies lambda.FunctionOptions & { runtime: lambda.Runtime };
      const fn = bundle
        ? new nodejs.NodejsFunction(this, name, {
            ...common,
            entry: join(props.projectRoot, 'functions', name, 'handler.ts'),
            projectRoot: props.projectRoot,
            depsLockFilePath: join(props.projectRoot, 'package-lock.json'),
            bundling: {
              format: nodejs.OutputFormat.ESM,
              target: 'node24',
              // The AWS SDK is bundled too: the versions tested are the versions deployed.
              externalModules: [],
              minify: true,
              logLevel: nodejs.LogLevel.WARNING,
              sourceMap: true,
              sourcesContent: false,
              banner: ESM_BANNER,
              define: { ...ESM_BUNDLE_DEFINE },
              ...(options.afterBundling
                ? {
                    commandHooks: {
                      beforeBundling: () => [],
                      beforeInstall: () => [],
                      afterBundling: (_inputDir: string, outputDir: string) => options.afterBundling!(outputDir),
                    },
                  }
                : {}),
            },
          })
        : new lambda.Function(this, name, {
            ...common,
            handler: 'index.handler',
            code: lambda.Code.fromInline(`export const handler = async () => { throw new Error('${name}: template test stand-in'); };`),
          });
      // Lambda checks the role's permissions (the VPC's network interfaces) when it creates the function.
      this.roles[key].requiredBy(fn);
      return fn;
    };

    this.policyDecision = make('policy-decision', 'policyDecision', {
      description: 'Warden: answers connect and statement questions from the Cedar policies in its bundle',
      memorySize: 1024,
      timeout: Duration.seconds(10),
      environment: {},
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      securityGroups: [this.policyDecisionSecurityGroup],
      afterBundling: (out) => [
        ...wasmFiles().map((f) => `cp ${quote(f)} ${quote(out)}/`),
        `mkdir -p ${quote(join(out, 'policies'))}`,
        `cp ${quote(props.policyDir)}/*.cedar ${quote(props.policyDir)}/*.cedarschema ${quote(join(out, 'policies'))}/`,
      ],
    });
    this.approvalRequest = make('approval-request', 'approvalRequest', {
      description: 'Warden: stores an approval request and its task token, posts it to Slack',
      memorySize: 256,
      timeout: Duration.seconds(30),
      environment: { ...approvalsEnvironment, SLACK_BOT_TOKEN_SECRET_ID: secretIdOf(props.slackBotToken) },
    });
    this.slackInteractions = make('slack-interactions', 'slackInteractions', {
      description: "Warden: Slack's interactivity endpoint (Approve / Deny); verifies Slack's signature first",
      memorySize: 256,
      // Slack gives up after 3 seconds; anything longer only holds a dead request.
      timeout: Duration.seconds(10),
      environment: {
        ...approvalsEnvironment,
        SLACK_SIGNING_SECRET_ID: secretIdOf(props.slackSigningSecret),
        SLACK_BOT_TOKEN_SECRET_ID: secretIdOf(props.slackBotToken),
      },
    });
    this.approvalOutcome = make('approval-outcome', 'approvalOutcome', {
      description: 'Warden: records how an approval ended and closes its Slack message',
      memorySize: 256,
      timeout: Duration.seconds(30),
      environment: { APPROVALS_TABLE: props.approvalsTable.tableName, SLACK_BOT_TOKEN_SECRET_ID: secretIdOf(props.slackBotToken) },
      deadLetterQueue: this.deadLetterQueue,
      retryAttempts: 2,
    });

    this.slackInteractionsUrl = this.slackInteractions.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });

    this.acknowledge();
  }

  private acknowledge(): void {
    this.roles.policyDecision.acknowledgeWildcards({
      AttachToTheVpc:
        'The network-interface actions Lambda performs with the role to place the function in the VPC; ec2:DescribeNetworkInterfaces has no resource-level permissions, and the interfaces do not exist before Lambda creates them.',
    });
    const slack =
      "Slack's interactivity endpoint: Slack cannot sign AWS requests, so the function URL has no AWS authentication. Every request must carry Slack's v0 signature over its body with the app's signing secret (checked first, 401 otherwise), at most five minutes old.";
    Validations.of(this.slackInteractions).acknowledge({ id: 'NIST.800.53.R5-LambdaFunctionPublicAccessProhibited', reason: slack });
    const outsideVpc = 'Calls the Slack Web API on the internet; the VPC has no internet route by design (no NAT), and outside a VPC Lambda gives the function managed egress. It reaches DynamoDB, Step Functions and Secrets Manager over TLS with its own role.';
    const synchronous = (caller: string): string =>
      `Invoked synchronously by ${caller}: a failure returns to the caller, which retries or fails closed. A dead-letter queue only receives failed asynchronous invocations, of which this function has none.`;
    const concurrency =
      'Reserved concurrency is carved out of the account-wide pool and fails deployment in accounts with the default limit of 10; the load is bounded by people clicking in Slack and by approval requests, not by agents.';
    const fns: [lambda.Function, string | undefined, string][] = [
      [this.policyDecision, undefined, synchronous('the proxy (connect decisions)')],
      [this.approvalRequest, outsideVpc, synchronous('the approval state machine (.waitForTaskToken), whose Retry and Catch handle failures')],
      [this.slackInteractions, outsideVpc, synchronous("Slack through the function URL, which redelivers on failure (duplicates are harmless: votes are conditional writes)")],
      [this.approvalOutcome, outsideVpc, ''],
    ];
    for (const [fn, vpcReason, dlqReason] of fns) {
      const v = Validations.of(fn);
      if (vpcReason) v.acknowledge({ id: 'NIST.800.53.R5-LambdaInsideVPC', reason: vpcReason });
      if (dlqReason) v.acknowledge({ id: 'NIST.800.53.R5-LambdaDLQ', reason: dlqReason });
      v.acknowledge({ id: 'NIST.800.53.R5-LambdaConcurrency', reason: concurrency });
    }
  }
}
