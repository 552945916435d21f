/**
 * The policy compiler: a valid set gets the ids from `@id` and a stable version; every kind of mistake
 * is reported with the file, the line and Cedar's own message, and nothing half-valid is returned.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPolicyDirectory } from '../../../../adapters/local/policy-files.ts';
import {
  compilePolicySet,
  formatProblem,
  PolicySetInvalidError,
  type PolicyFile,
  type PolicyProblem,
} from '../../../../core/policy/policy-set.ts';

const REPO_POLICIES = new URL('../../../../policies/', import.meta.url);
const SCHEMA: PolicyFile = { name: 'policies/warden.cedarschema', text: readFileSync(new URL('warden.cedarschema', REPO_POLICIES), 'utf8') };

const CONNECT: PolicyFile = {
  name: 'policies/a-connect.cedar',
  text: ['// who may connect', '@id("connect.readers")', '@description("readers connect")', 'permit (principal in Warden::Group::"readers", action == Warden::Action::"connect", resource);', ''].join('\n'),
};

/** A second file whose policy starts on line 3 and whose problem is on `problemLine`. */
function secondFile(body: string): PolicyFile {
  return { name: 'policies/b-more.cedar', text: `// more\n\n${body}\n` };
}

function problemsOf(policies: PolicyFile[], schema: PolicyFile = SCHEMA): readonly PolicyProblem[] {
  try {
    compilePolicySet({ schema, policies });
  } catch (err) {
    assert.ok(err instanceof PolicySetInvalidError, `expected PolicySetInvalidError, got ${String(err)}`);
    assert.ok(err.problems.length > 0);
    // The message lists every problem the way `warden policy validate` prints it.
    for (const p of err.problems) assert.ok(err.message.includes(formatProblem(p)));
    return err.problems;
  }
  assert.fail('the policy set compiled but should not have');
}

function onlyProblem(policies: PolicyFile[], schema: PolicyFile = SCHEMA): PolicyProblem {
  const problems = problemsOf(policies, schema);
  assert.equal(problems.length, 1, problems.map(formatProblem).join('\n'));
  return problems[0]!;
}

describe('compilePolicySet', () => {
  it('compiles a valid set with the ids given by @id, and where each policy is', () => {
    const set = compilePolicySet({
      schema: SCHEMA,
      policies: [
        CONNECT,
        secondFile('@id("sql.read.all")\npermit (principal, action == Warden::Action::"sql.read", resource)\nwhen { context.readOnly };'),
      ],
    });
    assert.deepEqual([...set.policies.keys()].sort(), ['connect.readers', 'sql.read.all']);
    const read = set.policies.get('sql.read.all')!;
    assert.equal(read.effect, 'permit');
    assert.equal(read.file, 'policies/b-more.cedar');
    assert.equal(read.line, 3);
    assert.equal(set.policies.get('connect.readers')!.line, 2);
    assert.equal(set.policies.get('connect.readers')!.annotations.description, 'readers connect');
    assert.deepEqual(Object.keys(set.staticPolicies).sort(), ['connect.readers', 'sql.read.all']);
    assert.match(set.version, /^cedar:[0-9a-f]{16}$/);
  });

  it('reads the approval annotations of a permit that holds `when { context.approved }`', () => {
    const set = compilePolicySet({
      schema: SCHEMA,
      policies: [
        CONNECT,
        secondFile(
          '@id("ddl.held")\n@approvers("schema-owners, dbas")\n@approvals("2")\n@reason("needs two")\npermit (principal, action == Warden::Action::"sql.ddl", resource) when { context.approved };',
        ),
      ],
    });
    const held = set.policies.get('ddl.held')!;
    assert.deepEqual(held.approvers, ['schema-owners', 'dbas']);
    assert.equal(held.approvals, 2);
    assert.equal(set.policies.get('connect.readers')!.approvals, 0);
  });

  it('compiles the shipped default set', () => {
    const set = compilePolicySet(readPolicyDirectory(REPO_POLICIES.pathname));
    for (const id of ['connect.warden-groups', 'sql.read.readers', 'sql.write.production-approval', 'guard.drop']) assert.ok(set.policies.has(id), id);
  });

  describe('reports each problem with its file, line and Cedar message', () => {
    it('a syntax error on line N of the second file', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\npermit (principal, action == Warden::Action::"connect", resource)\nwhen { context.approved && };')]);
      assert.equal(p.file, 'policies/b-more.cedar');
      assert.equal(p.line, 5);
      assert.equal(p.column, 28);
      assert.match(p.message, /unexpected token `}`/);
      assert.match(formatProblem(p), /^policies\/b-more\.cedar:5:28: unexpected token/);
    });

    it('a typo in a context attribute, caught by strict validation against the schema', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\npermit (principal, action == Warden::Action::"sql.read", resource)\nwhen { context.readonly };')]);
      assert.equal(p.file, 'policies/b-more.cedar');
      assert.equal(p.line, 5);
      assert.equal(p.policyId, 'b.one');
      assert.match(p.message, /attribute `readonly` in context .* not found; did you mean `readOnly`\?/);
    });

    it('an action the schema does not declare', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\npermit (principal, action == Warden::Action::"sql.reed", resource);')]);
      assert.equal(p.file, 'policies/b-more.cedar');
      assert.equal(p.line, 4);
      assert.equal(p.policyId, 'b.one');
      assert.match(p.message, /unrecognized action `Warden::Action::"sql\.reed"`; did you mean `Warden::Action::"sql\.read"`\?/);
    });

    it('a duplicate @id, naming where the first one is', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("connect.readers")\npermit (principal, action == Warden::Action::"connect", resource);')]);
      assert.equal(p.file, 'policies/b-more.cedar');
      assert.equal(p.line, 3);
      assert.match(p.message, /duplicate policy id \(first at policies\/a-connect\.cedar:2\)/);
    });

    it('@approvals that is not a whole number', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\n@approvers("db-approvers")\n@approvals("two")\npermit (principal, action == Warden::Action::"sql.write", resource) when { context.approved };')]);
      assert.equal(p.file, 'policies/b-more.cedar');
      assert.equal(p.line, 3);
      assert.match(p.message, /@approvals must be a whole number from 1 to 99, not "two"/);
    });

    it('@approvals without @approvers', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\n@approvals("2")\npermit (principal, action == Warden::Action::"sql.write", resource) when { context.approved };')]);
      assert.equal(p.line, 3);
      assert.match(p.message, /@approvals needs @approvers/);
    });

    it('@approvers on a forbid (a forbid cannot be approved)', () => {
      const p = onlyProblem([CONNECT, secondFile('@id("b.one")\n@approvers("db-approvers")\nforbid (principal, action == Warden::Action::"sql.write", resource);')]);
      assert.match(p.message, /@approvers belongs on the permit/);
    });

    it('every problem of the set, not only the first', () => {
      const problems = problemsOf([
        { ...CONNECT, text: CONNECT.text.replace('permit (', 'permit ((') },
        secondFile('@id("b.one")\n@approvals("x")\npermit (principal, action == Warden::Action::"connect", resource);'),
      ]);
      assert.deepEqual(problems.map((p) => p.file).sort(), ['policies/a-connect.cedar', 'policies/b-more.cedar', 'policies/b-more.cedar']);
    });

    it('a schema that does not parse, at its line', () => {
      const bad = { name: 'policies/warden.cedarschema', text: SCHEMA.text.replace('entity Group;', 'entity Group') };
      const p = onlyProblem([CONNECT], bad);
      assert.equal(p.file, 'policies/warden.cedarschema');
      // Cedar stops at the token after the missing `;`: the next declaration.
      assert.equal(p.line, SCHEMA.text.slice(0, SCHEMA.text.indexOf('entity Agent')).split('\n').length);
      assert.match(p.message, /unexpected token `entity`/);
    });

    it('an empty set (every request would be denied)', () => {
      const p = onlyProblem([]);
      assert.match(p.message, /no policies/);
    });
  });

  describe('version', () => {
    const base = [CONNECT, secondFile('@id("b.one")\npermit (principal, action == Warden::Action::"sql.read", resource) when { context.readOnly };')];

    it('changes when any policy text or the schema changes, even by a comment', () => {
      const v = compilePolicySet({ schema: SCHEMA, policies: base }).version;
      const edited = [base[0]!, { ...base[1]!, text: base[1]!.text + '// reviewed\n' }];
      assert.notEqual(compilePolicySet({ schema: SCHEMA, policies: edited }).version, v);
      const firstEdited = [{ ...base[0]!, text: base[0]!.text.replace('readers connect', 'readers may connect') }, base[1]!];
      assert.notEqual(compilePolicySet({ schema: SCHEMA, policies: firstEdited }).version, v);
      assert.notEqual(compilePolicySet({ schema: { ...SCHEMA, text: SCHEMA.text + '\n' }, policies: base }).version, v);
    });

    it('does not depend on the order the files were read in, nor on the folder they were read from', () => {
      const v = compilePolicySet({ schema: SCHEMA, policies: base }).version;
      assert.equal(compilePolicySet({ schema: SCHEMA, policies: [...base].reverse() }).version, v);
      const elsewhere = base.map((f) => ({ ...f, name: f.name.replace('policies/', '/srv/warden/policies/') }));
      assert.equal(compilePolicySet({ schema: { ...SCHEMA, name: 'x/warden.cedarschema' }, policies: elsewhere }).version, v);
    });
  });
});

describe('readPolicyDirectory', () => {
  const folder = (files: Record<string, string>): string => {
    const dir = mkdtempSync(join(tmpdir(), 'warden-policies-'));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  };
  const refused = (dir: string): PolicyProblem => {
    try {
      readPolicyDirectory(dir);
    } catch (err) {
      assert.ok(err instanceof PolicySetInvalidError);
      assert.equal(err.problems.length, 1);
      return err.problems[0]!;
    }
    assert.fail('the folder was accepted');
  };

  it('refuses a folder without a *.cedarschema file', () => {
    assert.match(refused(folder({ 'a.cedar': CONNECT.text })).message, /expected exactly one \*\.cedarschema file, found 0/);
  });

  it('refuses a folder with two schemas', () => {
    const p = refused(folder({ 'a.cedarschema': SCHEMA.text, 'b.cedarschema': SCHEMA.text, 'a.cedar': CONNECT.text }));
    assert.match(p.message, /expected exactly one \*\.cedarschema file, found 2/);
  });

  it('refuses a folder that cannot be read', () => {
    assert.match(refused(join(tmpdir(), 'warden-no-such-folder-', String(process.pid))).message, /cannot read the policy folder: ENOENT/);
  });

  it('reads the schema and only the *.cedar files', () => {
    const dir = folder({ 'warden.cedarschema': SCHEMA.text, 'a.cedar': CONNECT.text, 'README.md': '# not a policy', 'a.cedar.bak': 'garbage' });
    const source = readPolicyDirectory(dir);
    assert.match(source.schema.name, /warden\.cedarschema$/);
    assert.deepEqual(source.policies.map((f) => f.name.slice(f.name.lastIndexOf('/') + 1)), ['a.cedar']);
    assert.deepEqual([...compilePolicySet(source).policies.keys()], ['connect.readers']);
  });
});
