/**
 * The Warden stack as CloudFormation sees it, synthesized once from warden.aws.example.yaml with the
 * cdk.json feature flags (the functions' code is an inline stand-in here; app.test.ts bundles it for
 * real).
 *
 * Proves: the proxy task's role holds exactly the statements listed in warden-stack.ts (target secrets
 * by name, create-only audit writes with no Delete/Update/BatchWriteItem on events and no DeleteObject,
 * approvals start/stop/describe, revocations scan, vault writes without any read); only the Slack
 * interaction and approval request functions may complete approval tasks; only the forensic reader
 * can decrypt with the vault key (key policy allow + explicit deny for everyone else, and no identity
 * policy anywhere grants it); no key policy grants kms:*; symmetric keys rotate; the signing key is
 * ECC P-256 for signing; only the allowed CIDRs reach port 5432 and the tasks accept traffic only
 * from the load balancer; recordings are under Object Lock in compliance mode for the configured days;
 * every table has PITR, CMK encryption and the TTL attribute its adapter writes; every log group is
 * encrypted and keeps logs for the configured days; the load balancer is internal and TCP on 5432 with
 * the configured drain; no NAT gateway or internet gateway exists; the task definition and its
 * environment follow core/config/aws-environment.ts; both cdk-nag packs find nothing unacknowledged,
 * and every acknowledgement carries a specific reason. Variants: internet-facing, NAT gateways,
 * `lambda` connect decisions with existing Slack secrets.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Validations } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
import { parseConfig } from '../../core/config/schema.ts';
import { AUDIT_TABLES } from '../../infra/lib/audit-store.ts';
import { INTERFACE_ENDPOINTS } from '../../infra/lib/network.ts';
import {
  allIdentityStatements,
  exampleDocument,
  keyStatements,
  logicalId,
  nagFindings,
  resourcesOfType,
  roleStatements,
  synthesize,
  type Statement,
  type Synthesized,
} from './stack-fixture.ts';

/** CDK's custom resource provider behind `restrictDefaultSecurityGroup`. */
const RESTRICT_DEFAULT_SG_PROVIDER = 'CustomVpcRestrictDefaultSGCustomResourceProviderHandlerDC833E5E';

let s: Synthesized;
before(() => {
  s = synthesize();
});

const arnOf = (construct: IConstruct): unknown => ({ 'Fn::GetAtt': [logicalId(construct), 'Arn'] });
const resolve = (v: unknown): unknown => s.stack.resolve(v);
const bySid = (statements: Statement[], sid: string): Statement => {
  const found = statements.filter((x) => x.Sid === sid);
  assert.equal(found.length, 1, `one statement ${sid}`);
  return found[0]!;
};

describe('the proxy task role', () => {
  test('holds exactly the statements of warden-stack.ts, nothing more', () => {
    const { stack, template } = s;
    const region = stack.region;
    const statements = roleStatements(template, logicalId(stack.proxyTaskRole.role));
    const secret = (name: string): unknown => resolve(`arn:${stack.partition}:secretsmanager:${region}:${stack.account}:secret:${name}-??????`);
    const expected: Statement[] = [
      { Sid: 'TargetCredentials', Effect: 'Allow', Action: ['secretsmanager:GetSecretValue'], Resource: [secret('warden/targets/analytics'), secret('warden/targets/ledger')] },
      {
        Sid: 'TargetCredentialsKey',
        Effect: 'Allow',
        Action: ['kms:Decrypt'],
        Resource: [arnOf(stack.keys.secretsKey)],
        Condition: { StringEquals: { 'kms:ViaService': resolve(`secretsmanager.${region}.amazonaws.com`) } },
      },
      { Sid: 'AuditSessions', Effect: 'Allow', Action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'], Resource: [arnOf(stack.audit.sessionsTable)] },
      { Sid: 'AuditEvents', Effect: 'Allow', Action: ['dynamodb:GetItem', 'dynamodb:PutItem'], Resource: [arnOf(stack.audit.eventsTable)] },
      { Sid: 'AuditRecordings', Effect: 'Allow', Action: ['s3:GetObject', 's3:PutObject'], Resource: [resolve(stack.audit.recordingsBucket.arnForObjects('*'))] },
      {
        Sid: 'AuditKey',
        Effect: 'Allow',
        Action: ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey'],
        Resource: [arnOf(stack.keys.auditKey)],
        Condition: { StringEquals: { 'kms:ViaService': [resolve(`dynamodb.${region}.amazonaws.com`), resolve(`s3.${region}.amazonaws.com`)] } },
      },
      { Sid: 'Approvals', Effect: 'Allow', Action: ['dynamodb:GetItem', 'dynamodb:UpdateItem'], Resource: [arnOf(stack.audit.approvalsTable)] },
      { Sid: 'Revocations', Effect: 'Allow', Action: ['dynamodb:Scan'], Resource: [arnOf(stack.audit.revocationsTable)] },
      { Sid: 'StartApprovals', Effect: 'Allow', Action: ['states:StartExecution'], Resource: [resolve(`arn:${stack.partition}:states:${region}:${stack.account}:stateMachine:Warden-approval`)] },
      {
        Sid: 'FollowApprovals',
        Effect: 'Allow',
        Action: ['states:DescribeExecution', 'states:StopExecution'],
        Resource: [resolve(`arn:${stack.partition}:states:${region}:${stack.account}:execution:Warden-approval:*`)],
      },
      { Sid: 'ForensicVault', Effect: 'Allow', Action: ['s3:AbortMultipartUpload', 's3:PutObject'], Resource: [resolve(stack.audit.vaultBucket.arnForObjects('*'))] },
    ];
    assert.deepEqual(statements, expected);
  });

  test('cannot delete or rewrite audit events, nor delete recordings, nor read the vault', () => {
    const statements = roleStatements(s.template, logicalId(s.stack.proxyTaskRole.role));
    const actionsOn = (resource: unknown): string[] => statements.filter((x) => x.Resource.some((r) => JSON.stringify(r).includes(JSON.stringify(resource)))).flatMap((x) => x.Action);
    const events = actionsOn(arnOf(s.stack.audit.eventsTable));
    for (const forbidden of ['dynamodb:DeleteItem', 'dynamodb:UpdateItem', 'dynamodb:BatchWriteItem', 'dynamodb:*']) assert.ok(!events.includes(forbidden), forbidden);
    const everything = statements.flatMap((x) => x.Action);
    for (const forbidden of ['s3:DeleteObject', 's3:DeleteObjectVersion', 's3:PutObjectRetention', 's3:BypassGovernanceRetention', 's3:*', 'dynamodb:DeleteItem', 'kms:Decrypt*']) {
      assert.ok(!everything.includes(forbidden), forbidden);
    }
    assert.deepEqual(actionsOn(arnOf(s.stack.audit.vaultBucket)).sort(), ['s3:AbortMultipartUpload', 's3:PutObject']);
  });

  test('signs seals and generates vault data keys only through the key policies', () => {
    const task = arnOf(s.stack.proxyTaskRole.role);
    const grantsTo = (key: IConstruct): string[] =>
      keyStatements(s.template, logicalId(key))
        .filter((x) => x.Effect === 'Allow' && JSON.stringify(x.Principal) === JSON.stringify({ AWS: task }))
        .flatMap((x) => x.Action);
    assert.deepEqual(grantsTo(s.stack.keys.vaultKey), ['kms:GenerateDataKey']);
    assert.deepEqual(grantsTo(s.stack.keys.signingKey).sort(), ['kms:GetPublicKey', 'kms:Sign']);
    assert.deepEqual(grantsTo(s.stack.keys.maskingKey), ['kms:GenerateMac']);
    // Nobody else may compute masking MACs: the key policy names the task role alone for usage.
    const usage = keyStatements(s.template, logicalId(s.stack.keys.maskingKey)).filter((x) => x.Action.some((a) => a.startsWith('kms:GenerateMac') || a.startsWith('kms:VerifyMac')));
    assert.equal(usage.length, 1);
  });
});

describe('who may complete approval tasks and decrypt the vault', () => {
  test('only the Slack interaction and approval request functions may SendTaskSuccess/SendTaskFailure', () => {
    const roles = new Set(
      allIdentityStatements(s.template)
        .filter(({ statement }) => statement.Effect === 'Allow' && statement.Action.some((a) => a === '*' || a === 'states:*' || a.startsWith('states:SendTask')))
        .flatMap(({ roles: r }) => r),
    );
    const f = s.stack.functions.roles;
    assert.deepEqual([...roles].sort(), [logicalId(f.approvalRequest.role), logicalId(f.slackInteractions.role)].sort());
    const complete = bySid(roleStatements(s.template, logicalId(f.slackInteractions.role)), 'CompleteApprovalTasks');
    assert.deepEqual(complete.Action, ['states:SendTaskFailure', 'states:SendTaskSuccess']);
    assert.deepEqual(complete.Resource, [resolve(`arn:${s.stack.partition}:states:${s.stack.region}:${s.stack.account}:stateMachine:Warden-approval`)]);
  });

  test('only the forensic reader role can decrypt with the vault key', () => {
    const reader = arnOf(s.stack.audit.forensicReaderRole);
    const policy = keyStatements(s.template, logicalId(s.stack.keys.vaultKey));
    const decrypting = policy.filter((x) => x.Effect === 'Allow' && x.Action.some((a) => /^kms:(Decrypt|ReEncrypt|CreateGrant|\*)/.test(a)));
    assert.deepEqual(decrypting.map((x) => x.Principal), [{ AWS: reader }]);
    assert.deepEqual(bySid(policy, 'NobodyElseDecrypts'), {
      Sid: 'NobodyElseDecrypts',
      Effect: 'Deny',
      Action: ['kms:CreateGrant', 'kms:Decrypt', 'kms:ReEncrypt*'],
      Resource: ['*'],
      Condition: { ArnNotEquals: { 'aws:PrincipalArn': reader } },
      Principal: { AWS: '*' },
    });
    // No identity policy grants decryption with it, nor any kms action on every key.
    const vault = JSON.stringify(arnOf(s.stack.keys.vaultKey));
    for (const { statement } of allIdentityStatements(s.template)) {
      const kmsAny = statement.Action.some((a) => a === '*' || a.startsWith('kms:'));
      if (!kmsAny) continue;
      assert.ok(!statement.Resource.some((r) => r === '*' || JSON.stringify(r) === vault), `statement ${statement.Sid ?? '?'} reaches the vault key`);
    }
  });

  test('the forensic reader is assumed by the account with MFA, and reads only the vault', () => {
    s.template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Condition: { Bool: { 'aws:MultiFactorAuthPresent': 'true' } } })] },
      Description: Match.stringLikeRegexp('forensic vault'),
    });
    const statements = roleStatements(s.template, logicalId(s.stack.audit.forensicReaderRole));
    assert.deepEqual(
      statements.map((x) => x.Action),
      [['s3:GetObject', 's3:GetObjectVersion'], ['s3:ListBucket'], ['kms:Decrypt']],
    );
  });
});

describe('keys', () => {
  test('symmetric keys rotate, the signing key is ECC P-256 for signing, the masking key HMAC, and no key policy grants kms:* or allows everyone', () => {
    const keys = resourcesOfType(s.template, 'AWS::KMS::Key');
    assert.equal(keys.length, 6);
    for (const [id, key] of keys) {
      const p = key.Properties;
      if (p.KeySpec === 'ECC_NIST_P256') assert.equal(p.KeyUsage, 'SIGN_VERIFY', id);
      else if (p.KeySpec === 'HMAC_256') assert.equal(p.KeyUsage, 'GENERATE_VERIFY_MAC', id);
      else assert.equal(p.EnableKeyRotation, true, `${id} rotates`);
      assert.equal(key.DeletionPolicy, 'Retain', id);
      for (const st of keyStatements(s.template, id)) {
        assert.ok(!st.Action.includes('kms:*'), `${id} ${st.Sid}: kms:*`);
        if (st.Effect === 'Allow') assert.notDeepEqual(st.Principal, { AWS: '*' }, `${id} ${st.Sid}: everyone`);
      }
    }
    assert.equal(keys.filter(([, k]) => k.Properties.KeySpec === 'ECC_NIST_P256').length, 1);
  });

  test('account principals use the audit and secrets keys only through their services', () => {
    const via = (key: IConstruct, sid: string): unknown => bySid(keyStatements(s.template, logicalId(key)), sid).Condition;
    assert.deepEqual(via(s.stack.keys.auditKey, 'UseThroughDynamoDbAndS3'), {
      StringEquals: { 'kms:CallerAccount': { Ref: 'AWS::AccountId' }, 'kms:ViaService': [resolve(`dynamodb.${s.stack.region}.amazonaws.com`), resolve(`s3.${s.stack.region}.amazonaws.com`)] },
    });
    assert.deepEqual(via(s.stack.keys.secretsKey, 'UseThroughSecretsManager'), {
      StringEquals: { 'kms:CallerAccount': { Ref: 'AWS::AccountId' }, 'kms:ViaService': [resolve(`secretsmanager.${s.stack.region}.amazonaws.com`)] },
    });
  });
});

describe('network', () => {
  test('only the allowed CIDRs reach port 5432, and the tasks accept traffic only from the load balancer', () => {
    const ingress: { group: string; rule: any }[] = [];
    for (const [id, sg] of resourcesOfType(s.template, 'AWS::EC2::SecurityGroup')) for (const rule of sg.Properties.SecurityGroupIngress ?? []) ingress.push({ group: id, rule });
    for (const [, r] of resourcesOfType(s.template, 'AWS::EC2::SecurityGroupIngress')) ingress.push({ group: r.Properties.GroupId['Fn::GetAtt'][0], rule: r.Properties });
    const lbSg = logicalId(s.stack.proxy.loadBalancerSecurityGroup);
    const taskSg = logicalId(s.stack.proxy.taskSecurityGroup);
    const endpointSg = logicalId(s.stack.network.endpointSecurityGroup);
    const summary = ingress.map(({ group, rule }) => ({
      group,
      from: rule.CidrIp ?? rule.SourceSecurityGroupId?.['Fn::GetAtt']?.[0],
      ports: [rule.FromPort, rule.ToPort],
      protocol: rule.IpProtocol,
    }));
    assert.deepEqual(
      summary.sort((a, b) => a.group.localeCompare(b.group)),
      [
        { group: endpointSg, from: '10.40.0.0/16', ports: [443, 443], protocol: 'tcp' },
        { group: lbSg, from: '10.0.0.0/8', ports: [5432, 5432], protocol: 'tcp' },
        { group: taskSg, from: lbSg, ports: [5432, 5432], protocol: 'tcp' },
      ].sort((a, b) => a.group.localeCompare(b.group)),
    );
  });

  test('no NAT gateway, no internet gateway, no public subnet: AWS APIs through endpoints', () => {
    const t = s.template;
    t.resourceCountIs('AWS::EC2::NatGateway', 0);
    t.resourceCountIs('AWS::EC2::InternetGateway', 0);
    t.resourceCountIs('AWS::EC2::EIP', 0);
    const subnets = resourcesOfType(t, 'AWS::EC2::Subnet');
    assert.equal(subnets.length, 2);
    for (const [, sn] of subnets) assert.equal(sn.Properties.MapPublicIpOnLaunch, false);
    const endpoints = resourcesOfType(t, 'AWS::EC2::VPCEndpoint').map(([, e]) => e.Properties);
    const gateways = endpoints.filter((e) => e.VpcEndpointType === 'Gateway').map((e) => JSON.stringify(e.ServiceName));
    assert.equal(gateways.length, 2);
    assert.ok(gateways.some((g) => g.includes('.s3')) && gateways.some((g) => g.includes('.dynamodb')));
    const interfaces = endpoints.filter((e) => e.VpcEndpointType === 'Interface');
    assert.equal(interfaces.length, Object.keys(INTERFACE_ENDPOINTS).length);
    for (const e of interfaces) assert.equal(e.PrivateDnsEnabled, true);
    const names = interfaces.map((e) => JSON.stringify(e.ServiceName));
    for (const svc of ['.ecr.api', '.ecr.dkr', '.secretsmanager', '.kms', '.logs', '.sts', '.states', '.lambda']) assert.ok(names.some((n) => n.includes(svc)), svc);
  });

  test('every flow is logged to an encrypted log group', () => {
    s.template.hasResourceProperties('AWS::EC2::FlowLog', { TrafficType: 'ALL', LogDestinationType: 'cloud-watch-logs', ResourceType: 'VPC' });
    s.template.hasResourceProperties('AWS::Logs::LogGroup', { KmsKeyId: arnOf(s.stack.keys.operationsKey), RetentionInDays: 365 });
  });
});

describe('audit store', () => {
  test('recordings are under Object Lock in compliance mode for the configured days, versioned', () => {
    s.template.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockEnabled: true,
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 365 } } },
      VersioningConfiguration: { Status: 'Enabled' },
    });
    assert.equal(resourcesOfType(s.template, 'AWS::S3::Bucket').filter(([, b]) => b.Properties.ObjectLockEnabled).length, 1);
  });

  test('every table has point-in-time recovery, the audit key, deletion protection and its TTL attribute', () => {
    const tables = resourcesOfType(s.template, 'AWS::DynamoDB::Table');
    assert.equal(tables.length, 4);
    for (const [id, t] of tables) {
      const p = t.Properties;
      assert.deepEqual(p.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true }, id);
      assert.deepEqual(p.SSESpecification, { KMSMasterKeyId: arnOf(s.stack.keys.auditKey), SSEEnabled: true, SSEType: 'KMS' }, id);
      assert.equal(p.DeletionProtectionEnabled, true, id);
      assert.equal(p.BillingMode, 'PAY_PER_REQUEST', id);
      assert.equal(p.TimeToLiveSpecification.Enabled, true, id);
    }
    const schema = (table: IConstruct): unknown => {
      const p = s.template.toJSON().Resources[logicalId(table)].Properties;
      return { keys: p.KeySchema.map((k: any) => `${k.KeyType}:${k.AttributeName}`), ttl: p.TimeToLiveSpecification.AttributeName };
    };
    assert.deepEqual(schema(s.stack.audit.eventsTable), { keys: ['HASH:sessionId', 'RANGE:seq'], ttl: AUDIT_TABLES.events.ttl });
    assert.deepEqual(schema(s.stack.audit.sessionsTable), { keys: ['HASH:sessionId'], ttl: 'expiresAt' });
    assert.deepEqual(schema(s.stack.audit.approvalsTable), { keys: ['HASH:id'], ttl: 'expiresAtEpoch' });
    assert.deepEqual(schema(s.stack.audit.revocationsTable), { keys: ['HASH:identity'], ttl: 'expiresAt' });
  });

  test('every bucket blocks public access, refuses plain HTTP and is encrypted (KMS where S3 allows it)', () => {
    const buckets = resourcesOfType(s.template, 'AWS::S3::Bucket');
    assert.equal(buckets.length, 3);
    for (const [id, b] of buckets) {
      assert.deepEqual(b.Properties.PublicAccessBlockConfiguration, { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true }, id);
      const algo = b.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm;
      assert.equal(algo, id === logicalId(s.stack.audit.accessLogsBucket) ? 'AES256' : 'aws:kms', id);
      assert.equal(b.DeletionPolicy, 'Retain', id);
    }
    const policies = resourcesOfType(s.template, 'AWS::S3::BucketPolicy');
    assert.equal(policies.length, 3);
    for (const [id, p] of policies) {
      assert.ok(
        p.Properties.PolicyDocument.Statement.some((st: any) => st.Effect === 'Deny' && st.Condition?.Bool?.['aws:SecureTransport'] === 'false'),
        `${id} refuses requests without TLS`,
      );
    }
  });
});

describe('encryption and retention of everything else', () => {
  test('every log group is encrypted and keeps logs for aws.logRetentionDays', () => {
    const groups = resourcesOfType(s.template, 'AWS::Logs::LogGroup');
    assert.equal(groups.length, 7);
    for (const [id, g] of groups) {
      assert.deepEqual(g.Properties.KmsKeyId, arnOf(s.stack.keys.operationsKey), id);
      assert.equal(g.Properties.RetentionInDays, 365, id);
    }
  });

  test('the topic, the queue and the secrets are encrypted with customer-managed keys', () => {
    s.template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: arnOf(s.stack.keys.operationsKey) });
    s.template.hasResourceProperties('AWS::SQS::Queue', { KmsMasterKeyId: arnOf(s.stack.keys.operationsKey) });
    const secrets = resourcesOfType(s.template, 'AWS::SecretsManager::Secret');
    assert.deepEqual(secrets.map(([, x]) => x.Properties.Name).sort(), ['warden/slack/bot-token', 'warden/slack/signing-secret']);
    for (const [, x] of secrets) assert.deepEqual(x.Properties.KmsKeyId, arnOf(s.stack.keys.secretsKey));
  });
});

describe('proxy service', () => {
  test('the load balancer is internal, TCP on 5432, drains for drainSeconds and preserves client addresses', () => {
    const t = s.template;
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Scheme: 'internal', Type: 'network' });
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 5432, Protocol: 'TCP' });
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
      Port: 5432,
      Protocol: 'TCP',
      TargetType: 'ip',
      HealthCheckProtocol: 'TCP',
      TargetGroupAttributes: Match.arrayWith([
        { Key: 'deregistration_delay.timeout_seconds', Value: '90' },
        { Key: 'preserve_client_ip.enabled', Value: 'true' },
      ]),
    });
  });

  test('the container runs as UID 1000 on a read-only root filesystem with the environment of aws-environment.ts', () => {
    const [, td] = resourcesOfType(s.template, 'AWS::ECS::TaskDefinition')[0]!;
    assert.equal(td.Properties.RequiresCompatibilities[0], 'FARGATE');
    const c = td.Properties.ContainerDefinitions[0];
    assert.equal(c.ReadonlyRootFilesystem, true);
    assert.equal(c.User, '1000:1000');
    assert.equal(c.StopTimeout, 100);
    assert.deepEqual(c.PortMappings, [{ ContainerPort: 5432, Name: 'postgres', Protocol: 'tcp' }]);
    assert.deepEqual(c.MountPoints, [{ ContainerPath: '/tmp/warden', ReadOnly: false, SourceVolume: 'state' }]);
    assert.deepEqual(c.HealthCheck.Command, ['CMD', 'node', '/app/dist/proxy/healthcheck.mjs']);
    const env = Object.fromEntries(c.Environment.map((e: { Name: string; Value: unknown }) => [e.Name, e.Value]));
    assert.deepEqual(Object.keys(env).sort(), Object.values(AwsEnvironment).sort());
    assert.equal(env[AwsEnvironment.adapters], 'aws');
    assert.equal(env[AwsEnvironment.drainSeconds], '90');
    assert.equal(env[AwsEnvironment.auditRetentionDays], '400');
    const proxyConfig = JSON.parse(env[AwsEnvironment.configJson] as string);
    assert.equal(proxyConfig.aws, undefined);
    assert.deepEqual(parseConfig(proxyConfig, 'WARDEN_CONFIG_JSON'), proxyConfig);
    assert.deepEqual(env[AwsEnvironment.auditEventsTable], { Ref: logicalId(s.stack.audit.eventsTable) });
    assert.deepEqual(env[AwsEnvironment.approvalStateMachineArn], { Ref: logicalId(s.stack.approvalWorkflow.stateMachine) });
  });

  test('the cluster has Container Insights; the service runs in the isolated subnets without public IPs', () => {
    s.template.hasResourceProperties('AWS::ECS::Cluster', { ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }] });
    s.template.hasResourceProperties('AWS::ECS::Service', {
      LaunchType: 'FARGATE',
      NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'DISABLED' } },
      DeploymentConfiguration: Match.objectLike({ DeploymentCircuitBreaker: { Enable: true, Rollback: true } }),
    });
  });

  test('scales on CPU and on connections per healthy task (ActiveFlowCount / HealthyHostCount)', () => {
    s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 2, MaxCapacity: 6, ScalableDimension: 'ecs:service:DesiredCount' });
    s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({ PredefinedMetricSpecification: { PredefinedMetricType: 'ECSServiceAverageCPUUtilization' }, TargetValue: 60 }),
    });
    s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        TargetValue: 200,
        CustomizedMetricSpecification: {
          Metrics: [
            Match.objectLike({ Id: 'flows', MetricStat: Match.objectLike({ Metric: Match.objectLike({ MetricName: 'ActiveFlowCount', Namespace: 'AWS/NetworkELB' }) }) }),
            Match.objectLike({ Id: 'healthy', MetricStat: Match.objectLike({ Metric: Match.objectLike({ MetricName: 'HealthyHostCount' }) }) }),
            Match.objectLike({ Id: 'perTask', Expression: 'flows / healthy', ReturnData: true }),
          ],
        },
      }),
    });
  });
});

describe('approvals and functions', () => {
  test('the state machine is the ASL file with both function ARNs substituted, logged and traced', () => {
    const [, sm] = resourcesOfType(s.template, 'AWS::StepFunctions::StateMachine')[0]!;
    const p = sm.Properties;
    assert.equal(p.StateMachineName, 'Warden-approval');
    assert.equal(p.StateMachineType, 'STANDARD');
    assert.deepEqual(p.DefinitionSubstitutions, {
      ApprovalRequestFunctionArn: arnOf(s.stack.functions.approvalRequest),
      ApprovalOutcomeFunctionArn: arnOf(s.stack.functions.approvalOutcome),
    });
    assert.ok(p.DefinitionS3Location, 'the definition is the ASL file, shipped as an asset');
    assert.equal(p.LoggingConfiguration.Level, 'ALL');
    assert.equal(p.LoggingConfiguration.IncludeExecutionData, false);
    assert.deepEqual(p.TracingConfiguration, { Enabled: true });
  });

  test('ABORTED executions of the approval state machine go to approval-outcome', () => {
    s.template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.states'],
        'detail-type': ['Step Functions Execution Status Change'],
        detail: { status: ['ABORTED'], stateMachineArn: [{ Ref: logicalId(s.stack.approvalWorkflow.stateMachine) }] },
      },
      Targets: [Match.objectLike({ Arn: arnOf(s.stack.functions.approvalOutcome), DeadLetterConfig: Match.anyValue() })],
    });
  });

  test('four functions on the newest Node runtime with Powertools settings; Slack reaches one through a URL without AWS auth', () => {
    const fns = resourcesOfType(s.template, 'AWS::Lambda::Function').filter(([id]) => id !== RESTRICT_DEFAULT_SG_PROVIDER);
    assert.equal(fns.length, 4);
    for (const [id, f] of fns) {
      assert.equal(f.Properties.Runtime, 'nodejs24.x', id);
      assert.equal(f.Properties.Environment.Variables.POWERTOOLS_LOG_LEVEL, 'INFO', id);
      assert.match(f.Properties.Environment.Variables.POWERTOOLS_SERVICE_NAME, /^warden-/, id);
      assert.ok(f.Properties.LoggingConfig.LogGroup, `${id} logs to its own group`);
      for (const v of Object.keys(f.Properties.Environment.Variables)) assert.ok(!/^SLACK_(BOT_TOKEN|SIGNING_SECRET)$/.test(v), `${id}: no secret value in the environment`);
    }
    s.template.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'NONE', TargetFunctionArn: arnOf(s.stack.functions.slackInteractions) });
    s.template.resourceCountIs('AWS::Lambda::Url', 1);
    const interactions = s.template.toJSON().Resources[logicalId(s.stack.functions.slackInteractions)].Properties;
    assert.deepEqual(JSON.parse(interactions.Environment.Variables.APPROVALS_CONFIG), JSON.parse(JSON.stringify(s.deployment.config.approvals)));
    assert.ok(interactions.Environment.Variables.SLACK_SIGNING_SECRET_ID);
    const policy = s.template.toJSON().Resources[logicalId(s.stack.functions.policyDecision)].Properties;
    assert.ok(policy.VpcConfig, 'the policy decision function runs in the VPC');
  });

  test('every role carries one customer-managed policy and no inline or AWS managed policy', () => {
    for (const [id, r] of resourcesOfType(s.template, 'AWS::IAM::Role')) {
      if (id === 'CustomVpcRestrictDefaultSGCustomResourceProviderRole26592FE0') {
        // CDK's own provider that strips the default security group's rules once, at deployment.
        assert.deepEqual(r.Properties.Policies[0].PolicyDocument.Statement[0].Action, [
          'ec2:AuthorizeSecurityGroupIngress',
          'ec2:AuthorizeSecurityGroupEgress',
          'ec2:RevokeSecurityGroupIngress',
          'ec2:RevokeSecurityGroupEgress',
        ]);
        continue;
      }
      assert.equal(r.Properties.Policies, undefined, `${id}: inline policies`);
      assert.equal(r.Properties.ManagedPolicyArns, undefined, `${id}: AWS managed policies`);
    }
    s.template.resourceCountIs('AWS::IAM::Policy', 0);
  });
});

describe('alarms', () => {
  test('proxy errors, audit write failures, approval failures, unhealthy targets and dead letters alarm to the encrypted topic', () => {
    const alarms = resourcesOfType(s.template, 'AWS::CloudWatch::Alarm');
    assert.equal(alarms.length, 7);
    const topic = { Ref: logicalId(s.stack.alarms.topic) };
    for (const [id, a] of alarms) assert.deepEqual(a.Properties.AlarmActions, [topic], id);
    s.template.hasResourceProperties('AWS::Logs::MetricFilter', { FilterPattern: '{ $.level = "error" }', MetricTransformations: [Match.objectLike({ MetricName: 'ProxyErrors' })] });
    s.template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '{ ($.level = "error") && ($.msg = "audit*") }',
      MetricTransformations: [Match.objectLike({ MetricName: 'AuditWriteFailures' })],
    });
    s.template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '{ ($.message = "approval outcome recorded") && ($.outcome = "failed") }',
      MetricTransformations: [Match.objectLike({ MetricName: 'ApprovalFailedClosed' })],
    });
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'UnHealthyHostCount', Namespace: 'AWS/NetworkELB' });
    s.template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'ExecutionsTimedOut', Namespace: 'AWS/States' });
    s.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'platform-oncall@example.com' });
    s.template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });
});

describe('resource counts', () => {
  test('one of each service, two Slack secrets, no more', () => {
    const counts: Record<string, number> = {
      'AWS::EC2::VPC': 1,
      'AWS::ECS::Cluster': 1,
      'AWS::ECS::Service': 1,
      'AWS::ElasticLoadBalancingV2::LoadBalancer': 1,
      'AWS::StepFunctions::StateMachine': 1,
      'AWS::Events::Rule': 1,
      'AWS::SNS::Topic': 1,
      'AWS::SQS::Queue': 1,
      'AWS::DynamoDB::Table': 4,
      'AWS::S3::Bucket': 3,
      'AWS::KMS::Key': 6,
      // Ours, and CDK's provider that closes the default security group.
      'AWS::Lambda::Function': 5,
      'AWS::SecretsManager::Secret': 2,
      'AWS::EC2::VPCEndpoint': 10,
      'AWS::EC2::NatGateway': 0,
    };
    for (const [type, n] of Object.entries(counts)) s.template.resourceCountIs(type, n);
  });
});

describe('cdk-nag', () => {
  test('AwsSolutions and NIST 800-53 rev 5 find nothing unacknowledged', () => {
    assert.deepEqual(nagFindings(s.app), []);
  });

  test('every acknowledgement gives a specific reason, and the acknowledged rules are the reviewed list', () => {
    const acknowledged = new Map<string, string>();
    const visit = (c: IConstruct): void => {
      for (const m of c.node.metadata) {
        if (m.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
        for (const [id, reason] of Object.entries(m.data as Record<string, string>)) acknowledged.set(`${c.node.path} ${id.replace(/^annotation::/i, '')}`, reason);
      }
      c.node.children.forEach(visit);
    };
    visit(s.app);
    assert.ok(acknowledged.size > 0);
    // CDK acknowledges some CloudFormation-Validate rules of its own constructs; the cdk-nag ones are ours.
    const ours = [...acknowledged].filter(([where]) => /\s(AwsSolutions|NIST)/.test(where));
    for (const [where, reason] of ours) {
      assert.ok(reason.length >= 80, `${where}: the reason is too short to be specific: ${reason}`);
    }
    const rules = [...new Set(ours.map(([k]) => k.split(' ')[1]!.replace(/\[.*$/, '')))].sort();
    assert.deepEqual(rules, [
      'AwsSolutions-ECS2',
      'AwsSolutions-ELB2',
      'AwsSolutions-IAM5',
      'AwsSolutions-SMG4',
      'NIST.800.53.R5-DynamoDBInBackupPlan',
      'NIST.800.53.R5-ELBLoggingEnabled',
      'NIST.800.53.R5-ELBv2ACMCertificateRequired',
      'NIST.800.53.R5-LambdaConcurrency',
      'NIST.800.53.R5-LambdaDLQ',
      'NIST.800.53.R5-LambdaFunctionPublicAccessProhibited',
      'NIST.800.53.R5-LambdaInsideVPC',
      'NIST.800.53.R5-S3BucketReplicationEnabled',
      'NIST.800.53.R5-S3DefaultEncryptionKMS',
      'NIST.800.53.R5-SecretsManagerRotationEnabled',
    ]);
  });
});

describe('variants', () => {
  test('internet-facing: public subnets hold only the load balancer; tasks stay isolated; still no NAT; nag-clean', () => {
    const doc = exampleDocument();
    doc.aws.loadBalancer = { internal: false, allowedCidrs: ['203.0.113.0/24', '198.51.100.0/24'] };
    const v = synthesize({ doc });
    v.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Scheme: 'internet-facing' });
    v.template.resourceCountIs('AWS::EC2::InternetGateway', 1);
    v.template.resourceCountIs('AWS::EC2::NatGateway', 0);
    const subnets = resourcesOfType(v.template, 'AWS::EC2::Subnet');
    assert.equal(subnets.length, 4);
    for (const [, sn] of subnets) assert.equal(sn.Properties.MapPublicIpOnLaunch, false);
    const [, lbSg] = resourcesOfType(v.template, 'AWS::EC2::SecurityGroup').find(([id]) => id === logicalId(v.stack.proxy.loadBalancerSecurityGroup))!;
    assert.deepEqual(
      lbSg.Properties.SecurityGroupIngress.map((r: any) => [r.CidrIp, r.FromPort]),
      [
        ['203.0.113.0/24', 5432],
        ['198.51.100.0/24', 5432],
      ],
    );
    v.template.hasResourceProperties('AWS::ECS::Service', { NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'DISABLED' } } });
    assert.deepEqual(nagFindings(v.app), []);
  });

  test('NAT gateways on request give the task subnets an internet route; nag-clean', () => {
    const v = synthesize({ stack: { natGateways: 1 } });
    v.template.resourceCountIs('AWS::EC2::NatGateway', 1);
    v.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Scheme: 'internal' });
    assert.deepEqual(nagFindings(v.app), []);
  });

  test('lambda connect decisions point the proxy at the deployed function; existing Slack secrets are referenced, not created', () => {
    const doc = exampleDocument();
    doc.policy.connectDecisions = { mode: 'lambda', functionName: 'replaced-by-the-stack' };
    doc.aws.audit.objectLockDays = 30;
    const v = synthesize({ doc, stack: { createSlackSecrets: false } });
    const task = roleStatements(v.template, logicalId(v.stack.proxyTaskRole.role));
    assert.deepEqual(bySidOf(task, 'ConnectDecisions'), { Sid: 'ConnectDecisions', Effect: 'Allow', Action: ['lambda:InvokeFunction'], Resource: [{ 'Fn::GetAtt': [logicalId(v.stack.functions.policyDecision), 'Arn'] }] });
    const [, td] = resourcesOfType(v.template, 'AWS::ECS::TaskDefinition')[0]!;
    const configJson = td.Properties.ContainerDefinitions[0].Environment.find((e: { Name: string }) => e.Name === AwsEnvironment.configJson).Value;
    assert.match(JSON.stringify(configJson), new RegExp(logicalId(v.stack.functions.policyDecision)));
    v.template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    v.template.hasResourceProperties('AWS::S3::Bucket', { ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: 30 } } } });
    const interactions = roleStatements(v.template, logicalId(v.stack.functions.roles.slackInteractions.role));
    assert.match(JSON.stringify(bySidOf(interactions, 'ReadSlackSecrets').Resource), /secret:warden\/slack\/signing-secret-\?\?\?\?\?\?"/);
    const fn = v.template.toJSON().Resources[logicalId(v.stack.functions.slackInteractions)].Properties.Environment.Variables;
    assert.equal(fn.SLACK_SIGNING_SECRET_ID, 'warden/slack/signing-secret');
    // Referenced secrets keep their own key (the account's aws/secretsmanager key needs no grant).
    assert.ok(!interactions.some((x) => x.Sid === 'SlackSecretsKeyThroughSecretsManager'));
    assert.deepEqual(nagFindings(v.app), []);
  });
});

function bySidOf(statements: Statement[], sid: string): Statement {
  const found = statements.filter((x) => x.Sid === sid);
  assert.equal(found.length, 1, `one statement ${sid}`);
  return found[0]!;
}
