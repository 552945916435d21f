/**
 * How Warden's requests look to Cedar: the agent and its groups as entities, the target as the
 * resource, the action from the statement's operation class and the classification as the context.
 * The shapes here and `policies/warden.cedarschema` must agree; strict validation of the request in the
 * tests keeps them together.
 */
import type { Context, EntityJson, EntityUidJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { Principal } from '../identity/principal.ts';
import type { SqlOperation, StatementClass } from '../sql/classify.ts';
import type { TargetRef } from './decision.ts';

export const NAMESPACE = 'Warden';
const AGENT = `${NAMESPACE}::Agent`;
const GROUP = `${NAMESPACE}::Group`;
const TARGET = `${NAMESPACE}::Target`;
const ACTION = `${NAMESPACE}::Action`;

export type ActionName = 'connect' | `sql.${SqlOperation}`;

export function actionUid(name: ActionName): EntityUidJson {
  return { type: ACTION, id: name };
}

export function statementAction(s: StatementClass): ActionName {
  return `sql.${s.operation}`;
}

export function agentUid(p: Principal): EntityUidJson {
  return { type: AGENT, id: p.subject };
}

export function targetUid(t: TargetRef): EntityUidJson {
  return { type: TARGET, id: t.name };
}

/** The agent with its groups as parents, and the groups themselves. */
export function principalEntities(p: Principal): EntityJson[] {
  const groups = [...new Set(p.groups)];
  return [
    { uid: agentUid(p), attrs: { issuer: p.issuer, subject: p.subject }, parents: groups.map((g) => ({ type: GROUP, id: g })) },
    ...groups.map((g): EntityJson => ({ uid: { type: GROUP, id: g }, attrs: {}, parents: [] })),
  ];
}

export function targetEntity(t: TargetRef): EntityJson {
  return { uid: targetUid(t), attrs: { name: t.name, kind: t.kind, environment: t.environment }, parents: [] };
}

/** The context of a SQL action (schema type `Statement`). */
export function statementContext(s: StatementClass, approved: boolean): Context {
  return {
    approved,
    command: s.command,
    readOnly: s.readOnly,
    tables: [...s.tables],
    tableNames: bareNames(s.tables),
    functions: [...s.functions],
    functionNames: bareNames(s.functions),
    risks: [...s.risks],
  };
}

/** The context of `connect` (schema type `Session`). */
export function sessionContext(approved: boolean): Context {
  return { approved };
}

/** "pg_catalog.pg_read_file" → "pg_read_file": a policy naming a function or table matches however it was qualified. */
function bareNames(names: readonly string[]): string[] {
  return [...new Set(names.map((n) => n.slice(n.lastIndexOf('.') + 1)))];
}
