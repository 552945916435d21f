/**
 * PolicySource on the local disk: one folder holding exactly one Cedar schema (`*.cedarschema`) and the
 * policies (`*.cedar`). The same folder ships with the deployed stack as an asset.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { compilePolicySet, PolicySetInvalidError, type CompiledPolicySet, type PolicyFile, type PolicySource } from '../../core/policy/policy-set.ts';

export function readPolicyDirectory(dir: string): PolicySource {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (err) {
    throw new PolicySetInvalidError([{ file: displayName(dir), line: 1, column: 1, message: `cannot read the policy folder: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  const read = (n: string): PolicyFile => ({ name: displayName(join(dir, n)), text: readFileSync(join(dir, n), 'utf8') });
  const schemas = names.filter((n) => n.endsWith('.cedarschema'));
  if (schemas.length !== 1) {
    throw new PolicySetInvalidError([{ file: displayName(dir), line: 1, column: 1, message: `expected exactly one *.cedarschema file, found ${schemas.length}` }]);
  }
  return { schema: read(schemas[0]!), policies: names.filter((n) => n.endsWith('.cedar')).map(read) };
}

/** Reads and compiles the folder; throws PolicySetInvalidError with file, line and Cedar's message. */
export function loadPolicyDirectory(dir: string): CompiledPolicySet {
  return compilePolicySet(readPolicyDirectory(dir));
}

function displayName(path: string): string {
  const r = relative(process.cwd(), path);
  return r && !r.startsWith('..') ? r : path;
}
