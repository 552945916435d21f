/**
 * Strict masking: a ruled column's values may reach the agent only where masking can see them.
 *
 * Masking traces a result column to its source through RowDescription, and PostgreSQL only names a source
 * for a column that is the source column itself: a bare column in the select list, also through CTEs and
 * subqueries in FROM. Once a query wraps a ruled column in an expression (`salary + 0`, `md5(ssn)`,
 * `row_to_json(p)`, `ssn || 'x'`), a set operation, a scalar subquery, or writes it elsewhere (INSERT ...
 * SELECT, CREATE TABLE AS, a view, UPDATE ... SET other = ssn), the value comes back under no name, and
 * only the content detectors are left — which cannot know a salary, a reversed SSN or a hex string.
 *
 * So on a target whose masking is strict, each statement over a table with rules is checked on its parse
 * tree, and refused when a ruled column (or a whole row, or `*`, of such a table) appears anywhere but:
 *  - bare in the select list of a query whose rows the agent receives (or of a CTE / FROM subquery of it);
 *  - in a filter as a direct operand of `=`, `<>`, `IN`, `IS [NOT] NULL`, or bare in ORDER BY / GROUP BY.
 * A function, cast or arithmetic over a ruled column inside a filter is refused too: an error message can
 * quote the value (`invalid input syntax for type integer: "…"`) and a function can send it elsewhere
 * (`pg_notify`). Range comparisons and LIKE are refused: each answer halves what is left to guess.
 *
 * Deliberately conservative: a name is treated as ruled when it could refer to a ruled column (the check
 * has no catalog, so `ssn` of another table in the same statement counts), and names that a CTE or subquery
 * gives to ruled columns are ruled as well. Procedural code (DO, CREATE FUNCTION, CALL) is refused: not
 * every read in a body can be seen. What it cannot see: views that already exist over ruled tables
 * (give the view its own rules), functions that read the table inside their body, and the statistics
 * catalogs (refused outright, since they hold sample values of every column).
 */
import { parseSql } from '../sql/parser.ts';
import { asNode, fieldsOf, isObj, listItems, stringList, type Obj } from '../sql/walk.ts';
import type { ColumnRule } from './vocabulary.ts';

export interface ConfinementBreach {
  /** The column (or `table.*`) that would escape. */
  readonly column: string;
  /** What the statement does with it, in words for the agent's author. */
  readonly use: string;
}

/** Catalogs that hold values of columns (most common values, histogram bounds). */
const STATISTICS_CATALOGS = new Set(['pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs', 'pg_statistic', 'pg_statistic_ext_data']);

/** Operators a filter may apply to a ruled column: each answer tells one value, not a range. */
const EQUALITY_OPERATORS = new Set(['=', '<>', '!=']);

export class MaskingConfinement {
  /** table name → ruled column names (by bare name: the check has no search_path). */
  private readonly byTable = new Map<string, Set<string>>();
  private readonly cache = new Map<string, ConfinementBreach | null>();

  constructor(rules: readonly Pick<ColumnRule, 'table' | 'column'>[]) {
    for (const r of rules) {
      let s = this.byTable.get(r.table);
      if (!s) this.byTable.set(r.table, (s = new Set()));
      s.add(r.column);
    }
  }

  /** Bare table names (as the classifier reports them) that hold ruled columns. */
  get ruledTables(): ReadonlySet<string> {
    return new Set(this.byTable.keys());
  }

  /**
   * The first use of a ruled column in `sql` (one statement) that masking could not follow, or undefined.
   * `tableNames`: the statement's tables as classified (procedural bodies included), to skip parsing
   * statements that touch none. `procedural`: the statement runs or defines code (DO, CREATE FUNCTION),
   * whose use of a ruled table cannot be followed from here.
   */
  check(sql: string, tableNames: readonly string[], procedural = false): ConfinementBreach | undefined {
    if (procedural) {
      // A body's statements are not all visible from here (RAISE ... USING, EXECUTE of a string built at
      // run time, which can spell a table name in pieces): any procedural code could read a ruled table.
      return { column: '(any)', use: 'could be read by procedural code (DO, a function body), which masking cannot follow' };
    }
    if (!tableNames.some((t) => this.byTable.has(t) || STATISTICS_CATALOGS.has(t))) return undefined;
    const hit = this.cache.get(sql);
    if (hit !== undefined) return hit ?? undefined;
    let breach: ConfinementBreach | undefined;
    try {
      breach = new StatementCheck(this.byTable).run(sql);
    } catch {
      breach = { column: '(unknown)', use: 'the statement could not be read' }; // fail closed
    }
    if (this.cache.size >= 2000) this.cache.clear();
    if (sql.length <= 8192) this.cache.set(sql, breach ?? null);
    return breach;
  }
}

class Breach extends Error {
  constructor(readonly breach: ConfinementBreach) {
    super(breach.use);
  }
}

class StatementCheck {
  /** Aliases and names of ruled tables in this statement → their ruled columns. */
  private readonly ruledAliases = new Map<string, Set<string>>();
  /** Aliases of relations that are not ruled tables. */
  private readonly plainAliases = new Set<string>();
  /** Every name under which a ruled value may travel: ruled columns, and what queries rename them to. */
  private readonly ruledNames = new Set<string>();
  /** CTE names and subquery aliases whose output carries ruled values. */
  private readonly derivedAliases = new Set<string>();

  constructor(private readonly byTable: ReadonlyMap<string, ReadonlySet<string>>) {}

  run(sql: string): ConfinementBreach | undefined {
    const stmts = parseSql(sql).stmts ?? [];
    try {
      for (const s of stmts) {
        this.collectRelations(s.stmt);
        if (this.ruledAliases.size === 0) continue;
        this.collectDerivedNames(s.stmt);
        this.statement(s.stmt);
      }
    } catch (err) {
      if (err instanceof Breach) return err.breach;
      throw err;
    }
    return undefined;
  }

  // ---- names ---------------------------------------------------------------------------------------

  private collectRelations(node: unknown): void {
    walkAll(node, (type, f) => {
      if (type !== 'RangeVar' || typeof f.relname !== 'string') return;
      if (STATISTICS_CATALOGS.has(f.relname)) throw new Breach({ column: f.relname, use: `${f.relname} holds sample values of every column, masked ones included` });
      const alias = fieldsOf(f.alias, 'Alias')?.aliasname;
      const cols = this.byTable.get(f.relname);
      const names = [f.relname, ...(typeof alias === 'string' ? [alias] : [])];
      if (cols) {
        for (const n of names) this.ruledAliases.set(n, new Set(cols));
        for (const c of cols) this.ruledNames.add(c);
      } else {
        for (const n of names) this.plainAliases.add(n);
      }
    });
  }

  /** Output names of ruled values, through CTEs and subqueries, until nothing new is learnt. */
  private collectDerivedNames(root: unknown): void {
    for (let round = 0; round < 8; round++) {
      const before = this.ruledNames.size + this.derivedAliases.size;
      walkAll(root, (type, f) => {
        if (type === 'CommonTableExpr' && typeof f.ctename === 'string' && this.outputsRuled(f.ctequery)) {
          this.derivedAliases.add(f.ctename);
          for (const c of stringList(f.aliascolnames)) this.ruledNames.add(c);
        }
        if (type === 'RangeSubselect' && this.outputsRuled(f.subquery)) {
          const alias = fieldsOf(f.alias, 'Alias');
          if (alias && typeof alias.aliasname === 'string') this.derivedAliases.add(alias.aliasname);
          for (const c of stringList(alias?.colnames)) this.ruledNames.add(c);
        }
      });
      if (this.ruledNames.size + this.derivedAliases.size === before) return;
    }
  }

  /** Does a query's select list output a ruled value under a name (adding the name)? */
  private outputsRuled(query: unknown): boolean {
    const sel = fieldsOf(query, 'SelectStmt');
    if (!sel) return query !== undefined; // INSERT ... RETURNING and the like: assume so
    if (sel.op !== undefined && sel.op !== 'SETOP_NONE') return this.outputsRuled(sel.larg) || this.outputsRuled(sel.rarg);
    let any = false;
    for (const t of listItems(sel.targetList)) {
      const rt = fieldsOf(t, 'ResTarget');
      if (!rt) continue;
      const ref = this.ruledRef(rt.val);
      if (ref) {
        any = true;
        const name = typeof rt.name === 'string' ? rt.name : ref.name;
        if (name) this.ruledNames.add(name);
      }
    }
    return any;
  }

  /** If `v` is a ColumnRef that may carry a ruled value: what it names. */
  private ruledRef(v: unknown): { label: string; name?: string; wholeRow: boolean } | undefined {
    const ref = fieldsOf(v, 'ColumnRef');
    if (!ref || !asNode(v)) return undefined;
    const fields = listItems(ref.fields);
    const last = fields[fields.length - 1];
    const star = asNode(last)?.[0] === 'A_Star';
    const names = stringList(fields);
    if (star) {
      if (names.length === 0) return { label: '*', wholeRow: true }; // only asked when some table is ruled
      const qual = names[names.length - 1]!;
      return this.isRuledQualifier(qual) ? { label: `${qual}.*`, wholeRow: true } : undefined;
    }
    const name = names[names.length - 1]!;
    if (names.length === 1) {
      if (this.ruledNames.has(name)) return { label: name, name, wholeRow: false };
      if (this.ruledAliases.has(name) || this.derivedAliases.has(name)) return { label: name, name, wholeRow: true }; // `SELECT p FROM people p`
      return undefined;
    }
    const qual = names[names.length - 2]!;
    const cols = this.ruledAliases.get(qual);
    if (cols?.has(name)) return { label: `${qual}.${name}`, name, wholeRow: false };
    if (!this.plainAliases.has(qual) && !cols && this.ruledNames.has(name)) return { label: `${qual}.${name}`, name, wholeRow: false };
    if (this.derivedAliases.has(qual) && this.ruledNames.has(name)) return { label: `${qual}.${name}`, name, wholeRow: false };
    return undefined;
  }

  private isRuledQualifier(qual: string): boolean {
    return this.ruledAliases.has(qual) || this.derivedAliases.has(qual) || !this.plainAliases.has(qual);
  }

  // ---- positions -----------------------------------------------------------------------------------

  private statement(node: unknown): void {
    const n = asNode(node);
    if (!n) return;
    const [type, f] = n;
    switch (type) {
      case 'SelectStmt':
        return this.select(f, f.intoClause === undefined, 'is written into a new table');
      case 'DeclareCursorStmt':
      case 'ExplainStmt':
        return this.statement(f.query);
      case 'PrepareStmt':
        return this.statement(f.query);
      case 'InsertStmt':
        this.withClause(f.withClause);
        if (f.selectStmt !== undefined) this.select(fieldsOf(f.selectStmt, 'SelectStmt') ?? {}, false, 'is inserted into a table');
        this.returning(f);
        return this.filter(fieldsOf(f.onConflictClause, 'OnConflictClause')?.whereClause);
      case 'UpdateStmt':
        this.withClause(f.withClause);
        for (const t of listItems(f.targetList)) this.exposed(fieldsOf(t, 'ResTarget')?.val, 'is copied by UPDATE ... SET');
        this.from(f.fromClause, false);
        this.filter(f.whereClause);
        return this.returning(f);
      case 'DeleteStmt':
        this.withClause(f.withClause);
        this.from(f.usingClause, false);
        this.filter(f.whereClause);
        return this.returning(f);
      case 'MergeStmt':
        return this.exposed(node, 'is used by MERGE');
      case 'CreateTableAsStmt':
        return this.select(fieldsOf(f.query, 'SelectStmt') ?? {}, false, 'is written into a new table');
      case 'ViewStmt':
        return this.select(fieldsOf(f.query, 'SelectStmt') ?? {}, false, 'is exposed by a view without masking rules');
      case 'CopyStmt':
        if (f.query !== undefined) return this.select(fieldsOf(f.query, 'SelectStmt') ?? {}, false, 'is copied by COPY (query)');
        return;
      case 'RenameStmt': {
        const rel = fieldsOf(f.relation, 'RangeVar');
        if (rel && typeof rel.relname === 'string' && this.byTable.has(rel.relname)) {
          throw new Breach({ column: `${rel.relname}.*`, use: 'would be renamed, and masking rules name tables and columns' });
        }
        return;
      }
      case 'AlterTableStmt': {
        const rel = fieldsOf(f.relation, 'RangeVar');
        if (rel && typeof rel.relname === 'string' && this.byTable.has(rel.relname)) {
          throw new Breach({ column: `${rel.relname}.*`, use: 'would be altered (a changed column escapes its rule)' });
        }
        return;
      }
      default:
        return this.exposed(node, 'is used in a way masking cannot follow');
    }
  }

  private withClause(w: unknown): void {
    const wc = fieldsOf(w, 'WithClause');
    for (const c of listItems(wc?.ctes)) {
      const cte = fieldsOf(c, 'CommonTableExpr');
      if (!cte) continue;
      const q = asNode(cte.ctequery);
      if (q && q[0] === 'SelectStmt') this.select(q[1], true, 'is returned inside an expression');
      else this.statement(cte.ctequery);
    }
  }

  /**
   * A query. `traced`: its rows reach the agent with RowDescription naming their sources, so bare ruled
   * columns in its select list are masked. `use`: what happens to an untraced ruled value, for the message.
   */
  private select(sel: Obj, traced: boolean, use: string): void {
    this.withClause(sel.withClause);
    if (sel.op !== undefined && sel.op !== 'SETOP_NONE') {
      // The result of UNION / INTERSECT / EXCEPT names no source column.
      this.select(fieldsOf(sel.larg, 'SelectStmt') ?? {}, false, 'is returned through a set operation (UNION, INTERSECT, EXCEPT)');
      this.select(fieldsOf(sel.rarg, 'SelectStmt') ?? {}, false, 'is returned through a set operation (UNION, INTERSECT, EXCEPT)');
      this.orderings(sel.sortClause);
      return;
    }
    for (const v of listItems(sel.valuesLists)) this.exposed(v, 'is used in VALUES');
    for (const t of listItems(sel.targetList)) {
      const rt = fieldsOf(t, 'ResTarget');
      if (!rt) continue;
      const ref = this.ruledRef(rt.val);
      if (ref) {
        if (!traced) throw new Breach({ column: ref.label, use });
        if (ref.wholeRow && ref.label !== '*' && !ref.label.endsWith('.*')) throw new Breach({ column: ref.label, use: 'is returned as a whole row, which names no column' });
        if (ref.label === '*' || ref.label.endsWith('.*')) continue; // `*` expands to bare columns: traced
        continue;
      }
      this.exposed(rt.val, traced ? 'is returned inside an expression' : use);
    }
    this.from(sel.fromClause, traced);
    this.filter(sel.whereClause);
    this.filter(sel.havingClause);
    for (const g of listItems(sel.groupClause)) if (!this.ruledRef(g)) this.exposed(g, 'is grouped by an expression');
    this.orderings(sel.sortClause);
    for (const d of listItems(sel.distinctClause)) if (isObj(d) && !this.ruledRef(d)) this.exposed(d, 'is used in DISTINCT ON');
    for (const w of listItems(sel.windowClause)) this.exposed(w, 'is used in a window');
    if (sel.limitCount !== undefined) this.exposed(sel.limitCount, 'is used in LIMIT');
    if (sel.limitOffset !== undefined) this.exposed(sel.limitOffset, 'is used in OFFSET');
  }

  private orderings(sortClause: unknown): void {
    for (const s of listItems(sortClause)) {
      const sb = fieldsOf(s, 'SortBy');
      if (sb && !this.ruledRef(sb.node)) this.exposed(sb.node, 'is sorted by an expression');
    }
  }

  private from(items: unknown, traced: boolean): void {
    for (const item of listItems(items)) {
      const n = asNode(item);
      if (!n) continue;
      const [type, f] = n;
      if (type === 'RangeVar') continue;
      if (type === 'RangeSubselect') this.select(fieldsOf(f.subquery, 'SelectStmt') ?? {}, traced, 'is returned inside an expression');
      else if (type === 'JoinExpr') {
        this.from([f.larg, f.rarg], traced);
        this.filter(f.quals);
      } else this.exposed(item, 'is passed to a function in FROM');
    }
  }

  /** A condition: ruled columns only as direct operands of equality, IN and IS NULL. */
  private filter(node: unknown): void {
    const n = asNode(node);
    if (!n) return;
    const [type, f] = n;
    switch (type) {
      case 'BoolExpr':
        for (const a of listItems(f.args)) this.filter(a);
        return;
      case 'NullTest':
        if (!this.ruledRef(f.arg)) this.exposed(f.arg, 'is tested inside an expression');
        return;
      case 'A_Expr': {
        const op = stringList(f.name).join('.');
        const equality = ((f.kind === 'AEXPR_OP' || f.kind === 'AEXPR_OP_ANY') && EQUALITY_OPERATORS.has(op)) || f.kind === 'AEXPR_IN';
        if (!equality) return this.exposed(node, 'is compared by range or pattern (each answer narrows the value)');
        for (const side of [f.lexpr, f.rexpr]) {
          for (const operand of asNode(side)?.[0] === 'List' || Array.isArray(side) ? listItems(side) : [side]) {
            if (!this.ruledRef(operand)) this.exposed(operand, 'is compared inside an expression');
          }
        }
        return;
      }
      case 'SubLink': {
        if (f.testexpr !== undefined && !this.ruledRef(f.testexpr)) this.exposed(f.testexpr, 'is compared inside an expression');
        const op = stringList(f.operName).join('.');
        const matching = f.subLinkType === 'EXISTS_SUBLINK' || (f.subLinkType === 'ANY_SUBLINK' && (op === '' || EQUALITY_OPERATORS.has(op)));
        if (!matching) {
          // ALL / ANY with a range operator, a scalar or array subquery: the value is compared or computed.
          if (f.testexpr !== undefined) this.exposed(f.testexpr, 'is compared by range with a subquery');
          return this.exposed(f.subselect, 'is compared by a subquery');
        }
        // EXISTS / IN (subquery): the subquery's rows are only matched, never shown.
        const sub = fieldsOf(f.subselect, 'SelectStmt');
        if (sub) this.select(sub, true, 'is compared inside an expression');
        return;
      }
      default:
        if (this.ruledRef(node)) return; // `WHERE flag_column` (a boolean used as is)
        return this.exposed(node, 'is used inside an expression in a condition');
    }
  }

  /**
   * RETURNING (`returningList`, or PostgreSQL 18's `returningClause.exprs`): refused for ruled columns even
   * when bare, since nothing here proves the server names their source.
   */
  private returning(stmt: Obj): void {
    const list = stmt.returningList ?? fieldsOf(stmt.returningClause, 'ReturningClause')?.exprs;
    for (const t of listItems(list)) this.exposed(fieldsOf(t, 'ResTarget')?.val ?? t, 'is returned by RETURNING');
  }

  /** Anything here that may carry a ruled value breaches. */
  private exposed(node: unknown, use: string): void {
    walkAll(node, (type, f, wrapped) => {
      if (type === 'ColumnRef') {
        const ref = this.ruledRef(wrapped);
        if (ref) throw new Breach({ column: ref.label, use });
      }
      if (type === 'SubLink') {
        this.exposed(f.testexpr, use);
        const sub = fieldsOf(f.subselect, 'SelectStmt');
        if (sub) this.select(sub, false, use);
        return false;
      }
      return undefined;
    });
  }
}

/**
 * Visits every wrapped node under `node` (depth first). The visitor returns false to skip a node's children.
 */
function walkAll(node: unknown, visit: (type: string, fields: Obj, wrapped: unknown) => boolean | void): void {
  const stack: unknown[] = [node];
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]);
      continue;
    }
    if (!isObj(v)) continue;
    const n = asNode(v);
    if (n) {
      if (visit(n[0], n[1], v) === false) continue;
      stack.push(n[1]);
      continue;
    }
    // Some fields hold a node's fields unwrapped; a relation (`INSERT INTO t`, `UPDATE t`) is one of them.
    if (typeof v.relname === 'string' && 'relpersistence' in v && visit('RangeVar', v, { RangeVar: v }) === false) continue;
    for (const k in v) stack.push(v[k]);
  }
}

