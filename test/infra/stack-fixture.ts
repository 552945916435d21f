/**
 * Builds the Warden stack for template tests: the example configuration (or a variant of it), the
 * context of cdk.json (the same feature flags as `cdk synth`), and the functions' code replaced by
 * inline stand-ins (bundling is proved once, in app.test.ts, through the real app).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { App, CfnElement, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { AwsSolutionsChecks, NIST80053R5Checks } from 'cdk-nag';
import { parseDocument } from 'yaml';
import { deploymentConfigFrom, type DeploymentConfig } from '../../infra/lib/deployment-config.ts';
import { WardenStack, type WardenStackProps } from '../../infra/lib/warden-stack.ts';

export const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const EXAMPLE_FILE = join(PROJECT_ROOT, 'warden.aws.example.yaml');
export const CDK_CONTEXT: Record<string, unknown> = (JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> }).context;

/** The example configuration as a plain object, to derive variants from. */
export function exampleDocument(): Record<string, any> {
  return parseDocument(readFileSync(EXAMPLE_FILE, 'utf8')).toJS() as Record<string, any>;
}

export interface Synthesized {
  app: App;
  stack: WardenStack;
  template: Template;
  deployment: DeploymentConfig;
}

export function synthesize(options: { doc?: unknown; stack?: Partial<Omit<WardenStackProps, 'deployment' | 'projectRoot'>> } = {}): Synthesized {
  const deployment = deploymentConfigFrom(options.doc ?? exampleDocument(), EXAMPLE_FILE, PROJECT_ROOT);
  const app = new App({ context: CDK_CONTEXT });
  const stack = new WardenStack(app, deployment.aws.stackName, { deployment, projectRoot: PROJECT_ROOT, bundleFunctions: false, ...options.stack });
  return { app, stack, template: Template.fromStack(stack), deployment };
}

/** Unacknowledged findings of both cdk-nag packs, as `<severity> <rule> <construct path>`. */
export function nagFindings(app: App): string[] {
  const findings: string[] = [];
  for (const pack of [new AwsSolutionsChecks(), new NIST80053R5Checks()]) {
    for (const v of pack.validateScope(app).violations) {
      for (const r of v.violatingResources) findings.push(`${v.severity} ${v.ruleName} ${r.constructPath ?? '?'}`);
    }
  }
  return findings;
}

export function logicalId(construct: IConstruct): string {
  const el = (construct.node.defaultChild ?? construct) as CfnElement;
  return Stack.of(construct).getLogicalId(el);
}

export interface Statement {
  Sid?: string;
  Effect: 'Allow' | 'Deny';
  Action: string[];
  Resource: unknown[];
  Condition?: unknown;
  Principal?: unknown;
}

const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function normalize(s: Record<string, any>): Statement {
  return {
    ...(s.Sid !== undefined ? { Sid: s.Sid } : {}),
    Effect: s.Effect,
    Action: list<string>(s.Action).slice().sort(),
    Resource: list(s.Resource),
    ...(s.Condition !== undefined ? { Condition: s.Condition } : {}),
    ...(s.Principal !== undefined ? { Principal: s.Principal } : {}),
  };
}

/** Every identity-policy statement that applies to the role: managed and inline policies attached to it, and its own inline policies. */
export function roleStatements(template: Template, roleLogicalId: string): Statement[] {
  const out: Statement[] = [];
  const resources = template.toJSON().Resources as Record<string, { Type: string; Properties?: any }>;
  const ref = (v: unknown): boolean => JSON.stringify(v) === JSON.stringify({ Ref: roleLogicalId });
  for (const [id, r] of Object.entries(resources)) {
    const p = r.Properties ?? {};
    if ((r.Type === 'AWS::IAM::ManagedPolicy' || r.Type === 'AWS::IAM::Policy') && list(p.Roles).some(ref)) {
      out.push(...list<Record<string, any>>(p.PolicyDocument.Statement).map(normalize));
    }
    if (r.Type === 'AWS::IAM::Role' && id === roleLogicalId) {
      for (const pol of list<any>(p.Policies)) out.push(...list<Record<string, any>>(pol.PolicyDocument.Statement).map(normalize));
      if (list(p.ManagedPolicyArns).some((a) => JSON.stringify(a).includes('arn:'))) throw new Error(`role ${id} has an AWS managed policy`);
    }
  }
  return out;
}

/** All identity-policy statements of the template with the logical ids of the roles they apply to. */
export function allIdentityStatements(template: Template): { roles: string[]; statement: Statement }[] {
  const out: { roles: string[]; statement: Statement }[] = [];
  const resources = template.toJSON().Resources as Record<string, { Type: string; Properties?: any }>;
  for (const [id, r] of Object.entries(resources)) {
    const p = r.Properties ?? {};
    if (r.Type === 'AWS::IAM::ManagedPolicy' || r.Type === 'AWS::IAM::Policy') {
      const roles = list<any>(p.Roles).map((x) => x.Ref as string);
      for (const s of list<Record<string, any>>(p.PolicyDocument.Statement)) out.push({ roles, statement: normalize(s) });
    }
    if (r.Type === 'AWS::IAM::Role') {
      for (const pol of list<any>(p.Policies)) for (const s of list<Record<string, any>>(pol.PolicyDocument.Statement)) out.push({ roles: [id], statement: normalize(s) });
    }
  }
  return out;
}

/** The key policy statements of a KMS key. */
export function keyStatements(template: Template, keyLogicalId: string): Statement[] {
  const key = (template.toJSON().Resources as Record<string, any>)[keyLogicalId];
  return list<Record<string, any>>(key.Properties.KeyPolicy.Statement).map(normalize);
}

export function resourcesOfType(template: Template, type: string): [string, any][] {
  return Object.entries(template.findResources(type));
}
