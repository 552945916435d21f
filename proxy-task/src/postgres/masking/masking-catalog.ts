/**
 * Where a target's masked columns live: the column rules (`schema.table.column`) resolved to table OIDs
 * and attribute numbers, the two things RowDescription says of each result column. With them a column is
 * traced to its source whatever the query calls it (`SELECT ssn AS x`, `SELECT *`, joins, subqueries),
 * without parsing the query.
 *
 * Loaded from the target's catalog with the target credential before the first session is relayed,
 * and again after DDL on the target (a table dropped and created again has a new OID). If it cannot be
 * loaded, sessions to the target are refused: without it, masked columns could not be recognised.
 */
import type { ColumnRule, MaskStrategy } from '../../../../core/masking/vocabulary.ts';

export interface ResolvedRule {
  /** `schema.table.column` as configured. */
  readonly source: string;
  readonly strategy: MaskStrategy;
}

/** Runs one catalog query on the target (node-postgres shaped). */
export type CatalogQuery = (sql: string, params: unknown[]) => Promise<{ rows: Record<string, unknown>[] }>;

/** Every column of the relations that rules name (all of them: COPY writes a table's columns in order). */
const RULE_COLUMNS_SQL = `
SELECT c.oid::int8 AS oid, a.attnum::int4 AS attnum, n.nspname, c.relname, a.attname
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attnum > 0 AND NOT a.attisdropped
   AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
 ORDER BY c.oid, a.attnum`;

/** A relation with rules: its columns in order, each with its rule if it has one. */
export interface RuledRelation {
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly { readonly name: string; readonly rule?: ResolvedRule }[];
}

export class MaskingCatalog {
  private byTable = new Map<number, Map<number, ResolvedRule>>();
  private relations: RuledRelation[] = [];
  private loading: Promise<void> | undefined;
  private loadedAt = 0;
  private missing: string[] = [];

  constructor(
    private readonly rules: readonly ColumnRule[],
    private readonly query: CatalogQuery,
  ) {}

  /** Rules whose column does not exist on the target (yet): reported, never an error. */
  get unresolved(): readonly string[] {
    return this.missing;
  }

  /** The rule of a result column, by its RowDescription table OID and attribute number. */
  lookup(tableOid: number, attnum: number): ResolvedRule | undefined {
    return tableOid === 0 ? undefined : this.byTable.get(tableOid)?.get(attnum);
  }

  /**
   * The ruled relations a name may mean: the one of that schema, or for an unqualified name every ruled
   * relation of that name (the session's search_path is not known here).
   */
  relationsNamed(name: string, schema?: string): readonly RuledRelation[] {
    return this.relations.filter((r) => r.name === name && (schema === undefined || r.schema === schema));
  }

  /** Loads the rule map if it was never loaded or is older than `maxAgeMs`. */
  ensureFresh(maxAgeMs: number): Promise<void> {
    if (this.loadedAt > 0 && Date.now() - this.loadedAt <= maxAgeMs) return Promise.resolve();
    return this.refresh();
  }

  /** Reloads the rule map (concurrent callers share one load). */
  refresh(): Promise<void> {
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async load(): Promise<void> {
    if (this.rules.length === 0) {
      this.loadedAt = Date.now();
      return;
    }
    const { rows } = await this.query(RULE_COLUMNS_SQL, [this.rules.map((r) => r.schema), this.rules.map((r) => r.table)]);
    const next = new Map<number, Map<number, ResolvedRule>>();
    const relations = new Map<number, { schema: string; name: string; columns: { name: string; rule?: ResolvedRule }[] }>();
    const found = new Set<string>();
    for (const row of rows) {
      const oid = Number(row.oid);
      const [schema, name, column] = [String(row.nspname), String(row.relname), String(row.attname)];
      let relation = relations.get(oid);
      if (!relation) relations.set(oid, (relation = { schema, name, columns: [] }));
      const source = `${schema}.${name}.${column}`;
      const rule = this.rules.find((r) => `${r.schema}.${r.table}.${r.column}` === source);
      if (!rule) {
        relation.columns.push({ name: column });
        continue;
      }
      found.add(source);
      const resolved: ResolvedRule = { source, strategy: rule.strategy };
      relation.columns.push({ name: column, rule: resolved });
      let cols = next.get(oid);
      if (!cols) next.set(oid, (cols = new Map()));
      cols.set(Number(row.attnum), resolved);
    }
    this.byTable = next;
    this.relations = [...relations.values()];
    this.missing = this.rules.map((r) => `${r.schema}.${r.table}.${r.column}`).filter((s) => !found.has(s));
    this.loadedAt = Date.now();
  }
}
