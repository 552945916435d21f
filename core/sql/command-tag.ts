/**
 * The readable command tag of a top-level node ('SELECT', 'CREATE TABLE', 'BEGIN', ...), reported as
 * StatementClass.command.
 */
import { isObj, type Obj } from './walk.ts';

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

export function commandOf(type: string, f: Obj): string {
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
