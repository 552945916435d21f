/**
 * The proxy: an ECS Fargate service running proxy-task/Dockerfile behind a Network Load Balancer.
 *
 * - The listener is TCP: PostgreSQL negotiates TLS inside its own protocol (SSLRequest, then the
 *   handshake), so the load balancer cannot terminate TLS and passes the bytes through; the proxy
 *   terminates TLS itself.
 * - Only `allowedCidrs` reach the listener (the load balancer's security group); the tasks accept the
 *   listener port only from the load balancer's security group, and client IPs are preserved for the
 *   audit trail.
 * - A stopping task is first deregistered (the load balancer sends it no new connections for
 *   `drainSeconds` while live sessions continue), then receives SIGTERM and drains for
 *   WARDEN_DRAIN_SECONDS (the same span), inside Fargate's 120-second stop timeout with 10 seconds left
 *   to seal the audit trail.
 * - Scaling follows CPU and connections per task (the load balancer's ActiveFlowCount over its healthy
 *   targets).
 * - The container runs as UID 1000 on a read-only root filesystem; its one writable path is a task
 *   volume at /tmp/warden (the image declares it).
 */
import { Duration, RemovalPolicy, Size, Stack, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ExplicitRole } from './explicit-role.ts';

/** Fargate stops a container with SIGKILL this long after SIGTERM, at most. */
export const FARGATE_MAX_STOP_TIMEOUT_SECONDS = 120;
/** Seconds kept after the drain for closing sessions and sealing the audit trail (schema: drainSeconds ≤ 110). */
export const SEAL_MARGIN_SECONDS = 10;
/** The writable task volume; proxy-task/Dockerfile declares it as a VOLUME owned by UID 1000. */
export const STATE_VOLUME_PATH = '/tmp/warden';

/**
 * How a stop is spent: the container gets `stopTimeoutSeconds` between SIGTERM and SIGKILL (at most
 * Fargate's 120), of which `afterSigtermSeconds` serve live sessions (WARDEN_DRAIN_SECONDS) and the rest
 * seals the audit trail. The load balancer's deregistration delay (also `drainSeconds`) comes first.
 */
export function drainPlan(drainSeconds: number): { stopTimeoutSeconds: number; afterSigtermSeconds: number } {
  const afterSigtermSeconds = Math.min(drainSeconds, FARGATE_MAX_STOP_TIMEOUT_SECONDS - SEAL_MARGIN_SECONDS);
  return { stopTimeoutSeconds: afterSigtermSeconds + SEAL_MARGIN_SECONDS, afterSigtermSeconds };
}

export interface ProxyServiceProps {
  readonly vpc: ec2.IVpc;
  /** Where the tasks run. */
  readonly taskSubnets: ec2.SubnetSelection;
  /** Where the load balancer's nodes live (public subnets when internet-facing). */
  readonly loadBalancerSubnets: ec2.SubnetSelection;
  /** The proxy image (proxy-task/Dockerfile). */
  readonly image: ecs.ContainerImage;
  /** Permissions of the running proxy; see WardenStack for what it holds. */
  readonly taskRole: ExplicitRole;
  /** ECR repositories the execution role may pull the image from (the asset repository). */
  readonly imageRepositoryArns: string[];
  /** Environment of the container (core/config/aws-environment.ts); WARDEN_DRAIN_SECONDS should be `drainPlan(drainSeconds).afterSigtermSeconds`. */
  readonly environment: Record<string, string>;
  /** The port the proxy listens on inside the task (`listeners.postgres.port`). */
  readonly containerPort: number;
  /**
   * The load balancer's listener port.
   * @default 5432
   */
  readonly listenerPort?: number;
  /**
   * Internal load balancer (reachable from the VPC and networks routed to it) or internet-facing.
   * @default true
   */
  readonly internal?: boolean;
  /** Client networks allowed to reach the listener. */
  readonly allowedCidrs: string[];
  /** Task size: vCPU units (256 = 0.25 vCPU) and memory. */
  readonly cpu: number;
  readonly memoryMiB: number;
  readonly desiredCount: number;
  readonly maxCount: number;
  /** Seconds a stopping task keeps serving live sessions: deregistration delay, then the SIGTERM drain. */
  readonly drainSeconds: number;
  /**
   * Target CPU utilisation (%) of the CPU scaling policy.
   * @default 60
   */
  readonly cpuTargetPercent?: number;
  /**
   * Target client connections per task of the connection scaling policy.
   * @default 200
   */
  readonly connectionsPerTask?: number;
  /**
   * CPU architecture of the tasks; the image is built for it.
   * @default ecs.CpuArchitecture.X86_64
   */
  readonly cpuArchitecture?: ecs.CpuArchitecture;
  /** Encrypts the container's log group. */
  readonly operationsKey: kms.IKey;
  readonly logRetention: logs.RetentionDays;
  /**
   * What happens to the log group when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

export class ProxyService extends Construct {
  public readonly cluster: ecs.Cluster;
  public readonly taskDefinition: ecs.FargateTaskDefinition;
  public readonly container: ecs.ContainerDefinition;
  public readonly service: ecs.FargateService;
  public readonly loadBalancer: elbv2.NetworkLoadBalancer;
  public readonly listener: elbv2.NetworkListener;
  public readonly targetGroup: elbv2.NetworkTargetGroup;
  public readonly loadBalancerSecurityGroup: ec2.SecurityGroup;
  public readonly taskSecurityGroup: ec2.SecurityGroup;
  public readonly logGroup: logs.LogGroup;
  public readonly executionRole: ExplicitRole;
  public readonly scalableTarget: appscaling.ScalableTarget;

  constructor(scope: Construct, id: string, props: ProxyServiceProps) {
    super(scope, id);
    validate(props);
    const stack = Stack.of(this);
    const listenerPort = props.listenerPort ?? 5432;
    const internal = props.internal ?? true;

    this.logGroup = new logs.LogGroup(this, 'Logs', {
      encryptionKey: props.operationsKey,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });

    this.executionRole = new ExplicitRole(this, 'ExecutionRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
      description: 'Warden proxy tasks: pull the image, write the container log',
      statements: [
        new iam.PolicyStatement({ sid: 'EcrLogin', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
        new iam.PolicyStatement({
          sid: 'PullTheImage',
          actions: ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'],
          resources: props.imageRepositoryArns,
        }),
        new iam.PolicyStatement({ sid: 'WriteContainerLogs', actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [this.logGroup.logGroupArn] }),
      ],
    });

    this.executionRole.acknowledgeWildcards({
      EcrLogin: 'ecr:GetAuthorizationToken has no resource-level permissions (AWS documents Resource "*"); the image pull itself is limited to the image repository.',
    });

    this.cluster = new ecs.Cluster(this, 'Cluster', { vpc: props.vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      cpu: props.cpu,
      memoryLimitMiB: props.memoryMiB,
      runtimePlatform: { cpuArchitecture: props.cpuArchitecture ?? ecs.CpuArchitecture.X86_64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
      taskRole: props.taskRole.immutableRole,
      executionRole: this.executionRole.immutableRole,
      volumes: [{ name: 'state' }],
    });

    const stopTimeout = drainPlan(props.drainSeconds).stopTimeoutSeconds;

    this.container = this.taskDefinition.addContainer('proxy', {
      image: props.image,
      essential: true,
      readonlyRootFilesystem: true,
      user: '1000:1000',
      environment: props.environment,
      portMappings: [{ containerPort: props.containerPort, protocol: ecs.Protocol.TCP, name: 'postgres' }],
      // Non-blocking with a buffer: a slow log pipe never stalls the data path.
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: 'proxy', mode: ecs.AwsLogDriverMode.NON_BLOCKING, maxBufferSize: Size.mebibytes(25) }),
      stopTimeout: Duration.seconds(stopTimeout),
      // The image's HEALTHCHECK, repeated (ECS does not read it): an SSLRequest answered 'S' or 'N'.
      healthCheck: {
        command: ['CMD', 'node', '/app/dist/proxy/healthcheck.mjs'],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod: Duration.seconds(30),
      },
    });
    this.container.addMountPoints({ containerPath: STATE_VOLUME_PATH, sourceVolume: 'state', readOnly: false });

    this.loadBalancerSecurityGroup = new ec2.SecurityGroup(this, 'LoadBalancerSecurityGroup', {
      vpc: props.vpc,
      description: `Warden load balancer: PostgreSQL ${listenerPort} from the allowed client networks`,
      allowAllOutbound: false,
    });
    for (const cidr of props.allowedCidrs) {
      this.loadBalancerSecurityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(listenerPort), `PostgreSQL clients in ${cidr}`);
    }
    this.taskSecurityGroup = new ec2.SecurityGroup(this, 'TaskSecurityGroup', {
      vpc: props.vpc,
      description: 'Warden proxy tasks: the listener from the load balancer only; out to endpoints, issuers and targets',
      // Targets and identity providers are wherever the configuration says (any port, any network the
      // VPC can route to); without a route nothing leaves, and the endpoints take the AWS calls.
      allowAllOutbound: true,
    });
    this.taskSecurityGroup.addIngressRule(this.loadBalancerSecurityGroup, ec2.Port.tcp(props.containerPort), 'PostgreSQL and health checks from the load balancer');
    this.loadBalancerSecurityGroup.addEgressRule(this.taskSecurityGroup, ec2.Port.tcp(props.containerPort), 'To the proxy tasks');

    this.loadBalancer = new elbv2.NetworkLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      internetFacing: !internal,
      vpcSubnets: props.loadBalancerSubnets,
      securityGroups: [this.loadBalancerSecurityGroup],
      crossZoneEnabled: true,
      deletionProtection: true,
    });

    this.service = new ecs.FargateService(this, 'Service', {
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: props.desiredCount,
      vpcSubnets: props.taskSubnets,
      securityGroups: [this.taskSecurityGroup],
      assignPublicIp: false,
      platformVersion: ecs.FargatePlatformVersion.LATEST,
      circuitBreaker: { enable: true, rollback: true },
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      healthCheckGracePeriod: Duration.seconds(60),
      enableExecuteCommand: false,
    });
    this.executionRole.requiredBy(this.service);
    props.taskRole.requiredBy(this.service);

    this.listener = this.loadBalancer.addListener('Postgres', { port: listenerPort, protocol: elbv2.Protocol.TCP });
    this.targetGroup = this.listener.addTargets('Proxy', {
      port: props.containerPort,
      protocol: elbv2.Protocol.TCP,
      targets: [this.service.loadBalancerTarget({ containerName: 'proxy', containerPort: props.containerPort })],
      deregistrationDelay: Duration.seconds(props.drainSeconds),
      preserveClientIp: true,
      healthCheck: {
        protocol: elbv2.Protocol.TCP,
        interval: Duration.seconds(10),
        healthyThresholdCount: 3,
        unhealthyThresholdCount: 3,
      },
    });

    this.scalableTarget = new appscaling.ScalableTarget(this, 'Scaling', {
      serviceNamespace: appscaling.ServiceNamespace.ECS,
      resourceId: `service/${this.cluster.clusterName}/${this.service.serviceName}`,
      scalableDimension: 'ecs:service:DesiredCount',
      minCapacity: props.desiredCount,
      maxCapacity: props.maxCount,
    });
    this.scalableTarget.node.addDependency(this.service);
    this.scalableTarget.scaleToTrackMetric('Cpu', {
      predefinedMetric: appscaling.PredefinedMetric.ECS_SERVICE_AVERAGE_CPU_UTILIZATION,
      targetValue: props.cpuTargetPercent ?? 60,
      // Sessions are long-lived: remove tasks slowly, each removal drains its sessions.
      scaleInCooldown: Duration.minutes(10),
      scaleOutCooldown: Duration.minutes(1),
    });
    // Connections per healthy task: metric math over the load balancer's metrics, which the L2 target
    // tracking policy cannot express (it takes one metric), hence the L1 resource.
    const nlbDimensions = [{ name: 'LoadBalancer', value: this.loadBalancer.loadBalancerFullName }];
    new appscaling.CfnScalingPolicy(this, 'ConnectionsPerTask', {
      policyName: `${stack.stackName}-proxy-connections-per-task`.slice(0, 256),
      policyType: 'TargetTrackingScaling',
      scalingTargetId: this.scalableTarget.scalableTargetId,
      targetTrackingScalingPolicyConfiguration: {
        targetValue: props.connectionsPerTask ?? 200,
        scaleInCooldown: 600,
        scaleOutCooldown: 60,
        customizedMetricSpecification: {
          metrics: [
            {
              id: 'flows',
              metricStat: { metric: { namespace: 'AWS/NetworkELB', metricName: 'ActiveFlowCount', dimensions: nlbDimensions }, stat: 'Average' },
              returnData: false,
            },
            {
              id: 'healthy',
              metricStat: {
                metric: {
                  namespace: 'AWS/NetworkELB',
                  metricName: 'HealthyHostCount',
                  dimensions: [...nlbDimensions, { name: 'TargetGroup', value: this.targetGroup.targetGroupFullName }],
                },
                stat: 'Minimum',
              },
              returnData: false,
            },
            // With no healthy task the quotient has no data point and this policy waits; the CPU policy and
            // the NoHealthyProxyTask alarm cover that case.
            { id: 'perTask', expression: 'flows / healthy', label: 'Connections per healthy task', returnData: true },
          ],
        },
      },
    });

    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The environment holds resource names and the non-secret proxy configuration (core/config/aws-environment.ts), nothing secret: the proxy reads target credentials from Secrets Manager at run time with its task role.',
    });
    const tcp = 'PostgreSQL negotiates TLS inside its own protocol (SSLRequest, then the handshake), so a TLS listener cannot terminate it: the listener is TCP and the proxy terminates TLS itself, refusing tokens in cleartext.';
    Validations.of(this.listener).acknowledge({ id: 'NIST.800.53.R5-ELBv2ACMCertificateRequired', reason: tcp });
    const accessLogs =
      'Network Load Balancer access logs are written only for TLS listeners; this TCP listener is logged by the VPC flow logs (every flow, accepted or rejected) and by the audit trail, which records every connection with its source address, identity and outcome.';
    Validations.of(this.loadBalancer).acknowledge({ id: 'AwsSolutions-ELB2', reason: accessLogs }, { id: 'NIST.800.53.R5-ELBLoggingEnabled', reason: accessLogs });
  }
}

/** Fargate's task sizes: memory (MiB) allowed per CPU value. @see https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size */
const FARGATE_MEMORY: Record<number, { min: number; max: number; step: number } | { values: number[] }> = {
  256: { values: [512, 1024, 2048] },
  512: { min: 1024, max: 4096, step: 1024 },
  1024: { min: 2048, max: 8192, step: 1024 },
  2048: { min: 4096, max: 16384, step: 1024 },
  4096: { min: 8192, max: 30720, step: 1024 },
};

function fargateMemoryProblem(cpu: number, memory: number): string | undefined {
  const allowed = FARGATE_MEMORY[cpu];
  if (!allowed) return `cpu must be one of ${Object.keys(FARGATE_MEMORY).join(', ')}, got ${cpu}`;
  if ('values' in allowed) {
    return allowed.values.includes(memory) ? undefined : `memoryMiB ${memory} is not a Fargate size for cpu ${cpu}: use one of ${allowed.values.join(', ')}`;
  }
  const ok = memory >= allowed.min && memory <= allowed.max && (memory - allowed.min) % allowed.step === 0;
  return ok ? undefined : `memoryMiB ${memory} is not a Fargate size for cpu ${cpu}: use ${allowed.min} to ${allowed.max} in steps of ${allowed.step}`;
}

function validate(p: ProxyServiceProps): void {
  const problems: string[] = [];
  if (p.desiredCount < 1) problems.push(`desiredCount must be at least 1, got ${p.desiredCount}`);
  if (p.maxCount < p.desiredCount) problems.push(`maxCount (${p.maxCount}) must be at least desiredCount (${p.desiredCount})`);
  const maxDrain = FARGATE_MAX_STOP_TIMEOUT_SECONDS - SEAL_MARGIN_SECONDS;
  if (p.drainSeconds < 0 || p.drainSeconds > maxDrain) {
    problems.push(`drainSeconds must be 0 to ${maxDrain}: Fargate kills a task ${FARGATE_MAX_STOP_TIMEOUT_SECONDS} s after SIGTERM and the seal needs ${SEAL_MARGIN_SECONDS}, got ${p.drainSeconds}`);
  }
  if (p.allowedCidrs.length === 0) problems.push('allowedCidrs must name at least one client network');
  if (p.containerPort < 1 || p.containerPort > 65535) problems.push(`containerPort must be 1 to 65535, got ${p.containerPort}`);
  const size = fargateMemoryProblem(p.cpu, p.memoryMiB);
  if (size) problems.push(size);
  if (problems.length > 0) throw new Error(`ProxyService: ${problems.join('; ')}`);
}
