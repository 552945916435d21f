/**
 * Compiles Warden's Cedar policy files: parses every file, gives each policy its id, validates the set
 * against the schema in strict mode and fingerprints it. Any problem is reported with the file, the line
 * and Cedar's own message, and nothing half-valid is ever returned: start-up stops instead.
 *
 * @see https://docs.cedarpolicy.com/policies/validation.html
 */
import { createHash } from 'node:crypto';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';

export interface PolicyFile {
  /** How the file is named in messages (a path relative to the working directory, or a bare name). */
  readonly name: string;
  readonly text: string;
}

export interface PolicySource {
  readonly schema: PolicyFile;
  readonly policies: readonly PolicyFile[];
}

/** One policy of the set, with where it came from and what its annotations ask for. */
export interface CompiledPolicy {
  readonly id: string;
  readonly effect: 'permit' | 'forbid';
  readonly file: string;
  readonly line: number;
  readonly text: string;
  readonly annotations: Readonly<Record<string, string>>;
  /** From `@approvers("a, b")`: groups whose members may approve what this policy holds. */
  readonly approvers: readonly string[];
  /** From `@approvals("2")`: approvals needed (default 1 when approvers are named). */
  readonly approvals: number;
}

export interface CompiledPolicySet {
  /** `cedar:` + the first 16 hex digits of a SHA-256 over the schema and every policy file. */
  readonly version: string;
  readonly schemaText: string;
  readonly policies: ReadonlyMap<string, CompiledPolicy>;
  /** The policies as Cedar takes them: `{ id: text }`, so Cedar reports our ids back. */
  readonly staticPolicies: Readonly<Record<string, string>>;
}

export interface PolicyProblem {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly message: string;
  readonly policyId?: string;
}

export class PolicySetInvalidError extends Error {
  constructor(readonly problems: readonly PolicyProblem[]) {
    super(`invalid policy set:\n${problems.map(formatProblem).join('\n')}`);
    this.name = 'PolicySetInvalidError';
  }
}

export function formatProblem(p: PolicyProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.policyId ? `policy ${p.policyId}: ` : ''}${p.message}`;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** Parses, names and validates the policy files; throws PolicySetInvalidError listing every problem. */
export function compilePolicySet(source: PolicySource): CompiledPolicySet {
  const problems: PolicyProblem[] = [];
  const schemaText = source.schema.text;
  const schemaCheck = cedar.checkParseSchema(schemaText);
  if (schemaCheck.type === 'failure') {
    for (const e of schemaCheck.errors) problems.push(problemAt(source.schema, 0, e));
    throw new PolicySetInvalidError(problems);
  }

  const policies = new Map<string, CompiledPolicy>();
  const located = new Map<string, { file: PolicyFile; offset: number }>();
  for (const file of [...source.policies].sort((a, b) => a.name.localeCompare(b.name))) {
    const parts = cedar.policySetTextToParts(file.text);
    if (parts.type === 'failure') {
      for (const e of parts.errors) problems.push(problemAt(file, 0, e));
      continue;
    }
    if (parts.policy_templates.length > 0) {
      problems.push({ file: file.name, line: 1, column: 1, message: 'policy templates are not supported; write static policies' });
    }
    let cursor = 0;
    for (const text of parts.policies) {
      const found = file.text.indexOf(text, cursor);
      const offset = found >= 0 ? found : cursor;
      cursor = found >= 0 ? found + text.length : cursor;
      const json = cedar.policyToJson(text);
      if (json.type === 'failure') {
        for (const e of json.errors) problems.push(problemAt(file, offset, e));
        continue;
      }
      const annotations: Record<string, string> = { ...(json.json.annotations ?? {}) };
      const { line, column } = lineAndColumn(file.text, offset);
      const id = annotations.id ?? `${baseName(file.name)}:${line}`;
      const at = { file: file.name, line, column, policyId: id };
      if (!ID_PATTERN.test(id)) problems.push({ ...at, message: `@id must be 1-128 letters, digits, '.', '_', ':' or '-'` });
      if (policies.has(id)) {
        const first = policies.get(id)!;
        problems.push({ ...at, message: `duplicate policy id (first at ${first.file}:${first.line})` });
        continue;
      }
      const approvers = (annotations.approvers ?? '').split(',').map((g) => g.trim()).filter(Boolean);
      let approvals = approvers.length > 0 ? 1 : 0;
      if (annotations.approvals !== undefined) {
        approvals = /^[1-9][0-9]?$/.test(annotations.approvals) ? Number(annotations.approvals) : NaN;
        if (Number.isNaN(approvals)) problems.push({ ...at, message: `@approvals must be a whole number from 1 to 99, not "${annotations.approvals}"` });
        if (approvers.length === 0) problems.push({ ...at, message: '@approvals needs @approvers naming the group that approves' });
      }
      if (approvers.length > 0 && json.json.effect === 'forbid') problems.push({ ...at, message: '@approvers belongs on the permit that holds `when { context.approved }`, not on a forbid' });
      policies.set(id, { id, effect: json.json.effect, file: file.name, line, text, annotations, approvers, approvals });
      located.set(id, { file, offset });
    }
  }
  if (policies.size === 0 && problems.length === 0) problems.push({ file: source.schema.name, line: 1, column: 1, message: 'no policies: every request would be denied' });
  if (problems.length > 0) throw new PolicySetInvalidError(problems);

  const staticPolicies = Object.fromEntries([...policies.values()].map((p) => [p.id, p.text]));
  const validation = cedar.validate({ schema: schemaText, policies: { staticPolicies }, validationSettings: { mode: 'strict' } });
  if (validation.type === 'failure') {
    for (const e of validation.errors) problems.push(problemAt(source.schema, 0, e));
  } else {
    for (const v of validation.validationErrors) {
      const where = located.get(v.policyId);
      problems.push(where ? { ...problemAt(where.file, where.offset, v.error), policyId: v.policyId } : { file: '(policy set)', line: 1, column: 1, message: v.error.message, policyId: v.policyId });
    }
  }
  if (problems.length > 0) throw new PolicySetInvalidError(problems);

  return { version: versionOf(source), schemaText, policies, staticPolicies };
}

/** A stable fingerprint of the schema and the policy files, whatever order they were read in. */
export function versionOf(source: PolicySource): string {
  const h = createHash('sha256');
  h.update(`schema\0${source.schema.text}\0`);
  for (const f of [...source.policies].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) h.update(`${baseName(f.name)}\0${f.text}\0`);
  return `cedar:${h.digest('hex').slice(0, 16)}`;
}

function problemAt(file: PolicyFile, offset: number, e: cedar.DetailedError): PolicyProblem {
  const loc = e.sourceLocations?.[0];
  const { line, column } = lineAndColumn(file.text, offset + (loc?.start ?? 0));
  const label = loc?.label ? ` (${loc.label})` : '';
  const help = e.help ? `; ${e.help}` : '';
  return { file: file.name, line, column, message: `${e.message}${label}${help}` };
}

function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

function baseName(name: string): string {
  const i = name.lastIndexOf('/');
  return i >= 0 ? name.slice(i + 1) : name;
}
