/**
 * What a classification says: the operations and their danger order, the risk flags, and the shapes of
 * the result for one statement and for a whole Query text. Re-exported by `classify.ts`, the public API.
 */

export const SqlOperation = {
  read: 'read',
  write: 'write',
  ddl: 'ddl',
  privilege: 'privilege',
  admin: 'admin',
  transaction: 'transaction',
  session: 'session',
  utility: 'utility',
  copy_in: 'copy_in',
  copy_out: 'copy_out',
  procedural: 'procedural',
  unknown: 'unknown',
} as const;
export type SqlOperation = (typeof SqlOperation)[keyof typeof SqlOperation];

/** Danger order: a statement's operation is the highest one found anywhere inside it. */
export const OPERATION_ORDER: readonly SqlOperation[] = [
  'read', 'transaction', 'session', 'copy_out', 'utility', 'write', 'copy_in', 'ddl', 'procedural', 'admin', 'privilege', 'unknown',
];
export const RANK: Readonly<Record<SqlOperation, number>> = Object.fromEntries(OPERATION_ORDER.map((op, i) => [op, i])) as Record<SqlOperation, number>;
/** Highest rank that can still be read-only (COPY TO STDOUT). */
export const READ_ONLY_MAX_RANK = RANK.copy_out;

/** Position of `op` in the danger order (read lowest, unknown highest). */
export function operationRank(op: SqlOperation): number {
  return RANK[op];
}

export const RiskFlag = {
  update_without_where: 'update_without_where',
  delete_without_where: 'delete_without_where',
  do_block: 'do_block',
  /** Runs SQL text the classifier cannot see: plpgsql EXECUTE, query_to_xml, dblink, unreadable function bodies. */
  dynamic_sql: 'dynamic_sql',
  copy_program: 'copy_program',
  server_file_access: 'server_file_access',
  external_access: 'external_access',
  set_role: 'set_role',
  /** Changes a setting that guards the session: transaction_read_only (BEGIN READ WRITE), session_replication_role. */
  sensitive_setting: 'sensitive_setting',
  alter_system: 'alter_system',
  /** Changes how the server reads SQL text (standard_conforming_strings, client_encoding, backslash_quote). */
  lexical_setting: 'lexical_setting',
  /** A plain '...' literal whose extent would differ if backslashes escaped: the text means something else with standard_conforming_strings off. */
  ambiguous_literal: 'ambiguous_literal',
  truncate: 'truncate',
  drop: 'drop',
  grant_revoke: 'grant_revoke',
  role_change: 'role_change',
  /** Only on SqlClassification.risks: the Query held more than one statement. */
  multi_statement: 'multi_statement',
  select_into: 'select_into',
  explain_analyze: 'explain_analyze',
  /** C / internal / untrusted PL (plpython3u, plperlu...) code. */
  untrusted_language: 'untrusted_language',
  parse_error: 'parse_error',
} as const;
export type RiskFlag = (typeof RiskFlag)[keyof typeof RiskFlag];
export const RISK_ORDER: ReadonlyMap<string, number> = new Map(Object.keys(RiskFlag).map((r, i) => [r, i]));

export interface StatementClass {
  /** The most dangerous operation found anywhere in the statement. */
  readonly operation: SqlOperation;
  /** Readable tag of the top-level node: 'SELECT', 'CREATE TABLE', 'BEGIN', ... */
  readonly command: string;
  /** True only when the statement cannot change data, schema, persistent settings or anything outside the session. */
  readonly readOnly: boolean;
  /** Relations as written ('public.users' or 'users'), CTE names excluded. */
  readonly tables: readonly string[];
  /** Called functions as written, lower-cased ('pg_catalog.pg_read_file'). */
  readonly functions: readonly string[];
  readonly risks: readonly RiskFlag[];
  /** Statements this one runs or defines to run: data-modifying CTEs, the query of EXPLAIN / PREPARE / CTAS / COPY / DECLARE, rule actions, DO body statements. */
  readonly nested: readonly StatementClass[];
  /**
   * The prepared statement named by PREPARE, EXECUTE or DEALLOCATE (absent for DEALLOCATE ALL). What an
   * EXECUTE runs cannot be resolved from its text: the session that saw the PREPARE resolves it.
   */
  readonly preparedName?: string;
  /**
   * String offsets in the Query text with `text === sql.slice(start, start + length)` for top-level statements.
   * Nested statements are located best-effort; text from a function body that is not a slice of the Query
   * (a rewritten PERFORM, an EXECUTE argument) gets the location of the statement that holds it.
   */
  readonly location: { readonly start: number; readonly length: number };
  readonly text: string;
}

export interface SqlClassification {
  /** One per top-level statement, in order; empty for '', ';' or only comments. */
  readonly statements: readonly StatementClass[];
  readonly parseError?: { readonly message: string; readonly cursorPosition?: number };
  /** Every statement read-only (true for an empty query, false on a parse error). */
  readonly readOnly: boolean;
  /** Union of the statements' risks, plus multi_statement when there is more than one. */
  readonly risks: readonly RiskFlag[];
}
