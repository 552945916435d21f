/**
 * `warden policy validate|explain`: check a Cedar policy folder before it ships, and show how the policy
 * set decides a connection or a statement and why.
 *
 * `explain` runs the same classifier and the same CedarDecider as the gateway (without its cache), so
 * what it prints is what the gateway would decide for that principal, target and text.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { basename, relative, resolve, sep } from 'node:path';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { loadPolicyDirectory, readPolicyDirectory } from '../../adapters/local/policy-files.ts';
import { ConfigInvalidError } from '../../core/config/schema.ts';
import type { Principal } from '../../core/identity/principal.ts';
import { CedarDecider, type Evaluation, type Explanation } from '../../core/policy/cedar-decider.ts';
import { Effect, type Decision, type TargetRef } from '../../core/policy/decision.ts';
import { compilePolicySet, formatProblem, PolicySetInvalidError, type CompiledPolicySet } from '../../core/policy/policy-set.ts';
import { classifySql, initSqlParser, type StatementClass } from '../../core/sql/classify.ts';
import type { AuditedClassification } from '../../core/audit/statement-record.ts';

export class PolicyCliError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PolicyCliError';
  }
}

const ENVIRONMENTS = ['development', 'staging', 'production'] as const;
/** Used when neither --issuer nor a configured issuer names one; policies that test the issuer see it. */
const PLACEHOLDER_ISSUER = 'https://issuer.invalid';

const EFFECT_LABEL: Readonly<Record<Effect, string>> = { allow: 'ALLOW', deny: 'DENY', approval: 'HOLD FOR APPROVAL' };

export function registerPolicyCommands(program: Command, getConfig: () => LoadedConfig): Command {
  const policy = program.command('policy').description('validate the Cedar policy set, and explain how it decides a connection or a statement');

  policy
    .command('validate')
    .description('parse the schema and the policies and validate them in strict mode (exit code 1 on any problem)')
    .option('--dir <folder>', 'policy folder with one *.cedarschema and the *.cedar files (default: policy.dir of the configuration)')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExample:\n  npx warden policy validate --dir policies')
    .action((o: { dir?: string; json?: boolean }) => {
      const dir = o.dir ?? configFor(getConfig, 'give the policy folder with --dir <folder> to validate without a configuration file').policyDir;
      let set: CompiledPolicySet;
      let schema: string;
      try {
        const source = readPolicyDirectory(dir);
        schema = basename(source.schema.name);
        set = compilePolicySet(source);
      } catch (err) {
        if (!(err instanceof PolicySetInvalidError)) throw err;
        if (o.json) out(JSON.stringify({ valid: false, dir: showDir(dir), problems: err.problems }, null, 2));
        else {
          for (const p of err.problems) out(formatProblem(p));
          out(`${showDir(dir)}: ${err.problems.length} ${plural(err.problems.length, 'problem')}; the policy set is not valid`);
        }
        process.exitCode = 1;
        return;
      }
      if (o.json) {
        out(JSON.stringify({ valid: true, dir: showDir(dir), schema, policies: [...set.policies.keys()], version: set.version }, null, 2));
        return;
      }
      out(`${showDir(dir)} : ${set.policies.size} ${plural(set.policies.size, 'policy', 'policies')} valid against ${schema} (strict), version ${set.version}`);
    });

  policy
    .command('explain')
    .description('show how the policy set decides a statement (or a connection) for an agent on a target, and why')
    .requiredOption('--sub <agent>', "the agent's identity (token subject)")
    .option('--groups <a,b>', 'comma-separated groups the agent belongs to', '')
    .option('--issuer <url>', "the token's issuer (default: the configured development issuer, else the first configured issuer)")
    .requiredOption('--target <name>', 'the target, as named in the configuration')
    .addOption(new Option('--environment <env>', "the target's environment (default: the configured target's)").choices(ENVIRONMENTS))
    .addOption(new Option('--sql <statement>', 'SQL text to explain; every statement in it is decided on its own').conflicts('connect'))
    .addOption(new Option('--connect', 'explain the decision to open a session instead of a statement').conflicts('sql'))
    .option('--dir <folder>', 'policy folder (default: policy.dir of the configuration)')
    .option('--json', 'print the explanation as JSON')
    .addHelpText(
      'after',
      '\nThe exit code is 0 whatever the decision; it is non-zero only when the request cannot be explained.\n\nExample:\n  npx warden policy explain --sub ci-bot --groups writers --target demo --environment production \\\n    --sql "DELETE FROM customers WHERE id = 1"',
    )
    .action(async (o: ExplainOptions) => {
      if (o.sql === undefined && !o.connect) throw new PolicyCliError('give the statement to explain with --sql "<text>", or --connect');
      const config = needsConfig(o) ? configFor(getConfig, 'give --dir <folder> and --environment <env> to explain without a configuration file') : undefined;
      const target = targetOf(o, config);
      const principal = principalOf(o, config);
      const dir = o.dir ?? config!.policyDir;
      const set = loadPolicyDirectory(dir);
      const decider = new CedarDecider(set, { cacheEntries: 0 });
      const report = o.connect ? explainConnect(decider, set, principal, target) : await explainSql(decider, set, principal, target, o.sql!);
      const full: ExplainReport = { policyDir: showDir(dir), ...report };
      out(o.json ? JSON.stringify(full, null, 2) : formatReport(full));
    });

  return policy;
}

interface ExplainOptions {
  sub: string;
  groups: string;
  issuer?: string;
  target: string;
  environment?: (typeof ENVIRONMENTS)[number];
  sql?: string;
  connect?: boolean;
  dir?: string;
  json?: boolean;
}

/** What `explain` prints (and, with --json, its exact shape). */
interface ExplainReport {
  policyDir: string;
  policyVersion: string;
  principal: { issuer: string; subject: string; groups: string[] };
  target: TargetRef;
  request: 'connect' | 'sql';
  sql?: string;
  parseError?: { message: string; cursorPosition?: number };
  explanations: ExplainedRequest[];
  /** The Query's decision: the first statement that is not allowed decides it (the gateway stops there). */
  overall: { effect: Effect; decision: string; statement?: number };
}

interface ExplainedRequest {
  /** 1-based position of the statement in the text (absent for connect). */
  statement?: number;
  text?: string;
  classification?: ClassificationView;
  action: string;
  effect: Effect;
  decision: string;
  reason?: string;
  approval?: { approvers: readonly string[]; approvals: number };
  policies: PolicyView[];
  evaluations: EvaluationView[];
}

/** The classification as the audit trail records it, with the nested statements always listed and the text. */
interface ClassificationView extends Omit<AuditedClassification, 'nested'> {
  nested: ClassificationView[];
  text?: string;
}

interface PolicyView {
  id: string;
  effect?: 'permit' | 'forbid';
  file?: string;
  line?: number;
  description?: string;
}

interface EvaluationView {
  asIfApproved: boolean;
  decision: 'allow' | 'deny';
  determining: readonly string[];
  errors: readonly string[];
}

/** The configuration, or an error that also says how to do without one. */
function configFor(getConfig: () => LoadedConfig, hint: string): LoadedConfig {
  try {
    return getConfig();
  } catch (err) {
    if (err instanceof ConfigInvalidError) throw new PolicyCliError(`${err.message}\n${hint}`, { cause: err });
    throw err;
  }
}

/** The config is needed for the policy folder (no --dir) and for the target's environment (no --environment). */
function needsConfig(o: ExplainOptions): boolean {
  return o.dir === undefined || o.environment === undefined;
}

function targetOf(o: ExplainOptions, config: LoadedConfig | undefined): TargetRef {
  if (o.environment) return { name: o.target, kind: 'postgres', environment: o.environment };
  const targets = config!.config.targets;
  const t = targets.find((x) => x.name === o.target);
  if (!t) {
    const known = targets.length > 0 ? targets.map((x) => `${x.name} (${x.environment})`).join(', ') : 'none';
    throw new PolicyCliError(`unknown target '${o.target}' in ${config!.file}; known targets: ${known}; or give --environment`);
  }
  return { name: t.name, kind: 'postgres', environment: t.environment };
}

function principalOf(o: ExplainOptions, config: LoadedConfig | undefined): Principal {
  const groups = [...new Set(o.groups.split(',').map((g) => g.trim()).filter(Boolean))];
  const issuer = o.issuer ?? defaultIssuer(config);
  return { issuer, subject: o.sub, groups, username: o.sub, claims: { iss: issuer, sub: o.sub, groups } };
}

function defaultIssuer(config: LoadedConfig | undefined): string {
  const identity = config?.config.identity;
  if (identity?.devIssuer.enabled) return `http://${identity.devIssuer.host}:${identity.devIssuer.port}`;
  return identity?.issuers[0]?.issuer ?? PLACEHOLDER_ISSUER;
}

type ReportBody = Omit<ExplainReport, 'policyDir'>;

function explainConnect(decider: CedarDecider, set: CompiledPolicySet, principal: Principal, target: TargetRef): ReportBody {
  const e = explained(set, decider.explainConnect(principal, target));
  return { ...head(set, principal, target), request: 'connect', explanations: [e], overall: { effect: e.effect, decision: e.decision } };
}

async function explainSql(decider: CedarDecider, set: CompiledPolicySet, principal: Principal, target: TargetRef, sql: string): Promise<ReportBody> {
  await initSqlParser();
  const c = classifySql(sql);
  const explanations = c.statements.map((s, i) => ({ statement: i + 1, text: s.text, classification: classificationView(s, false), ...explained(set, decider.explainStatement(principal, target, s)) }));
  const first = explanations.find((e) => e.effect !== Effect.allow);
  const overall = first ? { effect: first.effect, decision: first.decision, statement: first.statement } : { effect: Effect.allow, decision: EFFECT_LABEL.allow };
  return {
    ...head(set, principal, target),
    request: 'sql',
    sql,
    ...(c.parseError ? { parseError: { ...c.parseError } } : {}),
    explanations,
    overall,
  };
}

function head(set: CompiledPolicySet, p: Principal, target: TargetRef): Pick<ReportBody, 'policyVersion' | 'principal' | 'target'> {
  return { policyVersion: set.version, principal: { issuer: p.issuer, subject: p.subject, groups: p.groups }, target };
}

function explained(set: CompiledPolicySet, x: Explanation): Omit<ExplainedRequest, 'statement' | 'text' | 'classification'> {
  const d: Decision = x.decision;
  return {
    action: `Warden::Action::"${x.action}"`,
    effect: d.effect,
    decision: EFFECT_LABEL[d.effect],
    ...(d.reason ? { reason: d.reason } : {}),
    ...(d.approval ? { approval: { approvers: d.approval.approvers, approvals: d.approval.approvals } } : {}),
    policies: d.policies.map((id) => policyView(set, id)),
    evaluations: x.evaluations.map(evaluationView),
  };
}

function policyView(set: CompiledPolicySet, id: string): PolicyView {
  const p = set.policies.get(id);
  if (!p) return { id };
  const description = p.annotations.description ?? p.annotations.reason;
  return { id, effect: p.effect, file: p.file, line: p.line, ...(description ? { description } : {}) };
}

function evaluationView(e: Evaluation): EvaluationView {
  return { asIfApproved: e.approved, decision: e.decision, determining: e.determining, errors: e.errors };
}

function classificationView(s: StatementClass, withText: boolean): ClassificationView {
  return {
    operation: s.operation,
    command: s.command,
    readOnly: s.readOnly,
    tables: s.tables,
    functions: s.functions,
    risks: s.risks,
    ...(s.preparedName !== undefined ? { preparedName: s.preparedName } : {}),
    nested: s.nested.map((n) => classificationView(n, true)),
    ...(withText ? { text: s.text } : {}),
  };
}

// --- text output ------------------------------------------------------------------------------

function formatReport(r: ExplainReport): string {
  const lines: string[] = [];
  const groups = r.principal.groups.length > 0 ? r.principal.groups.join(', ') : '(none)';
  lines.push(`agent     ${r.principal.subject}  (issuer ${r.principal.issuer}; groups: ${groups})`);
  lines.push(`target    ${r.target.name}  (${r.target.kind}, ${r.target.environment})`);
  lines.push(`policy    ${r.policyDir}  (version ${r.policyVersion})`);
  if (r.parseError) lines.push(`parse error: ${r.parseError.message}${r.parseError.cursorPosition !== undefined ? ` (at offset ${r.parseError.cursorPosition})` : ''}`);
  if (r.request === 'sql' && r.explanations.length === 0) lines.push('', 'the text holds no statement (empty, or only comments)');
  for (const e of r.explanations) {
    lines.push('');
    if (e.statement !== undefined) lines.push(`statement ${e.statement} of ${r.explanations.length}: ${oneLine(e.text ?? '')}`);
    else lines.push('connect');
    if (e.classification) lines.push(...formatClassification(e.classification, '  '));
    lines.push(`  action          ${e.action}`);
    lines.push(`  decision        ${e.decision}`);
    if (e.reason) lines.push(`  reason          ${e.reason}`);
    if (e.approval) lines.push(`  approval        ${e.approval.approvals} ${plural(e.approval.approvals, 'approval')} from ${e.approval.approvers.join(' or ')}`);
    if (e.policies.length === 0) {
      const failed = e.evaluations.some((ev) => ev.errors.length > 0);
      lines.push(`  decided by      no policy: ${failed ? 'a policy failed to evaluate, so it is denied (fail closed)' : 'nothing permits it, so it is denied'}`);
    }
    e.policies.forEach((p, i) => {
      const where = p.file ? `${p.file}:${p.line}` : '(unknown)';
      lines.push(`  ${i === 0 ? 'decided by' : '          '}      ${p.id} (${p.effect ?? '?'})  ${where}`);
      if (p.description) lines.push(`                    ${p.description}`);
    });
    lines.push(`  evaluations`);
    for (const ev of e.evaluations) {
      const label = ev.asIfApproved ? 'as if approved' : 'as is';
      const by = ev.determining.length > 0 ? ev.determining.join(', ') : ev.decision === 'deny' ? '(no permit matched)' : '-';
      lines.push(`    ${label.padEnd(16)}${ev.decision.padEnd(7)}${by}`);
      for (const err of ev.errors) lines.push(`    ${''.padEnd(16)}error: ${err}`);
    }
  }
  lines.push('');
  const at = r.overall.statement !== undefined && r.explanations.length > 1 ? ` (statement ${r.overall.statement})` : '';
  lines.push(`overall   ${r.overall.decision}${at}`);
  lines.push(`version   ${r.policyVersion}`);
  return lines.join('\n');
}

function formatClassification(c: ClassificationView, indent: string): string[] {
  const list = (xs: readonly string[]): string => (xs.length > 0 ? xs.join(', ') : '-');
  const lines = [
    `${indent}operation       ${c.operation} (${c.command})${c.preparedName !== undefined ? `, prepared statement "${c.preparedName}"` : ''}`,
    `${indent}read-only       ${c.readOnly ? 'yes' : 'no'}`,
    `${indent}tables          ${list(c.tables)}`,
    `${indent}functions       ${list(c.functions)}`,
    `${indent}risks           ${list(c.risks)}`,
  ];
  if (c.nested.length === 0) lines.push(`${indent}nested          -`);
  c.nested.forEach((n, i) => {
    lines.push(`${indent}nested ${i + 1}        ${oneLine(n.text ?? '')}`);
    lines.push(...formatClassification(n, `${indent}  `));
  });
  return lines;
}

function oneLine(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
}

/** The folder as the operator would type it: relative to the working directory when inside it, with a trailing slash. */
function showDir(dir: string): string {
  const abs = resolve(dir);
  const rel = relative(process.cwd(), abs);
  const shown = rel === '' ? '.' : rel.startsWith('..') ? abs : rel;
  return shown.endsWith(sep) ? shown : shown + sep;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return n === 1 ? one : many;
}

function out(text: string): void {
  process.stdout.write(text + '\n');
}
