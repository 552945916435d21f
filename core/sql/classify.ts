/**
 * Classifies SQL text statement by statement with the real PostgreSQL parser, so the policy engine can
 * decide on what a statement does rather than on what it looks like.
 *
 * One parse, one walk of the whole tree: a write hidden in a CTE, a subquery, a COPY or an EXPLAIN ANALYZE
 * counts for the statement that holds it. What cannot be seen from the text is not claimed: user-defined
 * functions, triggers, rules and column defaults may write when a "read" runs. `readOnly` therefore only
 * decides how durably the audit record is written before the statement goes on; the policy decides on
 * `operation` and `risks`.
 */
import { isSqlParserReady, parsePlpgsql, parseSql, scanSql } from './parser.ts';
import { asNode, constString, fieldsOf, isObj, listItems, OffsetMap, optionBool, stringList, type Obj } from './walk.ts';

export { initSqlParser } from './parser.ts';

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
const OPERATION_ORDER: readonly SqlOperation[] = [
  'read', 'transaction', 'session', 'copy_out', 'utility', 'write', 'copy_in', 'ddl', 'procedural', 'admin', 'privilege', 'unknown',
];
const RANK: Readonly<Record<SqlOperation, number>> = Object.fromEntries(OPERATION_ORDER.map((op, i) => [op, i])) as Record<SqlOperation, number>;
/** Highest rank that can still be read-only (COPY TO STDOUT). */
const READ_ONLY_MAX_RANK = RANK.copy_out;

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
const RISK_ORDER: ReadonlyMap<string, number> = new Map(Object.keys(RiskFlag).map((r, i) => [r, i]));

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
  /** EXECUTE name: the prepared statement cannot be resolved here. */
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

// ---------------------------------------------------------------------------------------------
// Function catalogue. Matched on the last name part, lower-cased, whatever the schema: extension
// functions (dblink, adminpack) live in any schema, and a look-alike user function is a fair alarm.

interface FnRule { readonly risks: readonly RiskFlag[]; readonly sideEffect: boolean }
const R = RiskFlag;
const FN_EXACT = new Map<string, FnRule>();
const FN_PREFIX: [string, FnRule][] = [];
function fnRule(names: readonly string[], risks: readonly RiskFlag[], sideEffect: boolean, prefixes: readonly string[] = []): void {
  const rule = { risks, sideEffect };
  for (const n of names) FN_EXACT.set(n, rule);
  for (const p of prefixes) FN_PREFIX.push([p, rule]);
}
// Run SQL text given as an argument.
fnRule(['query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat', 'crosstab', 'crosstab2', 'crosstab3',
  'crosstab4', 'connectby', 'pg_background_launch'], [R.dynamic_sql], true);
// Read relations named in a string argument, invisible to `tables`.
fnRule(['table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema',
  'schema_to_xml_and_xmlschema', 'database_to_xml', 'database_to_xmlschema', 'database_to_xml_and_xmlschema'], [R.dynamic_sql], false);
fnRule([], [R.dynamic_sql, R.external_access], true, ['dblink']);
fnRule(['pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file', 'pg_logdir_ls', 'pg_file_read', 'pg_file_length'],
  [R.server_file_access], false, ['pg_ls_']);
fnRule(['lo_import', 'lo_export', 'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync'], [R.server_file_access], true);
fnRule(['pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_rotate_logfile_old', 'pg_promote',
  'pg_switch_wal', 'pg_switch_xlog', 'pg_create_restore_point', 'pg_backup_start', 'pg_backup_stop', 'pg_start_backup',
  'pg_stop_backup', 'pg_log_backend_memory_contexts', 'pg_wal_replay_pause', 'pg_wal_replay_resume', 'pg_xlog_replay_pause',
  'pg_xlog_replay_resume', 'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
  'pg_replication_slot_advance', 'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot',
  'pg_logical_slot_get_changes', 'pg_logical_slot_get_binary_changes', 'pg_logical_emit_message', 'pg_sync_replication_slots'],
  [R.external_access], true, ['pg_replication_origin_', 'pg_stat_reset', 'pg_stat_statements_reset']);
// Side effects without a risk of their own: readOnly false so the audit record is durable first.
fnRule(['nextval', 'setval', 'set_config', 'pg_notify', 'lowrite', 'pg_import_system_collations', 'pg_truncate_visibility_map',
  'pg_clear_attribute_stats', 'pg_clear_relation_stats', 'pg_restore_attribute_stats', 'pg_restore_relation_stats'], [], true,
  ['lo_', 'pg_advisory_', 'pg_try_advisory_', 'binary_upgrade_']);

/**
 * Functions whose string arguments are SQL text: a constant one is classified as if it ran here
 * (dblink to the same server is a classic way round a proxy). Arguments that do not parse are connection
 * strings or names and are skipped.
 */
const SQL_TEXT_ARGS = /^(query_to_xml|query_to_xmlschema|query_to_xml_and_xmlschema|ts_stat|crosstab\d?|dblink.*|pg_background_launch)$/;

function functionRules(base: string): FnRule[] {
  const out: FnRule[] = [];
  const exact = FN_EXACT.get(base);
  if (exact) out.push(exact);
  for (const [p, rule] of FN_PREFIX) if (base.startsWith(p)) out.push(rule);
  return out;
}

/** Settings whose change can lift a guard the gateway relies on. */
const SENSITIVE_SETTINGS: ReadonlySet<string> = new Set(['transaction_read_only', 'default_transaction_read_only', 'session_replication_role']);
const ROLE_SETTINGS: ReadonlySet<string> = new Set(['role', 'session_authorization']);

// ---------------------------------------------------------------------------------------------
// Statement catalogue for nodes without special handling.

interface StmtRule { readonly op: SqlOperation; readonly risks?: readonly RiskFlag[]; readonly sideEffect?: boolean }
const STMT: Readonly<Record<string, StmtRule>> = {
  VariableShowStmt: { op: 'read' },
  FetchStmt: { op: 'read' },
  ReturnStmt: { op: 'read' },
  PLAssignStmt: { op: 'read' },
  ClosePortalStmt: { op: 'session' },
  DeallocateStmt: { op: 'session' },
  ListenStmt: { op: 'session' },
  UnlistenStmt: { op: 'session' },
  NotifyStmt: { op: 'utility' }, // reaches other sessions
  LockStmt: { op: 'utility' }, // can block every other session
  ConstraintsSetStmt: { op: 'transaction' },
  TruncateStmt: { op: 'write', risks: [R.truncate] },
  RefreshMatViewStmt: { op: 'write' },
  VacuumStmt: { op: 'admin' },
  ClusterStmt: { op: 'admin' },
  ReindexStmt: { op: 'admin' },
  CheckPointStmt: { op: 'admin' },
  LoadStmt: { op: 'admin', risks: [R.server_file_access] },
  GrantStmt: { op: 'privilege', risks: [R.grant_revoke] },
  GrantRoleStmt: { op: 'privilege', risks: [R.grant_revoke] },
  AlterDefaultPrivilegesStmt: { op: 'privilege', risks: [R.grant_revoke] },
  CreateRoleStmt: { op: 'privilege', risks: [R.role_change] },
  AlterRoleStmt: { op: 'privilege', risks: [R.role_change] },
  AlterRoleSetStmt: { op: 'privilege', risks: [R.role_change] },
  DropRoleStmt: { op: 'privilege', risks: [R.role_change, R.drop] },
  ReassignOwnedStmt: { op: 'privilege', risks: [R.role_change] },
  DropOwnedStmt: { op: 'privilege', risks: [R.drop] },
  AlterOwnerStmt: { op: 'privilege' },
  CreatePolicyStmt: { op: 'privilege' },
  AlterPolicyStmt: { op: 'privilege' },
  CreateUserMappingStmt: { op: 'privilege' },
  AlterUserMappingStmt: { op: 'privilege' },
  DropUserMappingStmt: { op: 'privilege', risks: [R.drop] },
  CreateTableSpaceStmt: { op: 'ddl', risks: [R.server_file_access] },
  CreateForeignServerStmt: { op: 'ddl', risks: [R.external_access] },
  AlterForeignServerStmt: { op: 'ddl', risks: [R.external_access] },
  CreateSubscriptionStmt: { op: 'ddl', risks: [R.external_access] },
  ImportForeignSchemaStmt: { op: 'ddl', risks: [R.external_access] },
  AlterSubscriptionStmt: { op: 'ddl', risks: [R.external_access] },
};
const DDL_PREFIX = /^(Create|Alter|Define|Comment|SecLabel|Rename|Import|Composite|Index|View|ReplicaIdentity)/;

const COMMAND: Readonly<Record<string, string>> = {
  InsertStmt: 'INSERT', UpdateStmt: 'UPDATE', DeleteStmt: 'DELETE', MergeStmt: 'MERGE', VariableShowStmt: 'SHOW',
  CopyStmt: 'COPY', ExplainStmt: 'EXPLAIN', PrepareStmt: 'PREPARE', ExecuteStmt: 'EXECUTE', DeallocateStmt: 'DEALLOCATE',
  DoStmt: 'DO', CallStmt: 'CALL', DeclareCursorStmt: 'DECLARE CURSOR', ClosePortalStmt: 'CLOSE CURSOR', ListenStmt: 'LISTEN',
  UnlistenStmt: 'UNLISTEN', NotifyStmt: 'NOTIFY', LockStmt: 'LOCK', TruncateStmt: 'TRUNCATE', ClusterStmt: 'CLUSTER',
  ReindexStmt: 'REINDEX', CheckPointStmt: 'CHECKPOINT', LoadStmt: 'LOAD', AlterSystemStmt: 'ALTER SYSTEM',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW', ConstraintsSetStmt: 'SET CONSTRAINTS', AlterDefaultPrivilegesStmt: 'ALTER DEFAULT PRIVILEGES',
  AlterRoleStmt: 'ALTER ROLE', AlterRoleSetStmt: 'ALTER ROLE', DropRoleStmt: 'DROP ROLE', ReassignOwnedStmt: 'REASSIGN OWNED',
  DropOwnedStmt: 'DROP OWNED', CreateStmt: 'CREATE TABLE', CreateForeignTableStmt: 'CREATE FOREIGN TABLE', ViewStmt: 'CREATE VIEW',
  IndexStmt: 'CREATE INDEX', CreateSeqStmt: 'CREATE SEQUENCE', AlterSeqStmt: 'ALTER SEQUENCE', CreateSchemaStmt: 'CREATE SCHEMA',
  CreateTrigStmt: 'CREATE TRIGGER', CreateEventTrigStmt: 'CREATE EVENT TRIGGER', AlterEventTrigStmt: 'ALTER EVENT TRIGGER',
  RuleStmt: 'CREATE RULE', CreatePLangStmt: 'CREATE LANGUAGE', CreatedbStmt: 'CREATE DATABASE', DropdbStmt: 'DROP DATABASE',
  AlterDatabaseStmt: 'ALTER DATABASE', AlterDatabaseSetStmt: 'ALTER DATABASE', AlterDatabaseRefreshCollStmt: 'ALTER DATABASE',
  CreateTableSpaceStmt: 'CREATE TABLESPACE', DropTableSpaceStmt: 'DROP TABLESPACE', AlterTableSpaceOptionsStmt: 'ALTER TABLESPACE',
  AlterTableMoveAllStmt: 'ALTER TABLE', CreateEnumStmt: 'CREATE TYPE', CreateRangeStmt: 'CREATE TYPE', CompositeTypeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE', CreateDomainStmt: 'CREATE DOMAIN', CommentStmt: 'COMMENT', SecLabelStmt: 'SECURITY LABEL',
  CreateStatsStmt: 'CREATE STATISTICS', AlterStatsStmt: 'ALTER STATISTICS', CreateOpClassStmt: 'CREATE OPERATOR CLASS',
  CreateOpFamilyStmt: 'CREATE OPERATOR FAMILY', AlterOpFamilyStmt: 'ALTER OPERATOR FAMILY', AlterTSDictionaryStmt: 'ALTER TEXT SEARCH DICTIONARY',
  AlterTSConfigurationStmt: 'ALTER TEXT SEARCH CONFIGURATION', CreateAmStmt: 'CREATE ACCESS METHOD', CreateFdwStmt: 'CREATE FOREIGN DATA WRAPPER',
  AlterFdwStmt: 'ALTER FOREIGN DATA WRAPPER', CreateForeignServerStmt: 'CREATE SERVER', AlterForeignServerStmt: 'ALTER SERVER',
  AlterExtensionContentsStmt: 'ALTER EXTENSION',
};
const TX_COMMAND: Readonly<Record<string, string>> = {
  TRANS_STMT_BEGIN: 'BEGIN', TRANS_STMT_START: 'START TRANSACTION', TRANS_STMT_COMMIT: 'COMMIT', TRANS_STMT_ROLLBACK: 'ROLLBACK',
  TRANS_STMT_SAVEPOINT: 'SAVEPOINT', TRANS_STMT_RELEASE: 'RELEASE', TRANS_STMT_ROLLBACK_TO: 'ROLLBACK TO SAVEPOINT',
  TRANS_STMT_PREPARE: 'PREPARE TRANSACTION', TRANS_STMT_COMMIT_PREPARED: 'COMMIT PREPARED', TRANS_STMT_ROLLBACK_PREPARED: 'ROLLBACK PREPARED',
};
const OBJECT_NAME: Readonly<Record<string, string>> = {
  MATVIEW: 'MATERIALIZED VIEW', FDW: 'FOREIGN DATA WRAPPER', FOREIGN_SERVER: 'SERVER', TSCONFIGURATION: 'TEXT SEARCH CONFIGURATION',
  TSDICTIONARY: 'TEXT SEARCH DICTIONARY', TSPARSER: 'TEXT SEARCH PARSER', TSTEMPLATE: 'TEXT SEARCH TEMPLATE', OPCLASS: 'OPERATOR CLASS',
  OPFAMILY: 'OPERATOR FAMILY', TABCONSTRAINT: 'TABLE', DOMCONSTRAINT: 'DOMAIN', COLUMN: 'TABLE', ATTRIBUTE: 'TYPE',
  LARGEOBJECT: 'LARGE OBJECT', STATISTIC_EXT: 'STATISTICS', PUBLICATION_NAMESPACE: 'PUBLICATION', PUBLICATION_REL: 'PUBLICATION',
};
function objectName(v: unknown): string {
  if (typeof v !== 'string' || !v.startsWith('OBJECT_')) return 'OBJECT';
  const k = v.slice(7);
  return OBJECT_NAME[k] ?? k.replace(/_/g, ' ');
}
/** DROP of these object types names relations: report them in `tables`. */
const RELATION_OBJECTS: ReadonlySet<string> = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_SEQUENCE']);
const DATA_MODIFYING: ReadonlySet<string> = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);
/** Leaves that hold neither calls nor relations: skipped to keep the walk short. */
const LEAVES: ReadonlySet<string> = new Set(['String', 'Integer', 'Float', 'Boolean', 'BitString', 'A_Const', 'ColumnRef', 'ParamRef',
  'A_Star', 'TypeName', 'RoleSpec', 'SQLValueFunction']);

function commandOf(type: string, f: Obj): string {
  const fixed = COMMAND[type];
  if (fixed) return fixed;
  switch (type) {
    case 'SelectStmt': return isObj(f.intoClause) ? 'SELECT INTO' : 'SELECT';
    case 'TransactionStmt': return TX_COMMAND[String(f.kind)] ?? 'TRANSACTION';
    case 'VariableSetStmt': return f.kind === 'VAR_RESET' || f.kind === 'VAR_RESET_ALL' ? 'RESET' : 'SET';
    case 'FetchStmt': return f.ismove === true ? 'MOVE' : 'FETCH';
    case 'DiscardStmt': return `DISCARD ${String(f.target ?? 'DISCARD_ALL').replace(/^DISCARD_/, '')}`;
    case 'VacuumStmt': return f.is_vacuumcmd === true ? 'VACUUM' : 'ANALYZE';
    case 'GrantStmt': return f.is_grant === true ? 'GRANT' : 'REVOKE';
    case 'GrantRoleStmt': return f.is_grant === true ? 'GRANT ROLE' : 'REVOKE ROLE';
    case 'CreateRoleStmt': return f.stmt_type === 'ROLESTMT_USER' ? 'CREATE USER' : f.stmt_type === 'ROLESTMT_GROUP' ? 'CREATE GROUP' : 'CREATE ROLE';
    case 'CreateTableAsStmt': return f.objtype === 'OBJECT_MATVIEW' ? 'CREATE MATERIALIZED VIEW' : 'CREATE TABLE AS';
    case 'CreateFunctionStmt': return f.is_procedure === true ? 'CREATE PROCEDURE' : 'CREATE FUNCTION';
    case 'AlterFunctionStmt': return `ALTER ${objectName(f.objtype)}`;
    case 'DefineStmt': return `CREATE ${objectName(f.kind)}`;
    case 'AlterTableStmt': return `ALTER ${objectName(f.objtype)}`;
    case 'DropStmt': return `DROP ${objectName(f.removeType)}`;
    case 'RenameStmt': return `ALTER ${objectName(f.renameType)}`;
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
    case 'AlterObjectDependsStmt': return `ALTER ${objectName(f.objectType)}`;
    default: return type.replace(/Stmt$/, '').replace(/([a-z])([A-Z])/g, '$1 $2').toUpperCase();
  }
}

// ---------------------------------------------------------------------------------------------

interface Span { start: number; end: number } // string offsets in the classifier's text, end exclusive
interface Scope { readonly names: ReadonlySet<string>; readonly parent: Scope | undefined } // CTE names visible here
interface Tok { start: number; end: number; t: string } // t: lower-cased token text

interface Acc {
  rank: number;
  sideEffect: boolean;
  readonly tables: Set<string>;
  readonly functions: Set<string>;
  readonly risks: Set<RiskFlag>;
  readonly nested: StatementClass[];
  preparedName?: string;
  readonly span: Span;
}

/** How a nested statement's findings count for its holder. */
const Merge = {
  /** Runs with the holder: everything counts and it is listed in `nested`. */
  exec: 'exec',
  /** Runs with the holder but is not a statement of its own (a PL/pgSQL expression). */
  inline: 'inline',
  /** Only planned (EXPLAIN without ANALYZE): relations and functions count, not its effects. */
  plan: 'plan',
  /** Stored to run later (a function body): only its risks count. */
  define: 'define',
} as const;
type Merge = (typeof Merge)[keyof typeof Merge];

function newAcc(span: Span): Acc {
  return { rank: -1, sideEffect: false, tables: new Set(), functions: new Set(), risks: new Set(), nested: [], span };
}

function bump(acc: Acc, op: SqlOperation): void {
  if (RANK[op] > acc.rank) acc.rank = RANK[op];
}

function inScope(scope: Scope | undefined, name: string): boolean {
  for (let s = scope; s; s = s.parent) if (s.names.has(name)) return true;
  return false;
}

/** A WHERE that is missing or constant-true (`WHERE true`, `WHERE 1=1`) filters nothing. Best effort. */
function filtersNothing(where: unknown): boolean {
  if (where === undefined || where === null) return true;
  const n = asNode(where);
  if (!n) return false;
  const [type, f] = n;
  if (type === 'A_Const') return isObj(f.boolval) ? f.boolval.boolval === true : !f.isnull;
  if (type === 'TypeCast') return optionBool(f.arg) === true;
  if (type === 'A_Expr' && f.kind === 'AEXPR_OP' && stringList(f.name).join('.') === '=') {
    const l = asNode(f.lexpr), r = asNode(f.rexpr);
    return l?.[0] === 'A_Const' && r?.[0] === 'A_Const' && JSON.stringify(stripLocations(l[1])) === JSON.stringify(stripLocations(r[1]));
  }
  return false;
}
function stripLocations(o: Obj): Obj {
  const { location: _location, ...rest } = o;
  return rest;
}

/** Classifies the statements of one text; sub-texts (function bodies) get a classifier of their own. */
class Classifier {
  private readonly offsets: OffsetMap;
  private tokens: Tok[] | undefined;

  /**
   * @param shift where `sql` starts in the Query text, when it is a slice of it (0 for the Query itself)
   * @param fallback the Query-text span to report when `sql` is not a slice of the Query
   */
  constructor(private readonly sql: string, private readonly shift: number | undefined, private readonly fallback: Span | undefined) {
    this.offsets = new OffsetMap(sql);
  }

  /** Top-level statements of `sql`; throws what the parser throws. */
  classifyAll(): StatementClass[] {
    const parsed = parseSql(this.sql);
    const out: StatementClass[] = [];
    for (const raw of parsed.stmts ?? []) {
      const node = asNode(raw.stmt);
      if (!node) continue;
      const start = this.offsets.toChar(raw.stmt_location ?? 0);
      const end = raw.stmt_len ? this.offsets.toChar((raw.stmt_location ?? 0) + raw.stmt_len) : this.sql.length;
      out.push(this.statement(node[0], node[1], this.trimSpan({ start, end }), undefined));
    }
    return out;
  }

  private trimSpan(s: Span): Span {
    let { start, end } = s;
    while (start < end && /\s/.test(this.sql[start] ?? '')) start++;
    while (end > start && /[\s;]/.test(this.sql[end - 1] ?? '')) end--;
    return { start, end };
  }

  private statement(type: string, f: Obj, span: Span, scope: Scope | undefined): StatementClass {
    const acc = newAcc(span);
    this.visit(type, f, acc, scope);
    const operation = OPERATION_ORDER[acc.rank] ?? 'unknown';
    const risks = [...acc.risks].sort((a, b) => (RISK_ORDER.get(a) ?? 0) - (RISK_ORDER.get(b) ?? 0));
    const at = this.reportSpan(span);
    const location = { start: at.start, length: at.end - at.start };
    const out: StatementClass = {
      operation,
      command: commandOf(type, f),
      readOnly: acc.rank >= 0 && acc.rank <= READ_ONLY_MAX_RANK && !acc.sideEffect,
      tables: [...acc.tables],
      functions: [...acc.functions],
      risks,
      nested: acc.nested,
      ...(acc.preparedName !== undefined ? { preparedName: acc.preparedName } : {}),
      location,
      text: this.sql.slice(span.start, span.end).trim(),
    };
    return out;
  }

  private merge(acc: Acc, child: StatementClass, mode: Merge): void {
    for (const r of child.risks) if (mode !== Merge.plan) acc.risks.add(r);
    if (mode === Merge.define) return;
    for (const t of child.tables) acc.tables.add(t);
    for (const fn of child.functions) acc.functions.add(fn);
    if (mode !== Merge.inline) acc.nested.push(child);
    if (mode === Merge.plan) return;
    bump(acc, child.operation);
    if (!child.readOnly) acc.sideEffect = true;
  }

  /** Classifies `v` (a wrapped statement node) as its own statement and merges it into `acc`. */
  private child(v: unknown, acc: Acc, span: Span | undefined, scope: Scope | undefined, mode: Merge): void {
    const n = asNode(v);
    if (!n) return;
    this.merge(acc, this.statement(n[0], n[1], span ?? acc.span, scope), mode);
  }

  // --- the walk ------------------------------------------------------------------------------

  private walk(v: unknown, acc: Acc, scope: Scope | undefined): void {
    if (Array.isArray(v)) {
      for (const x of v) this.walk(x, acc, scope);
      return;
    }
    if (!isObj(v)) return;
    const n = asNode(v);
    if (n) this.visit(n[0], n[1], acc, scope);
    else if (typeof v.relname === 'string') this.addRangeVar(v, acc, scope, false);
    else this.walkFields(v, acc, scope);
  }

  private walkFields(f: Obj, acc: Acc, scope: Scope | undefined, skip?: string, skip2?: string): void {
    let s = scope;
    if (isObj(f.withClause)) s = this.withScope(f.withClause, acc, scope);
    for (const k in f) {
      if (k === 'withClause' || k === skip || k === skip2) continue;
      const v = f[k];
      if (typeof v === 'object' && v !== null) this.walk(v, acc, s);
    }
  }

  /** Walks the CTEs in order; each sees the earlier ones (all of them when RECURSIVE). */
  private withScope(wc: Obj, acc: Acc, scope: Scope | undefined): Scope {
    const names = new Set<string>();
    const s: Scope = { names, parent: scope };
    const ctes = Array.isArray(wc.ctes) ? wc.ctes : [];
    const cteName = (c: unknown): string | undefined => {
      const f = fieldsOf(c, 'CommonTableExpr');
      return typeof f?.ctename === 'string' ? f.ctename : undefined;
    };
    if (wc.recursive === true) for (const c of ctes) { const n = cteName(c); if (n !== undefined) names.add(n); }
    for (const c of ctes) {
      const f = fieldsOf(c, 'CommonTableExpr');
      const q = asNode(f?.ctequery);
      if (f && q && DATA_MODIFYING.has(q[0])) this.child(f.ctequery, acc, this.cteSpan(f.location), s, Merge.exec);
      else this.walk(f ? f.ctequery : c, acc, s);
      const n = cteName(c);
      if (n !== undefined) names.add(n);
    }
    return s;
  }

  private addRangeVar(rv: Obj, acc: Acc, scope: Scope | undefined, isTarget: boolean): void {
    const rel = rv.relname;
    if (typeof rel !== 'string') return;
    const schema = typeof rv.schemaname === 'string' && rv.schemaname ? rv.schemaname : undefined;
    const catalog = typeof rv.catalogname === 'string' && rv.catalogname ? rv.catalogname : undefined;
    // INSERT/UPDATE/DELETE/MERGE targets never resolve to a CTE, so only FROM-side names are checked.
    if (!isTarget && !schema && !catalog && inScope(scope, rel)) return;
    acc.tables.add(catalog ? `${catalog}.${schema ?? ''}.${rel}` : schema ? `${schema}.${rel}` : rel);
  }

  private addFunction(parts: string[], args: unknown, acc: Acc, sqlSyntax: boolean): void {
    if (parts.length === 0) return;
    let name = parts.join('.').toLowerCase();
    if (sqlSyntax && name.startsWith('pg_catalog.')) name = name.slice(11); // EXTRACT(...) etc.: the user wrote no schema
    acc.functions.add(name);
    const base = (parts[parts.length - 1] ?? '').toLowerCase();
    for (const rule of functionRules(base)) {
      for (const r of rule.risks) acc.risks.add(r);
      if (rule.sideEffect) acc.sideEffect = true;
    }
    if (SQL_TEXT_ARGS.test(base) && Array.isArray(args)) {
      for (const a of args) {
        const text = constString(a);
        if (text !== undefined) this.subText(text, this.locateLiteral(text, acc), acc, Merge.exec, false);
      }
    }
    if (base === 'set_config') {
      const setting = constString(Array.isArray(args) ? args[0] : undefined)?.trim().toLowerCase();
      if (setting === undefined || ROLE_SETTINGS.has(setting)) acc.risks.add(R.set_role);
      if (setting === undefined || SENSITIVE_SETTINGS.has(setting)) acc.risks.add(R.sensitive_setting);
    }
  }

  private visit(type: string, f: Obj, acc: Acc, scope: Scope | undefined): void {
    if (LEAVES.has(type)) return;
    switch (type) {
      case 'SelectStmt': {
        bump(acc, 'read');
        if (f.lockingClause !== undefined) acc.sideEffect = true; // FOR UPDATE/SHARE writes row locks
        if (isObj(f.intoClause)) {
          bump(acc, 'ddl');
          acc.risks.add(R.select_into);
          if (isObj(f.intoClause.rel)) this.addRangeVar(f.intoClause.rel, acc, undefined, true);
          const { intoClause: _into, ...source } = f;
          this.merge(acc, this.statement('SelectStmt', source, acc.span, scope), Merge.exec);
          return;
        }
        this.walkFields(f, acc, scope, 'lockingClause'); // FOR UPDATE OF names FROM items, not tables
        return;
      }
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt': {
        bump(acc, 'write');
        if (isObj(f.relation)) this.addRangeVar(f.relation, acc, scope, true);
        if (type === 'UpdateStmt' && filtersNothing(f.whereClause)) acc.risks.add(R.update_without_where);
        if (type === 'DeleteStmt' && filtersNothing(f.whereClause)) acc.risks.add(R.delete_without_where);
        this.walkFields(f, acc, scope, 'relation');
        return;
      }
      case 'RangeVar':
        this.addRangeVar(f, acc, scope, false);
        return;
      case 'FuncCall':
        this.addFunction(stringList(f.funcname), f.args, acc, f.funcformat === 'COERCE_SQL_SYNTAX');
        this.walkFields(f, acc, scope, 'funcname');
        return;
      case 'DefElem':
        // BEGIN READ WRITE / SET TRANSACTION READ WRITE lift default_transaction_read_only.
        if (f.defname === 'transaction_read_only' && optionBool(f.arg) !== true) {
          acc.risks.add(R.sensitive_setting);
          acc.sideEffect = true;
        }
        this.walk(f.arg, acc, scope);
        return;
      case 'AlterTableCmd':
        if (f.subtype === 'AT_DropColumn') acc.risks.add(R.drop);
        this.walkFields(f, acc, scope);
        return;
      case 'ExplainStmt': {
        bump(acc, 'read');
        let analyze = false;
        for (const o of listItems(f.options)) {
          const d = fieldsOf(o, 'DefElem');
          if ((d?.defname === 'analyze' || d?.defname === 'analyse') && optionBool(d.arg) !== false) analyze = true;
        }
        if (analyze) acc.risks.add(R.explain_analyze);
        this.child(f.query, acc, this.explainSpan(acc.span), scope, analyze ? Merge.exec : Merge.plan);
        return;
      }
      case 'PrepareStmt':
        if (!asNode(f.query)) bump(acc, 'unknown');
        this.child(f.query, acc, this.afterKeyword(acc.span, 'as'), scope, Merge.exec);
        return;
      case 'ExecuteStmt':
        bump(acc, 'unknown'); // what runs depends on an earlier PREPARE
        if (typeof f.name === 'string') acc.preparedName = f.name;
        this.walk(f.params, acc, scope);
        return;
      case 'CreateTableAsStmt': {
        bump(acc, 'ddl');
        const into = isObj(f.into) ? f.into : undefined;
        if (into && isObj(into.rel)) this.addRangeVar(into.rel, acc, undefined, true);
        this.child(f.query, acc, this.afterKeyword(acc.span, 'as', true), scope, Merge.exec);
        return;
      }
      case 'DeclareCursorStmt':
        bump(acc, 'read');
        this.child(f.query, acc, this.afterKeyword(acc.span, 'for'), scope, Merge.exec);
        return;
      case 'RuleStmt': {
        bump(acc, 'ddl');
        if (isObj(f.relation)) this.addRangeVar(f.relation, acc, undefined, true);
        this.walk(f.whereClause, acc, undefined);
        const actions = Array.isArray(f.actions) ? f.actions : [];
        const spans = this.ruleSpans(acc.span, actions.length);
        actions.forEach((a, i) => this.child(a, acc, spans?.[i], undefined, Merge.exec));
        return;
      }
      case 'CopyStmt': {
        bump(acc, f.is_from === true ? 'copy_in' : 'copy_out');
        if (typeof f.filename === 'string') {
          acc.risks.add(f.is_program === true ? R.copy_program : R.server_file_access);
          acc.sideEffect = true;
        }
        if (isObj(f.relation)) this.addRangeVar(f.relation, acc, undefined, true);
        this.child(f.query, acc, this.copySpan(acc.span), scope, Merge.exec);
        this.walk(f.whereClause, acc, scope);
        this.walk(f.options, acc, scope);
        return;
      }
      case 'DoStmt':
        bump(acc, 'procedural');
        acc.risks.add(R.do_block);
        acc.sideEffect = true;
        this.routineBody('do', f, acc);
        return;
      case 'CreateFunctionStmt':
        bump(acc, 'ddl');
        this.routineBody('function', f, acc);
        this.walk(f.parameters, acc, scope); // parameter defaults
        return;
      case 'CallStmt': {
        bump(acc, 'procedural');
        acc.sideEffect = true;
        const fc = fieldsOf(f.funccall, 'FuncCall');
        if (fc) this.visit('FuncCall', fc, acc, scope);
        return;
      }
      case 'CreateTrigStmt':
        bump(acc, 'ddl');
        this.addFunction(stringList(f.funcname), f.args, acc, false);
        this.walkFields(f, acc, scope, 'funcname');
        return;
      case 'VariableSetStmt':
        this.variableSet(f, acc, scope);
        return;
      case 'AlterSystemStmt':
        bump(acc, 'admin');
        acc.risks.add(R.alter_system);
        acc.sideEffect = true;
        return;
      case 'TransactionStmt':
        bump(acc, 'transaction');
        // Two-phase commit acts on transactions that outlive the session.
        if (f.kind === 'TRANS_STMT_PREPARE' || f.kind === 'TRANS_STMT_COMMIT_PREPARED' || f.kind === 'TRANS_STMT_ROLLBACK_PREPARED') acc.sideEffect = true;
        this.walk(f.options, acc, scope);
        return;
      case 'DiscardStmt':
        bump(acc, 'session');
        if (f.target === undefined || f.target === 'DISCARD_ALL') {
          acc.risks.add(R.set_role); // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT
          acc.sideEffect = true;
        }
        return;
      case 'DropStmt':
        bump(acc, 'ddl');
        acc.risks.add(R.drop);
        if (typeof f.removeType === 'string' && RELATION_OBJECTS.has(f.removeType)) {
          for (const o of listItems(f.objects)) {
            const parts = stringList(listItems(o));
            if (parts.length) acc.tables.add(parts.join('.'));
          }
        }
        return;
      default:
        if (type.endsWith('Stmt')) this.otherStatement(type, acc);
        this.walkFields(f, acc, scope);
    }
  }

  private otherStatement(type: string, acc: Acc): void {
    const rule = STMT[type];
    if (rule) {
      bump(acc, rule.op);
      for (const r of rule.risks ?? []) acc.risks.add(r);
      if (rule.sideEffect) acc.sideEffect = true;
    } else if (type.startsWith('Drop')) {
      bump(acc, 'ddl');
      acc.risks.add(R.drop);
    } else if (DDL_PREFIX.test(type)) bump(acc, 'ddl');
    else bump(acc, 'unknown');
  }

  private variableSet(f: Obj, acc: Acc, scope: Scope | undefined): void {
    bump(acc, 'session');
    const name = typeof f.name === 'string' ? f.name.toLowerCase() : '';
    if (ROLE_SETTINGS.has(name)) {
      acc.risks.add(R.set_role);
      acc.sideEffect = true;
    } else if (SENSITIVE_SETTINGS.has(name)) {
      const args = Array.isArray(f.args) ? f.args : [];
      const turnsOn = f.kind === 'VAR_SET_VALUE' && name !== 'session_replication_role' && args.length === 1 && optionBool(args[0]) === true;
      if (!turnsOn) {
        acc.risks.add(R.sensitive_setting);
        acc.sideEffect = true;
      }
    }
    this.walk(f.args, acc, scope);
  }

  // --- routine bodies ------------------------------------------------------------------------

  /** Looks into DO / CREATE FUNCTION bodies: DO runs now (exec), a function body runs later (define). */
  private routineBody(kind: 'do' | 'function', f: Obj, acc: Acc): void {
    let lang: string | undefined;
    let body: unknown;
    for (const o of listItems(kind === 'do' ? f.args : f.options)) {
      const d = fieldsOf(o, 'DefElem');
      if (d?.defname === 'language') lang = constString(d.arg)?.toLowerCase();
      else if (d?.defname === 'as') body = d.arg;
    }
    const mode = kind === 'do' ? Merge.exec : Merge.define;
    if (kind === 'function' && f.sql_body !== undefined) {
      this.sqlBody(f.sql_body, acc);
      return;
    }
    lang ??= kind === 'do' ? 'plpgsql' : 'sql';
    if (lang === 'plpgsql') this.plpgsql(acc, mode);
    else if (lang === 'sql' && kind === 'function') {
      const text = constString(listItems(body)[0]) ?? constString(body);
      if (text !== undefined) this.subText(text, undefined, acc, mode);
    } else if (lang === 'c' || lang === 'internal') {
      acc.risks.add(R.untrusted_language);
      if (lang === 'c') acc.risks.add(R.server_file_access); // loads a shared library from disk
    } else {
      if (/^pl.*u$/.test(lang)) acc.risks.add(R.untrusted_language);
      acc.risks.add(R.dynamic_sql); // a body we cannot read may run any SQL
    }
  }

  /** BEGIN ATOMIC ... END / RETURN expr bodies come parsed. */
  private sqlBody(v: unknown, acc: Acc): void {
    const n = asNode(v);
    if (n && n[0] !== 'List') {
      this.child(v, acc, undefined, undefined, Merge.define);
      return;
    }
    for (const item of listItems(v)) this.sqlBody(item, acc);
  }

  private plpgsql(acc: Acc, mode: Merge): void {
    const stmtText = this.sql.slice(acc.span.start, acc.span.end);
    let tree: unknown;
    try {
      tree = parsePlpgsql(stmtText);
    } catch {
      acc.risks.add(R.dynamic_sql); // a body we cannot read may run any SQL
      return;
    }
    let cursor = 0;
    const visit = (v: unknown): void => {
      if (Array.isArray(v)) {
        for (const x of v) visit(x);
        return;
      }
      if (!isObj(v)) return;
      for (const k in v) {
        const x = v[k];
        if (k === 'PLpgSQL_stmt_dynexecute' || k === 'PLpgSQL_stmt_dynfors' || k === 'dynquery') {
          acc.risks.add(R.dynamic_sql);
          // EXECUTE 'constant text' can still be read.
          const expr = fieldsOf(k === 'dynquery' ? x : isObj(x) ? x.query : undefined, 'PLpgSQL_expr');
          const text = typeof expr?.query === 'string' ? literalOf(expr.query) : undefined;
          if (text !== undefined) {
            const at = stmtText.indexOf(text);
            this.subText(text, at >= 0 ? acc.span.start + at : undefined, acc, mode, false);
          }
        }
        if (k === 'PLpgSQL_expr' && isObj(x)) {
          const q = typeof x.query === 'string' ? x.query : '';
          const parseMode = typeof x.parseMode === 'number' ? x.parseMode : 0;
          if (parseMode === 0) {
            // A whole statement: usually a slice of the body, so it can be located.
            let at = stmtText.indexOf(q, cursor);
            if (at < 0) at = stmtText.indexOf(q);
            if (at >= 0) cursor = at + q.length;
            this.subText(q, at >= 0 ? acc.span.start + at : undefined, acc, mode);
          } else if (parseMode === 2) {
            this.subText(`SELECT ${q}`, undefined, acc, mode === Merge.exec ? Merge.inline : mode);
          } else if (parseMode >= 3) {
            const i = q.indexOf(':=');
            const rhs = i >= 0 ? q.slice(i + 2) : q.slice(q.indexOf('=') + 1);
            this.subText(`SELECT ${rhs}`, undefined, acc, mode === Merge.exec ? Merge.inline : mode);
          }
          continue;
        }
        visit(x);
      }
    };
    visit(tree);
  }

  /**
   * Classifies SQL text found inside a body. `at` is its offset in this classifier's text when it is a slice.
   * Text that does not parse may still be accepted by PostgreSQL in context: counted as unreadable SQL.
   */
  private subText(text: string, at: number | undefined, acc: Acc, mode: Merge, flagFailure = true): void {
    if (text.trim() === '') return;
    const shift = at !== undefined && this.shift !== undefined ? at + this.shift : undefined;
    const fallback = shift === undefined ? this.reportSpan(acc.span) : undefined;
    let stmts: StatementClass[];
    try {
      stmts = new Classifier(text, shift, fallback).classifyAll();
    } catch {
      if (flagFailure) acc.risks.add(R.dynamic_sql);
      return;
    }
    for (const s of stmts) this.merge(acc, s, mode);
  }

  /** Offset of a string literal's text inside the statement, when it is written there unescaped. */
  private locateLiteral(text: string, acc: Acc): number | undefined {
    const at = this.sql.indexOf(text, acc.span.start);
    return at >= 0 && at + text.length <= acc.span.end ? at : undefined;
  }

  /** `s` in Query-text offsets. */
  private reportSpan(s: Span): Span {
    if (this.shift !== undefined) return { start: s.start + this.shift, end: s.end + this.shift };
    return this.fallback ?? s;
  }

  // --- locating nested statements in the text --------------------------------------------------

  private toks(): Tok[] {
    if (this.tokens) return this.tokens;
    let raw: ReturnType<typeof scanSql> = [];
    try {
      raw = scanSql(this.sql);
    } catch {
      raw = [];
    }
    this.tokens = raw
      .filter((t) => t.tokenName !== 'SQL_COMMENT' && t.tokenName !== 'C_COMMENT')
      .map((t) => ({ start: this.offsets.toChar(t.start), end: this.offsets.toChar(t.end), t: t.text.toLowerCase() }));
    return this.tokens;
  }

  /** Token index range [from, to) inside `span`. */
  private range(span: Span): [number, number] {
    const t = this.toks();
    let lo = 0, hi = t.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if ((t[mid]?.start ?? 0) < span.start) lo = mid + 1; else hi = mid; }
    let to = lo;
    while (to < t.length && (t[to]?.end ?? Infinity) <= span.end) to++;
    return [lo, to];
  }

  private tokSpan(from: number, to: number): Span | undefined {
    const t = this.toks();
    const a = t[from], b = t[to - 1];
    return a && b && from < to ? { start: a.start, end: b.end } : undefined;
  }

  /** Index of the ')' closing the '(' at `open`, or -1. */
  private closeParen(open: number, to: number): number {
    const t = this.toks();
    let depth = 0;
    for (let i = open; i < to; i++) {
      const x = t[i]?.t;
      if (x === '(' || x === '[') depth++;
      else if (x === ')' || x === ']') { depth--; if (depth === 0) return i; }
    }
    return -1;
  }

  /** Body of `name [(cols)] AS [[NOT] MATERIALIZED] ( body )` starting at the CTE name. */
  private cteSpan(location: unknown): Span | undefined {
    if (typeof location !== 'number') return undefined;
    const t = this.toks();
    const [from] = this.range({ start: this.offsets.toChar(location), end: this.sql.length });
    let i = from, depth = 0;
    for (; i < t.length; i++) {
      const x = t[i]?.t;
      if (x === '(') depth++;
      else if (x === ')') depth--;
      else if (depth === 0 && x === 'as') break;
    }
    for (i++; i < t.length && t[i]?.t !== '('; i++) if (t[i]?.t !== 'not' && t[i]?.t !== 'materialized') return undefined;
    const close = this.closeParen(i, t.length);
    return close < 0 ? undefined : this.tokSpan(i + 1, close);
  }

  /** `COPY ( query ) TO ...` */
  private copySpan(span: Span): Span | undefined {
    const [from, to] = this.range(span);
    if (this.toks()[from + 1]?.t !== '(') return undefined;
    const close = this.closeParen(from + 1, to);
    return close < 0 ? undefined : this.tokSpan(from + 2, close);
  }

  /** Rest of the statement after the first top-level `kw` (PREPARE .. AS, CREATE TABLE .. AS, DECLARE .. FOR). */
  private afterKeyword(span: Span, kw: string, dropWithData = false): Span | undefined {
    const t = this.toks();
    const [from, to] = this.range(span);
    let depth = 0;
    for (let i = from + 1; i < to; i++) {
      const x = t[i]?.t;
      if (x === '(') depth++;
      else if (x === ')') depth--;
      else if (depth === 0 && x === kw) {
        let end = to;
        if (dropWithData && t[end - 1]?.t === 'data') {
          if (t[end - 2]?.t === 'with') end -= 2;
          else if (t[end - 2]?.t === 'no' && t[end - 3]?.t === 'with') end -= 3;
        }
        return this.tokSpan(i + 1, end);
      }
    }
    return undefined;
  }

  /** `EXPLAIN [ ( options ) | ANALYZE VERBOSE ] statement` */
  private explainSpan(span: Span): Span | undefined {
    const t = this.toks();
    const [from, to] = this.range(span);
    let i = from + 1;
    const next = t[i + 1]?.t;
    if (t[i]?.t === '(' && next !== 'select' && next !== 'with' && next !== 'values' && next !== '(') {
      const close = this.closeParen(i, to);
      if (close < 0) return undefined;
      i = close + 1;
    }
    while (i < to && ['analyze', 'analyse', 'verbose'].includes(t[i]?.t ?? '')) i++;
    return this.tokSpan(i, to);
  }

  /** `CREATE RULE ... DO [ALSO|INSTEAD] { NOTHING | command | ( command ; command ... ) }` */
  private ruleSpans(span: Span, count: number): Span[] | undefined {
    const t = this.toks();
    const [from, to] = this.range(span);
    let i = from + 1, depth = 0;
    for (; i < to; i++) {
      const x = t[i]?.t;
      if (x === '(') depth++;
      else if (x === ')') depth--;
      else if (depth === 0 && x === 'do') break;
    }
    i++;
    if (t[i]?.t === 'also' || t[i]?.t === 'instead') i++;
    let end = to;
    if (t[i]?.t === '(') {
      end = this.closeParen(i, to);
      if (end < 0) return undefined;
      i++;
    }
    const spans: Span[] = [];
    let segStart = i;
    depth = 0;
    for (let k = i; k <= end; k++) {
      const x = k < end ? t[k]?.t : ';';
      if (x === '(') depth++;
      else if (x === ')') depth--;
      else if (x === ';' && depth === 0) {
        const s = this.tokSpan(segStart, k);
        if (s) spans.push(s);
        segStart = k + 1;
      }
    }
    return spans.length === count ? spans : undefined;
  }
}

// ---------------------------------------------------------------------------------------------

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

/** The string when a PL/pgSQL expression is a single string constant ('...', $x$...$x$, '...'::text). */
function literalOf(expr: string): string | undefined {
  try {
    const stmt = asNode(parseSql(`SELECT ${expr}`).stmts?.[0]?.stmt);
    if (!stmt || stmt[0] !== 'SelectStmt' || stmt[1].fromClause !== undefined) return undefined;
    const targets = listItems(stmt[1].targetList);
    if (targets.length !== 1) return undefined;
    return constString(fieldsOf(targets[0], 'ResTarget')?.val);
  } catch {
    return undefined;
  }
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

