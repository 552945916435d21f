/**
 * Statement catalogue: the operation and risks of parse-tree node types without special handling in the
 * walk, and the sets of node types the walk treats alike.
 */
import { RiskFlag, type SqlOperation } from './classification.ts';

const R = RiskFlag;

export interface StmtRule { readonly op: SqlOperation; readonly risks?: readonly RiskFlag[]; readonly sideEffect?: boolean }
export const STMT: Readonly<Record<string, StmtRule>> = {
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
export const DDL_PREFIX = /^(Create|Alter|Define|Comment|SecLabel|Rename|Import|Composite|Index|View|ReplicaIdentity)/;
/** DROP of these object types names relations: report them in `tables`. */
export const RELATION_OBJECTS: ReadonlySet<string> = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_SEQUENCE']);
export const DATA_MODIFYING: ReadonlySet<string> = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);
/** Leaves that hold neither calls nor relations: skipped to keep the walk short. */
export const LEAVES: ReadonlySet<string> = new Set(['String', 'Integer', 'Float', 'Boolean', 'BitString', 'A_Const', 'ColumnRef', 'ParamRef',
  'A_Star', 'TypeName', 'RoleSpec', 'SQLValueFunction']);
