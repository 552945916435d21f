/**
 * Alarms, their notification topic and a dashboard.
 *
 * | alarm | fires when | from |
 * |---|---|---|
 * | ProxyErrors | the proxy logged errors | metric filter `level = "error"` on the proxy's JSON log |
 * | AuditWriteFailures | an audit write failed (the session was ended: fail closed) | metric filter on the proxy's `audit…` error lines |
 * | ApprovalFailedClosed | the approval workflow failed and the request was denied for it | metric filter on approval-outcome's `failed` outcomes |
 * | ApprovalTimedOut | an approval execution timed out | the state machine's ExecutionsTimedOut |
 * | UnhealthyProxyTasks | a task failed the load balancer's health check | UnHealthyHostCount |
 * | NoHealthyProxyTask | no task can take connections | HealthyHostCount below 1 (missing data breaches) |
 * | ApprovalOutcomeDeadLetters | an ABORTED event could not be recorded | the dead-letter queue's visible messages |
 *
 * Why not the state machine's ExecutionsFailed: every denial, expiry and withdrawal ends the execution
 * in a Fail state by design (statemachines/README.md), so that metric counts normal refusals; the
 * `failed` outcome is the one that means the workflow itself broke.
 */
import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import { Construct } from 'constructs';

/** Namespace of the metrics the metric filters publish. */
export const METRIC_NAMESPACE = 'Warden';

export interface WardenAlarmsProps {
  /** The proxy container's log group (JSON lines: `level`, `msg`). */
  readonly proxyLogGroup: logs.ILogGroup;
  /** approval-outcome's log group (Powertools JSON: `message`, `outcome`). */
  readonly approvalOutcomeLogGroup: logs.ILogGroup;
  readonly stateMachine: sfn.IStateMachine;
  readonly loadBalancer: elbv2.NetworkLoadBalancer;
  readonly targetGroup: elbv2.NetworkTargetGroup;
  readonly service: ecs.FargateService;
  readonly deadLetterQueue: sqs.IQueue;
  /** Functions shown on the dashboard. */
  readonly functions: lambda.IFunction[];
  /** Encrypts the topic. */
  readonly operationsKey: kms.IKey;
  /**
   * E-mail address subscribed to the topic (the recipient confirms the subscription once).
   * @default no subscription
   */
  readonly alarmEmail?: string;
  /** The dashboard's name. */
  readonly dashboardName: string;
}

export class WardenAlarms extends Construct {
  public readonly topic: sns.Topic;
  public readonly alarms: Record<
    'proxyErrors' | 'auditWriteFailures' | 'approvalFailedClosed' | 'approvalTimedOut' | 'unhealthyProxyTasks' | 'noHealthyProxyTask' | 'approvalOutcomeDeadLetters',
    cloudwatch.Alarm
  >;
  public readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: WardenAlarmsProps) {
    super(scope, id);
    if (props.alarmEmail !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(props.alarmEmail)) {
      throw new Error(`WardenAlarms: alarmEmail must be an e-mail address, got '${props.alarmEmail}'`);
    }
    this.topic = new sns.Topic(this, 'Topic', { displayName: 'Warden alarms', masterKey: props.operationsKey, enforceSSL: true });
    // The topic has a policy of its own (TLS only), so CloudWatch's right to publish is stated, for this
    // account's alarms only.
    const stack = Stack.of(this);
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsOfThisAccountPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
        },
      }),
    );
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));

    const filter = (id: string, logGroup: logs.ILogGroup, pattern: logs.IFilterPattern, metricName: string): cloudwatch.Metric =>
      new logs.MetricFilter(this, id, { logGroup, filterPattern: pattern, metricNamespace: METRIC_NAMESPACE, metricName, metricValue: '1', defaultValue: 0 }).metric({
        statistic: 'Sum',
        period: Duration.minutes(1),
      });
    const proxyErrors = filter('ProxyErrorLines', props.proxyLogGroup, logs.FilterPattern.stringValue('$.level', '=', 'error'), 'ProxyErrors');
    const auditFailures = filter(
      'AuditFailureLines',
      props.proxyLogGroup,
      logs.FilterPattern.all(logs.FilterPattern.stringValue('$.level', '=', 'error'), logs.FilterPattern.stringValue('$.msg', '=', 'audit*')),
      'AuditWriteFailures',
    );
    const failedClosed = filter(
      'ApprovalFailedClosedLines',
      props.approvalOutcomeLogGroup,
      logs.FilterPattern.all(logs.FilterPattern.stringValue('$.message', '=', 'approval outcome recorded'), logs.FilterPattern.stringValue('$.outcome', '=', 'failed')),
      'ApprovalFailedClosed',
    );
    const nlb = { LoadBalancer: props.loadBalancer.loadBalancerFullName, TargetGroup: props.targetGroup.targetGroupFullName };
    const unhealthy = new cloudwatch.Metric({ namespace: 'AWS/NetworkELB', metricName: 'UnHealthyHostCount', dimensionsMap: nlb, statistic: 'Maximum', period: Duration.minutes(1) });
    const healthy = new cloudwatch.Metric({ namespace: 'AWS/NetworkELB', metricName: 'HealthyHostCount', dimensionsMap: nlb, statistic: 'Minimum', period: Duration.minutes(1) });
    const timedOut = props.stateMachine.metricTimedOut({ period: Duration.minutes(5), statistic: 'Sum' });

    const alarm = (id: string, metric: cloudwatch.IMetric, description: string, o: { threshold?: number; periods?: number; below?: boolean; missing?: cloudwatch.TreatMissingData } = {}): cloudwatch.Alarm => {
      const a = new cloudwatch.Alarm(this, id, {
        alarmDescription: description,
        metric,
        threshold: o.threshold ?? 1,
        evaluationPeriods: o.periods ?? 1,
        comparisonOperator: o.below ? cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD : cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: o.missing ?? cloudwatch.TreatMissingData.NOT_BREACHING,
        actionsEnabled: true,
      });
      a.addAlarmAction(new actions.SnsAction(this.topic));
      a.addOkAction(new actions.SnsAction(this.topic));
      return a;
    };
    this.alarms = {
      proxyErrors: alarm('ProxyErrors', proxyErrors, 'Warden proxy logged errors (see the proxy log group).', { threshold: 5 }),
      auditWriteFailures: alarm('AuditWriteFailures', auditFailures, 'Warden could not write the audit trail; the affected sessions were ended (fail closed).'),
      approvalFailedClosed: alarm('ApprovalFailedClosed', failedClosed, 'The approval workflow failed and requests were denied because of it (not a human denial).'),
      approvalTimedOut: alarm('ApprovalTimedOut', timedOut, 'An approval execution timed out.'),
      unhealthyProxyTasks: alarm('UnhealthyProxyTasks', unhealthy, 'A proxy task fails the load balancer health check.', { periods: 3 }),
      noHealthyProxyTask: alarm('NoHealthyProxyTask', healthy, 'No proxy task can take connections.', { below: true, periods: 2, missing: cloudwatch.TreatMissingData.BREACHING }),
      approvalOutcomeDeadLetters: alarm(
        'ApprovalOutcomeDeadLetters',
        props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
        'An approval outcome (a withdrawn request) could not be recorded; see the dead-letter queue.',
      ),
    };

    const lb = props.loadBalancer.loadBalancerFullName;
    const nlbMetric = (metricName: string, statistic = 'Sum'): cloudwatch.Metric =>
      new cloudwatch.Metric({ namespace: 'AWS/NetworkELB', metricName, dimensionsMap: { LoadBalancer: lb }, statistic, period: Duration.minutes(1) });
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.dashboardName,
      widgets: [
        [
          new cloudwatch.GraphWidget({ title: 'Connections', left: [nlbMetric('ActiveFlowCount', 'Average'), nlbMetric('NewFlowCount')], width: 8 }),
          new cloudwatch.GraphWidget({ title: 'Proxy tasks', left: [healthy, unhealthy], width: 8 }),
          new cloudwatch.GraphWidget({ title: 'Proxy CPU and memory (%)', left: [props.service.metricCpuUtilization(), props.service.metricMemoryUtilization()], width: 8 }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Proxy errors and audit write failures', left: [proxyErrors, auditFailures], width: 8 }),
          new cloudwatch.GraphWidget({
            title: 'Approvals',
            left: [props.stateMachine.metricStarted(), props.stateMachine.metricSucceeded(), props.stateMachine.metricFailed(), props.stateMachine.metricAborted(), timedOut, failedClosed],
            width: 8,
          }),
          new cloudwatch.GraphWidget({ title: 'Functions: errors', left: props.functions.map((f) => f.metricErrors()), width: 8 }),
        ],
        [new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: Object.values(this.alarms), width: 24 })],
      ],
    });
  }
}
