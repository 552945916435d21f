/**
 * What the walk accumulates for one statement, and how a nested statement's findings count for the
 * statement that holds it.
 */
import { RANK, type RiskFlag, type SqlOperation, type StatementClass } from './classification.ts';
import type { Span } from './nested-statement-spans.ts';

/** Findings of one statement so far; `span` is where it is written in the classifier's text. */
export interface Acc {
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
export const Merge = {
  /** Runs with the holder: everything counts and it is listed in `nested`. */
  exec: 'exec',
  /** Runs with the holder but is not a statement of its own (a PL/pgSQL expression). */
  inline: 'inline',
  /** Only planned (EXPLAIN without ANALYZE): relations and functions count, not its effects. */
  plan: 'plan',
  /** Stored to run later (a function body): only its risks count. */
  define: 'define',
} as const;
export type Merge = (typeof Merge)[keyof typeof Merge];

export function newAcc(span: Span): Acc {
  return { rank: -1, sideEffect: false, tables: new Set(), functions: new Set(), risks: new Set(), nested: [], span };
}

export function bump(acc: Acc, op: SqlOperation): void {
  if (RANK[op] > acc.rank) acc.rank = RANK[op];
}

/** Adds the findings of `child`, a statement nested in the one `acc` is for, as `mode` says they count. */
export function mergeInto(acc: Acc, child: StatementClass, mode: Merge): void {
  for (const r of child.risks) if (mode !== Merge.plan) acc.risks.add(r);
  if (mode === Merge.define) return;
  for (const t of child.tables) acc.tables.add(t);
  for (const fn of child.functions) acc.functions.add(fn);
  if (mode !== Merge.inline) acc.nested.push(child);
  if (mode === Merge.plan) return;
  bump(acc, child.operation);
  if (!child.readOnly) acc.sideEffect = true;
}
