/**
 * The VPC of a deployment. Proxy tasks and the in-VPC function live in private isolated subnets: they
 * reach AWS APIs through VPC endpoints, so no NAT gateway and no internet route exists by default.
 * Public subnets exist only when the load balancer is internet-facing (they hold its nodes and nothing
 * else). Every flow is logged to an encrypted log group.
 *
 * What the tasks must reach that is not an AWS API — each identity provider's JWKS (for example
 * https://token.actions.githubusercontent.com/.well-known/jwks) and targets outside this VPC — needs a
 * route the operator provides: peering or a transit gateway to a network with egress, or `natGateways`.
 *
 * @see https://docs.aws.amazon.com/vpc/latest/privatelink/aws-services-privatelink-support.html
 */
import { RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ExplicitRole } from './explicit-role.ts';

export interface WardenNetworkProps {
  /** IPv4 CIDR of the VPC (/16 to /28). */
  readonly cidr: string;
  /** Availability zones to span (2 or 3); every subnet tier and interface endpoint exists once per zone. */
  readonly maxAzs: number;
  /**
   * Create public subnets for an internet-facing load balancer. Tasks never run in them.
   * @default false
   */
  readonly publicSubnets?: boolean;
  /**
   * NAT gateways giving the task subnets a route to the internet (identity providers' JWKS, targets
   * reached over the internet). Each one needs the public subnets, which are then created.
   * @default 0 — isolated subnets, AWS APIs through endpoints only
   */
  readonly natGateways?: number;
  /** Key of the flow log group. */
  readonly logKey: kms.IKey;
  /** Retention of the flow log group. */
  readonly logRetention: logs.RetentionDays;
  /**
   * What happens to the flow log group when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The interface endpoints: every AWS API the proxy tasks, the in-VPC function and Fargate itself call. */
export const INTERFACE_ENDPOINTS = {
  /** Image manifests (Fargate pulls the proxy image). */
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  /** Image layers' registry protocol; the layers themselves come from S3 (gateway endpoint). */
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  /** Target credentials. */
  SecretsManager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
  /** Seal signatures (Sign, GetPublicKey) and the vault's data keys. */
  Kms: ec2.InterfaceVpcEndpointAwsService.KMS,
  /** The awslogs driver. */
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
  /** The SDK's regional STS calls (credential refresh paths, GetCallerIdentity). */
  Sts: ec2.InterfaceVpcEndpointAwsService.STS,
  /** StartExecution / StopExecution / DescribeExecution of approvals. */
  StepFunctions: ec2.InterfaceVpcEndpointAwsService.STEP_FUNCTIONS,
  /** The policy decision function (connect decisions in `lambda` mode). */
  Lambda: ec2.InterfaceVpcEndpointAwsService.LAMBDA,
} as const;

export class WardenNetwork extends Construct {
  public readonly vpc: ec2.Vpc;
  /** Where the proxy tasks and the policy decision function run. */
  public readonly taskSubnets: ec2.SubnetSelection;
  /** Where the load balancer's nodes live: public subnets if internet-facing, else the task subnets. */
  public readonly loadBalancerSubnets: ec2.SubnetSelection;
  public readonly flowLogGroup: logs.LogGroup;
  public readonly interfaceEndpoints: Record<keyof typeof INTERFACE_ENDPOINTS, ec2.InterfaceVpcEndpoint>;
  /** Security group of the interface endpoints: HTTPS from inside the VPC only. */
  public readonly endpointSecurityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: WardenNetworkProps) {
    super(scope, id);
    const natGateways = props.natGateways ?? 0;
    if (!Number.isInteger(natGateways) || natGateways < 0 || natGateways > props.maxAzs) {
      throw new Error(`WardenNetwork: natGateways must be an integer from 0 to maxAzs (${props.maxAzs}), got ${natGateways}`);
    }
    if (props.maxAzs < 2 || props.maxAzs > 3) throw new Error(`WardenNetwork: maxAzs must be 2 or 3, got ${props.maxAzs}`);
    const publicSubnets = (props.publicSubnets ?? false) || natGateways > 0;
    const taskSubnetType = natGateways > 0 ? ec2.SubnetType.PRIVATE_WITH_EGRESS : ec2.SubnetType.PRIVATE_ISOLATED;

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(props.cidr),
      maxAzs: props.maxAzs,
      natGateways,
      // Only the subnets named here: no default public tier unless asked for.
      subnetConfiguration: [
        { name: 'tasks', subnetType: taskSubnetType },
        ...(publicSubnets ? [{ name: 'ingress', subnetType: ec2.SubnetType.PUBLIC, mapPublicIpOnLaunch: false }] : []),
      ],
      // Removes every rule of the default security group (nothing may use it by accident).
      restrictDefaultSecurityGroup: true,
      gatewayEndpoints: {
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
        DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
      },
    });
    this.taskSubnets = { subnetType: taskSubnetType };
    for (const subnet of this.vpc.publicSubnets) {
      Validations.of(subnet).acknowledge({
        id: 'NIST.800.53.R5-VPCNoUnrestrictedRouteToIGW',
        reason:
          'A public subnet exists only for an internet-facing load balancer (or the NAT gateways asked for); its route to the internet gateway is what makes it public. Nothing else runs there: tasks and functions use the private subnets, whose routes have no internet gateway, and the load balancer admits only aws.loadBalancer.allowedCidrs.',
      });
    }
    this.loadBalancerSubnets = props.publicSubnets ? { subnetType: ec2.SubnetType.PUBLIC } : this.taskSubnets;

    this.flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      encryptionKey: props.logKey,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    const account = Stack.of(this).account;
    const flowLogRole = new ExplicitRole(this, 'FlowLogRole', {
      // The confused-deputy guard AWS documents for the flow logs service.
      assumedBy: new iam.ServicePrincipal('vpc-flow-logs.amazonaws.com').withConditions({ StringEquals: { 'aws:SourceAccount': account } }),
      description: 'Delivers the Warden VPC flow logs to their log group',
      statements: [
        new iam.PolicyStatement({
          sid: 'DeliverFlowLogs',
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
          resources: [this.flowLogGroup.logGroupArn],
        }),
      ],
    });
    const flowLog = this.vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(this.flowLogGroup, flowLogRole.immutableRole),
      trafficType: ec2.FlowLogTrafficType.ALL,
    });
    flowLogRole.requiredBy(flowLog);

    this.endpointSecurityGroup = new ec2.SecurityGroup(this, 'EndpointSecurityGroup', {
      vpc: this.vpc,
      description: 'Warden interface endpoints: HTTPS from the VPC',
      allowAllOutbound: false,
    });
    // The configured CIDR rather than the VPC's attribute: the same value, and one a reviewer (and cdk-nag) can read.
    this.endpointSecurityGroup.addIngressRule(ec2.Peer.ipv4(props.cidr), ec2.Port.tcp(443), 'HTTPS from the VPC');

    const endpoints = {} as Record<keyof typeof INTERFACE_ENDPOINTS, ec2.InterfaceVpcEndpoint>;
    for (const [name, service] of Object.entries(INTERFACE_ENDPOINTS) as [keyof typeof INTERFACE_ENDPOINTS, ec2.InterfaceVpcEndpointAwsService][]) {
      endpoints[name] = this.vpc.addInterfaceEndpoint(name, {
        service,
        subnets: this.taskSubnets,
        securityGroups: [this.endpointSecurityGroup],
        privateDnsEnabled: true,
        open: false,
      });
    }
    this.interfaceEndpoints = endpoints;
  }
}
