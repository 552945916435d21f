/**
 * The deployment configuration (infra/lib/deployment-config.ts) and the constructs' own checks of their
 * props.
 *
 * Proves: warden.aws.example.yaml is a valid deployment; a configuration without the `aws` section, with
 * a bad VPC CIDR (also one the schema's pattern lets through, such as 10.400.0.0/16 or a /8), host bits
 * in an allowed CIDR, 0.0.0.0/0, a loopback listener, TLS off, the development issuer, the demo database,
 * a log retention CloudWatch does not offer, an ARN instead of a secret name, or a YAML syntax error is
 * refused with the file, the key and the reason; and each construct refuses impossible props (Fargate
 * sizes, drain beyond Fargate's stop timeout, NAT gateways beyond the zones, Object Lock days, key
 * deletion window, state machine name, alarm e-mail, equal Slack secret names) with a message naming
 * the prop.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Duration, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { ConfigInvalidError } from '../../core/config/schema.ts';
import { ApprovalWorkflow } from '../../infra/lib/approval-workflow.ts';
import { AuditStore } from '../../infra/lib/audit-store.ts';
import { deploymentConfigFrom, loadDeploymentConfig } from '../../infra/lib/deployment-config.ts';
import { ExplicitRole } from '../../infra/lib/explicit-role.ts';
import { WardenKeys } from '../../infra/lib/keys.ts';
import { WardenNetwork } from '../../infra/lib/network.ts';
import { ProxyService, type ProxyServiceProps } from '../../infra/lib/proxy-service.ts';
import { SlackSecrets } from '../../infra/lib/slack-secrets.ts';
import { WardenAlarms } from '../../infra/lib/alarms.ts';
import { EXAMPLE_FILE, PROJECT_ROOT, exampleDocument } from './stack-fixture.ts';
import * as iam from 'aws-cdk-lib/aws-iam';

function problems(doc: unknown): { key: string; message: string }[] {
  try {
    deploymentConfigFrom(doc, 'warden.aws.yaml', PROJECT_ROOT);
  } catch (err) {
    assert.ok(err instanceof ConfigInvalidError, String(err));
    assert.match(err.message, /^warden\.aws\.yaml: invalid configuration\n {2}- /);
    return err.problems;
  }
  assert.fail('expected the configuration to be refused');
}

const variant = (change: (doc: Record<string, any>) => void): Record<string, any> => {
  const doc = exampleDocument();
  change(doc);
  return doc;
};

describe('the deployment configuration', () => {
  test('warden.aws.example.yaml is a valid deployment; the proxy gets everything but the aws section', () => {
    const d = loadDeploymentConfig(EXAMPLE_FILE);
    assert.equal(d.aws.stackName, 'Warden');
    assert.equal(d.config.targets.length, 2);
    assert.equal('aws' in d.proxyConfig, false);
    assert.equal(d.policyDir, join(PROJECT_ROOT, 'policies'));
    assert.ok(d.config.approvals.approvers.every((a) => a.slackUserId));
  });

  test('a configuration without the aws section is refused, naming the key', () => {
    assert.deepEqual(
      problems(
        variant((d) => {
          delete d.aws;
        }),
      ),
      [{ key: 'aws', message: 'is required to deploy to AWS (stackName, vpc, loadBalancer, proxy, audit, slack, ...); see warden.aws.example.yaml' }],
    );
  });

  test('a bad VPC CIDR is refused as aws.vpc.cidr, whether the schema or the deployment check catches it', () => {
    assert.deepEqual(problems(variant((d) => (d.aws.vpc.cidr = '10.40.0.0'))), [{ key: 'aws.vpc.cidr', message: 'must be an IPv4 CIDR such as 10.40.0.0/16' }]);
    assert.deepEqual(problems(variant((d) => (d.aws.vpc.cidr = '10.400.0.0/16'))), [{ key: 'aws.vpc.cidr', message: "'10.400.0.0/16' is not an IPv4 CIDR: each octet must be 0 to 255" }]);
    assert.deepEqual(problems(variant((d) => (d.aws.vpc.cidr = '10.0.0.0/8'))), [{ key: 'aws.vpc.cidr', message: "'10.0.0.0/8': the prefix length must be between /16 and /28" }]);
  });

  test('allowed client networks must be networks, and not the whole internet', () => {
    assert.deepEqual(problems(variant((d) => (d.aws.loadBalancer.allowedCidrs = ['10.1.2.3/16']))), [
      { key: 'aws.loadBalancer.allowedCidrs.0', message: "'10.1.2.3/16' has host bits set; the network is 10.1.0.0/16" },
    ]);
    const open = problems(variant((d) => (d.aws.loadBalancer = { internal: false, allowedCidrs: ['192.0.2.0/24', '0.0.0.0/0'] })));
    assert.equal(open.length, 1);
    assert.equal(open[0]!.key, 'aws.loadBalancer.allowedCidrs.1');
    assert.match(open[0]!.message, /whole internet/);
  });

  test('settings that validate but cannot work deployed are refused with the reason', () => {
    const found = problems(
      variant((d) => {
        d.listeners.postgres.host = '127.0.0.1';
        d.listeners.postgres.tls.mode = 'off';
        d.identity.devIssuer = { enabled: true };
        d.embedded = { demoDatabase: { enabled: true } };
        d.aws.logRetentionDays = 100;
        d.targets[0].credential = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf';
      }),
    );
    assert.deepEqual(
      found.map((p) => p.key),
      ['aws.logRetentionDays', 'listeners.postgres.host', 'listeners.postgres.tls.mode', 'identity.devIssuer.enabled', 'embedded.demoDatabase.enabled', 'targets.0.credential'],
    );
    assert.match(found[0]!.message, /one of 1, 3, 5, .*365, 400/);
    assert.match(found[1]!.message, /loopback address, which the load balancer cannot reach/);
    assert.match(found[5]!.message, /name, not its ARN/);
  });

  test('schema problems in the aws section name their key too', () => {
    assert.deepEqual(problems(variant((d) => (d.aws.proxy.drainSeconds = 300))), [{ key: 'aws.proxy.drainSeconds', message: 'must be at most 110' }]);
    assert.deepEqual(problems(variant((d) => (d.aws.proxy.maxCount = 1))), [{ key: 'aws.proxy.maxCount', message: 'must be at least proxy.desiredCount' }]);
  });

  test('a YAML syntax error names the line; an unreadable file says so', () => {
    const dir = mkdtempSync(join(tmpdir(), 'warden-infra-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'aws:\n  vpc: [unclosed\n');
    assert.throws(() => loadDeploymentConfig(file), (err: unknown) => err instanceof ConfigInvalidError && /bad\.yaml: invalid configuration\n {2}- line \d+, column \d+: /.test(err.message));
    assert.throws(() => loadDeploymentConfig(join(dir, 'missing.yaml')), /missing\.yaml: invalid configuration\n {2}- \(file\): cannot read the file: ENOENT/);
  });
});

describe('constructs refuse impossible props', () => {
  const scope = (): Stack => new Stack(new App(), 'T');

  const proxyProps = (stack: Stack, change: Partial<ProxyServiceProps>): ProxyServiceProps => {
    const vpc = new ec2.Vpc(stack, 'Vpc', { natGateways: 0, subnetConfiguration: [{ name: 'a', subnetType: ec2.SubnetType.PRIVATE_ISOLATED }] });
    return {
      vpc,
      taskSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      loadBalancerSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      image: ecs.ContainerImage.fromRegistry('example/proxy'),
      imageRepositoryArns: ['arn:aws:ecr:us-east-1:123456789012:repository/proxy'],
      taskRole: new ExplicitRole(stack, 'TaskRole', { assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'), description: 'test' }),
      environment: {},
      containerPort: 5432,
      allowedCidrs: ['10.0.0.0/8'],
      cpu: 1024,
      memoryMiB: 2048,
      desiredCount: 2,
      maxCount: 4,
      drainSeconds: 60,
      operationsKey: new kms.Key(stack, 'Key'),
      logRetention: logs.RetentionDays.ONE_YEAR,
      ...change,
    };
  };

  test('ProxyService: a Fargate size that does not exist, drain beyond the stop timeout, maxCount below desiredCount', () => {
    let stack = scope();
    assert.throws(() => new ProxyService(stack, 'P', proxyProps(stack, { cpu: 256, memoryMiB: 4096 })), /ProxyService: memoryMiB 4096 is not a Fargate size for cpu 256: use one of 512, 1024, 2048/);
    stack = scope();
    assert.throws(() => new ProxyService(stack, 'P', proxyProps(stack, { drainSeconds: 115 })), /drainSeconds must be 0 to 110: Fargate kills a task 120 s after SIGTERM/);
    stack = scope();
    assert.throws(() => new ProxyService(stack, 'P', proxyProps(stack, { desiredCount: 3, maxCount: 2, allowedCidrs: [] })), /maxCount \(2\) must be at least desiredCount \(3\); allowedCidrs must name at least one client network/);
  });

  test('WardenNetwork: more NAT gateways than zones', () => {
    const stack = scope();
    assert.throws(
      () => new WardenNetwork(stack, 'N', { cidr: '10.0.0.0/16', maxAzs: 2, natGateways: 3, logKey: new kms.Key(stack, 'K'), logRetention: logs.RetentionDays.ONE_YEAR }),
      /WardenNetwork: natGateways must be an integer from 0 to maxAzs \(2\), got 3/,
    );
  });

  test('AuditStore: Object Lock days outside 1 to 36500', () => {
    const stack = scope();
    assert.throws(() => new AuditStore(stack, 'A', { auditKey: new kms.Key(stack, 'K'), objectLockDays: 0 }), /AuditStore: objectLockDays must be a whole number of days from 1 to 36500, got 0/);
  });

  test('WardenKeys: a deletion window KMS does not allow', () => {
    assert.throws(() => new WardenKeys(scope(), 'K', { pendingWindow: Duration.days(3) }), /WardenKeys: pendingWindow must be 7 to 30 days, got 3/);
  });

  test('SlackSecrets: one name for both secrets', () => {
    const stack = scope();
    assert.throws(
      () => new SlackSecrets(stack, 'S', { signingSecretName: 'x', botTokenSecretName: 'x', secretsKey: new kms.Key(stack, 'K') }),
      /SlackSecrets: the signing secret and the bot token need different names, both are 'x'/,
    );
  });

  test('ApprovalWorkflow: a state machine name Step Functions refuses', () => {
    const stack = scope();
    assert.throws(
      () =>
        new ApprovalWorkflow(stack, 'W', {
          definitionFile: join(PROJECT_ROOT, 'statemachines/approval.asl.json'),
          stateMachineName: 'warden approval!',
          approvalRequest: undefined as never,
          approvalOutcome: undefined as never,
          deadLetterQueue: undefined as never,
          operationsKey: new kms.Key(stack, 'K'),
          logRetention: logs.RetentionDays.ONE_YEAR,
        }),
      /ApprovalWorkflow: stateMachineName must be 1 to 80 letters, digits, '-' or '_', got 'warden approval!'/,
    );
  });

  test('WardenAlarms: an alarm e-mail that is not an address', () => {
    assert.throws(() => new WardenAlarms(scope(), 'A', { alarmEmail: 'oncall', dashboardName: 'x' } as never), /WardenAlarms: alarmEmail must be an e-mail address, got 'oncall'/);
  });
});
