/**
 * The approval state machine (statemachines/approval.asl.json, a Standard workflow: the wait for a human
 * may last days) and the EventBridge rule that closes a request whose execution was stopped.
 *
 * The state machine has a fixed name, so its ARN is known before it exists: the functions that complete
 * its tasks are granted SendTaskSuccess/Failure on it while it invokes them, without a dependency cycle.
 * Execution history is logged (ALL events, without execution data: the statement text stays in the audit
 * trail, not in the logs) and traced with X-Ray.
 *
 * @see statemachines/README.md
 */
import { ArnFormat, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ExplicitRole } from './explicit-role.ts';

export interface ApprovalWorkflowProps {
  /** Path of the Amazon States Language definition. */
  readonly definitionFile: string;
  /** The state machine's name (unique in the account and region). */
  readonly stateMachineName: string;
  /** `${ApprovalRequestFunctionArn}`: the `.waitForTaskToken` task. */
  readonly approvalRequest: lambda.IFunction;
  /** `${ApprovalOutcomeFunctionArn}`: RecordOutcome, and the target of the ABORTED rule. */
  readonly approvalOutcome: lambda.IFunction;
  /** Where EventBridge puts ABORTED events it could not deliver. */
  readonly deadLetterQueue: sqs.IQueue;
  /** Encrypts the execution log group. */
  readonly operationsKey: kms.IKey;
  readonly logRetention: logs.RetentionDays;
  /**
   * What happens to the log group when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** ARN of a state machine named `name` in the stack's account and region. */
export function stateMachineArnOf(scope: Construct, name: string): string {
  return Stack.of(scope).formatArn({ service: 'states', resource: 'stateMachine', resourceName: name, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
}

/** ARNs of every execution of the state machine named `name` (what StopExecution and DescribeExecution take). */
export function executionArnsOf(scope: Construct, name: string): string {
  return Stack.of(scope).formatArn({ service: 'states', resource: 'execution', resourceName: `${name}:*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
}

export class ApprovalWorkflow extends Construct {
  public readonly stateMachine: sfn.StateMachine;
  public readonly logGroup: logs.LogGroup;
  /** ABORTED executions → approval-outcome (the request closes as withdrawn). */
  public readonly abortedRule: events.Rule;
  public readonly role: ExplicitRole;

  constructor(scope: Construct, id: string, props: ApprovalWorkflowProps) {
    super(scope, id);
    if (!/^[A-Za-z0-9_-]{1,80}$/.test(props.stateMachineName)) {
      throw new Error(`ApprovalWorkflow: stateMachineName must be 1 to 80 letters, digits, '-' or '_', got '${props.stateMachineName}'`);
    }
    this.logGroup = new logs.LogGroup(this, 'ExecutionLogs', {
      // Step Functions delivers to log groups whose name starts with /aws/vendedlogs/ without a resource policy size problem.
      logGroupName: `/aws/vendedlogs/states/${props.stateMachineName}`,
      encryptionKey: props.operationsKey,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });

    this.role = new ExplicitRole(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('states.amazonaws.com'),
      description: 'Warden approval state machine',
      statements: [
        new iam.PolicyStatement({
          sid: 'InvokeTheApprovalFunctions',
          actions: ['lambda:InvokeFunction'],
          resources: [props.approvalRequest.functionArn, props.approvalOutcome.functionArn],
        }),
        // CloudWatch Logs delivery and X-Ray have no resource-level permissions for these actions.
        new iam.PolicyStatement({
          sid: 'DeliverExecutionLogs',
          actions: [
            'logs:CreateLogDelivery',
            'logs:GetLogDelivery',
            'logs:UpdateLogDelivery',
            'logs:DeleteLogDelivery',
            'logs:ListLogDeliveries',
            'logs:PutResourcePolicy',
            'logs:DescribeResourcePolicies',
            'logs:DescribeLogGroups',
          ],
          resources: ['*'],
        }),
        new iam.PolicyStatement({
          sid: 'Trace',
          actions: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords', 'xray:GetSamplingRules', 'xray:GetSamplingTargets'],
          resources: ['*'],
        }),
      ],
    });

    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName: props.stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromFile(props.definitionFile),
      definitionSubstitutions: {
        ApprovalRequestFunctionArn: props.approvalRequest.functionArn,
        ApprovalOutcomeFunctionArn: props.approvalOutcome.functionArn,
      },
      role: this.role.immutableRole,
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });
    // Step Functions checks that its role may deliver the logs when the state machine is created.
    this.role.requiredBy(this.stateMachine);

    this.abortedRule = new events.Rule(this, 'AbortedExecutions', {
      description: 'Warden: an approval execution was stopped (the proxy withdrew the request); close the request as withdrawn',
      eventPattern: {
        source: ['aws.states'],
        detailType: ['Step Functions Execution Status Change'],
        detail: { status: ['ABORTED'], stateMachineArn: [this.stateMachine.stateMachineArn] },
      },
      targets: [new targets.LambdaFunction(props.approvalOutcome, { deadLetterQueue: props.deadLetterQueue, retryAttempts: 8 })],
    });

    this.role.acknowledgeWildcards({
      DeliverExecutionLogs:
        'CloudWatch Logs delivery for Step Functions (CreateLogDelivery, PutResourcePolicy, DescribeLogGroups, ...) has no resource-level permissions: AWS documents Resource "*" for these actions.',
      Trace: 'X-Ray PutTraceSegments, PutTelemetryRecords and the sampling calls have no resource-level permissions: AWS documents Resource "*" for them.',
    });
  }
}
