/**
 * Classifies SQL text statement by statement with the real PostgreSQL parser, so the policy engine can
 * decide on what a statement does rather than on what it looks like.
 *
 * One parse, one walk of the whole tree: a write hidden in a CTE, a subquery, a COPY or an EXPLAIN ANALYZE
 * counts for the statement that holds it. What cannot be seen from the text is not claimed: user-defined
 * functions, triggers, rules and column defaults may write when a "read" runs. `readOnly` therefore only
 * decides how durably the audit record is written before the statement goes on; the policy decides on
 * `operation` and `risks`.
 *
 * This module is the public API and its result cache. The vocabulary (operations, risks, result shapes)
 * is in `classification.ts`; the walk in `statement-visitor.ts` and `classifier.ts`; what each function
 * and statement type implies in `function-catalogue.ts` and `statement-catalogue.ts`.
 */
import { RiskFlag, RISK_ORDER, type SqlClassification, type StatementClass } from './classification.ts';
import { Classifier } from './classifier.ts';
import { hasAmbiguousLiteral } from './literal-ambiguity.ts';
import { isSqlParserReady } from './parser.ts';
import { isObj, OffsetMap } from './walk.ts';

export { initSqlParser } from './parser.ts';
export { operationRank, RiskFlag, SqlOperation, type SqlClassification, type StatementClass } from './classification.ts';

const R = RiskFlag;

const CACHE_MAX_ENTRIES = 2000;
const CACHE_MAX_KEY_CHARS = 8192; // long texts are rarely repeated; keeps the cache's memory bounded
const cache = new Map<string, SqlClassification>();

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

function unionRisks(statements: readonly StatementClass[]): RiskFlag[] {
  const set = new Set<RiskFlag>();
  for (const s of statements) for (const r of s.risks) set.add(r);
  if (statements.length > 1) set.add(R.multi_statement);
  return [...set].sort((a, b) => (RISK_ORDER.get(a) ?? 0) - (RISK_ORDER.get(b) ?? 0));
}

function failed(sql: string, message: string, cursorPosition?: number): SqlClassification {
  const statement: StatementClass = {
    operation: 'unknown',
    command: 'UNKNOWN',
    readOnly: false,
    tables: [],
    functions: [],
    risks: [R.parse_error],
    nested: [],
    location: { start: 0, length: sql.length },
    text: sql,
  };
  return {
    statements: [statement],
    parseError: cursorPosition === undefined ? { message } : { message, cursorPosition },
    readOnly: false,
    risks: [R.parse_error],
  };
}

function classifyUncached(sql: string): SqlClassification {
  if (sql.includes('\0')) return failed(sql, 'query text contains a NUL character'); // the parser would stop reading there
  if (sql.length === 0) return { statements: [], readOnly: true, risks: [] }; // libpg-query refuses ''
  let statements: StatementClass[];
  try {
    statements = new Classifier(sql, 0, undefined).classifyAll();
  } catch (err) {
    const details = isObj(err) && isObj(err.sqlDetails) ? err.sqlDetails : undefined;
    const message = details && typeof details.message === 'string' ? details.message : err instanceof Error ? err.message : String(err);
    const pos = details && typeof details.cursorPosition === 'number' ? new OffsetMap(sql).toChar(details.cursorPosition) : undefined;
    // Anything else (a stack overflow on absurd nesting) is refused the same way: never guess.
    return failed(sql, details ? message : `could not classify: ${message}`, pos);
  }
  if (hasAmbiguousLiteral(sql)) {
    statements = statements.map((s) => ({ ...s, risks: [...s.risks, R.ambiguous_literal] }));
  }
  return { statements, readOnly: statements.every((s) => s.readOnly), risks: unionRisks(statements) };
}

/**
 * Classifies every statement of a Query text. Synchronous; needs `initSqlParser()` to have completed.
 * Never throws on bad SQL: a refused text comes back as one 'unknown' statement with risk parse_error.
 * Results are cached by exact text and deeply frozen.
 */
export function classifySql(sql: string): SqlClassification {
  if (!isSqlParserReady()) throw new Error('SQL parser not initialised: await initSqlParser() once at start-up before classifySql()');
  const hit = cache.get(sql);
  if (hit) {
    cache.delete(sql);
    cache.set(sql, hit);
    return hit;
  }
  const result = deepFreeze(classifyUncached(sql));
  if (sql.length <= CACHE_MAX_KEY_CHARS) {
    cache.set(sql, result);
    if (cache.size > CACHE_MAX_ENTRIES) cache.delete(cache.keys().next().value as string);
  }
  return result;
}

/** Empties the result cache (tests, or after a change of classification rules). */
export function clearSqlClassificationCache(): void {
  cache.clear();
}

