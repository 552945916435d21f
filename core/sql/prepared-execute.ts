/**
 * What `EXECUTE name(args)` does: the statement that `PREPARE name AS ...` (or a protocol-level Parse of
 * that name) defined, plus whatever the argument expressions call. The classifier cannot see the
 * prepared statement from the EXECUTE's text; the session that saw the PREPARE can.
 */
import { RISK_ORDER, type StatementClass } from './classification.ts';

const resolved = new WeakMap<StatementClass, WeakMap<StatementClass, StatementClass>>();

/**
 * The EXECUTE judged as the prepared statement it runs. Functions in the arguments count, and make the
 * result not read-only (their side effects are not known from here).
 */
export function executeOfPrepared(execute: StatementClass, prepared: StatementClass): StatementClass {
  let byPrepared = resolved.get(execute);
  const hit = byPrepared?.get(prepared);
  if (hit) return hit;
  const union = <T extends string>(a: readonly T[], b: readonly T[]): T[] => [...new Set([...a, ...b])];
  const result: StatementClass = Object.freeze({
    operation: prepared.operation,
    command: prepared.command,
    readOnly: prepared.readOnly && execute.functions.length === 0 && execute.risks.length === 0,
    tables: Object.freeze(union(prepared.tables, execute.tables)),
    functions: Object.freeze(union(prepared.functions, execute.functions)),
    risks: Object.freeze(union(prepared.risks, execute.risks).sort((a, b) => (RISK_ORDER.get(a) ?? 0) - (RISK_ORDER.get(b) ?? 0))),
    nested: Object.freeze([prepared]),
    ...(execute.preparedName !== undefined ? { preparedName: execute.preparedName } : {}),
    location: execute.location,
    text: execute.text,
  });
  if (!byPrepared) resolved.set(execute, (byPrepared = new WeakMap()));
  byPrepared.set(prepared, result);
  return result;
}
