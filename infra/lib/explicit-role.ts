/**
 * An IAM role whose permissions are exactly the statements written for it, in one customer-managed
 * policy.
 *
 * Why not the role CDK constructs create on their own: their grants land in inline policies (which NIST
 * 800-53 AC-6 checks flag), and a construct may add permissions nobody wrote down here. Other
 * constructs receive `immutableRole`, so whatever they would grant on their own is dropped and the
 * policy below is the whole story; the tests assert it statement by statement.
 */
import { Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference.js';
import { Construct, type IConstruct } from 'constructs';

export interface ExplicitRoleProps {
  /** Who assumes the role (a service principal, or an account for a role people assume). */
  readonly assumedBy: iam.IPrincipal;
  /** What the role is for; shown in the IAM console. */
  readonly description: string;
  /** The role's permissions; more can be added with `allow`. At least one is needed before synthesis. */
  readonly statements?: iam.PolicyStatement[];
}

export class ExplicitRole extends Construct {
  public readonly role: iam.Role;
  /** The one policy attached to the role. */
  public readonly policy: iam.ManagedPolicy;
  /** The role as handed to other constructs: grants they would add themselves are dropped. */
  public readonly immutableRole: iam.IRole;

  constructor(scope: Construct, id: string, props: ExplicitRoleProps) {
    super(scope, id);
    this.role = new iam.Role(this, 'Role', { assumedBy: props.assumedBy, description: props.description });
    this.policy = new iam.ManagedPolicy(this, 'Policy', { description: props.description, roles: [this.role], statements: props.statements ?? [] });
    this.immutableRole = this.role.withoutPolicyUpdates();
  }

  /** Adds statements to the role's policy. */
  public allow(...statements: iam.PolicyStatement[]): void {
    this.policy.addStatements(...statements);
  }

  /**
   * Acknowledges cdk-nag's wildcard findings (AwsSolutions-IAM5) statement by statement: every wildcard
   * resource or action of the statement with sid `s` is acknowledged with `reasons[s]`, exactly as cdk-nag
   * names the finding. A wildcard in a statement without a reason stays a finding. Call it once all
   * statements are in.
   */
  public acknowledgeWildcards(reasons: Record<string, string>): void {
    type Statement = { Sid?: string; Effect: string; Action: string | string[]; Resource: unknown };
    const doc = Stack.of(this).resolve(this.policy.document.toJSON()) as { Statement: Statement[] };
    const list = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);
    for (const st of doc.Statement) {
      const reason = st.Sid !== undefined ? reasons[st.Sid] : undefined;
      if (st.Effect !== 'Allow' || reason === undefined) continue;
      const findings = [
        ...list(st.Action).filter((a) => a.includes('*')).map((a) => `Action::${a}`),
        ...list(st.Resource).map((r) => flattenCfnReference(r)).filter((r) => r.includes('*')).map((r) => `Resource::${r}`),
      ];
      for (const f of findings) Validations.of(this.policy).acknowledge({ id: `AwsSolutions-IAM5[${f}]`, reason });
    }
  }

  /** Makes `resource` wait until the policy is attached (services that check their role's permissions when created). */
  public requiredBy(...resources: IConstruct[]): void {
    for (const r of resources) r.node.addDependency(this.policy);
  }
}
