/**
 * The walk of a statement's parse tree: accumulates the operation, relations, functions and risks found
 * anywhere inside it. Statements nested in it, and SQL text found in it, are classified as statements of
 * their own by the Classifier (`classifier.ts`), which extends this walk.
 */
import { RiskFlag, type StatementClass } from './classification.ts';
import { functionRules, LEXICAL_SETTINGS, ROLE_SETTINGS, SENSITIVE_SETTINGS, SQL_TEXT_ARGS } from './function-catalogue.ts';
import { NestedStatementSpans, type Span } from './nested-statement-spans.ts';
import { DATA_MODIFYING, DDL_PREFIX, LEAVES, RELATION_OBJECTS, STMT } from './statement-catalogue.ts';
import { bump, Merge, mergeInto, type Acc } from './statement-findings.ts';
import { asNode, constString, fieldsOf, isObj, listItems, OffsetMap, optionBool, stringList, type Obj } from './walk.ts';

const R = RiskFlag;

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

/** CTE names visible at a point of the walk. */
export interface Scope { readonly names: ReadonlySet<string>; readonly parent: Scope | undefined }

/**
 * The walk over the parse trees of one text. Classifying a nested statement node or a piece of SQL text as
 * a statement of its own, and reading routine bodies, are left to the subclass.
 */
export abstract class StatementVisitor {
  protected readonly offsets: OffsetMap;
  /** Where nested statements are written in `sql`. */
  protected readonly spans: NestedStatementSpans;

  constructor(protected readonly sql: string) {
    this.offsets = new OffsetMap(sql);
    this.spans = new NestedStatementSpans(sql, this.offsets);
  }

  /** Classifies the statement node `type`/`f`, written at `span` of `sql`, as a statement of its own. */
  protected abstract statement(type: string, f: Obj, span: Span, scope: Scope | undefined): StatementClass;

  /** Classifies SQL text found inside the statement of `acc` and merges it into `acc`. */
  protected abstract subText(text: string, at: number | undefined, acc: Acc, mode: Merge, flagFailure?: boolean): void;

  /** Looks into DO / CREATE FUNCTION bodies. */
  protected abstract routineBody(kind: 'do' | 'function', f: Obj, acc: Acc): void;

  /** Classifies `v` (a wrapped statement node) as its own statement and merges it into `acc`. */
  protected child(v: unknown, acc: Acc, span: Span | undefined, scope: Scope | undefined, mode: Merge): void {
    const n = asNode(v);
    if (!n) return;
    mergeInto(acc, this.statement(n[0], n[1], span ?? acc.span, scope), mode);
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
      if (f && q && DATA_MODIFYING.has(q[0])) this.child(f.ctequery, acc, this.spans.cteSpan(f.location), s, Merge.exec);
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
    if (isTarget && rel === 'pg_settings') {
      // UPDATE pg_settings is set_config() for any setting named by the row filter: role, read-only, lexical.
      acc.risks.add(R.set_role);
      acc.risks.add(R.sensitive_setting);
      acc.risks.add(R.lexical_setting);
      acc.sideEffect = true;
    }
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
      if (setting === undefined || LEXICAL_SETTINGS.has(setting)) acc.risks.add(R.lexical_setting);
    }
  }

  protected visit(type: string, f: Obj, acc: Acc, scope: Scope | undefined): void {
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
          mergeInto(acc, this.statement('SelectStmt', source, acc.span, scope), Merge.exec);
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
        if (f.subtype === 'AT_ChangeOwner') {
          // Ownership carries every privilege on the table: a privilege change, like ALTER SCHEMA ... OWNER TO.
          bump(acc, 'privilege');
          acc.risks.add(R.grant_revoke);
        }
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
        this.child(f.query, acc, this.spans.explainSpan(acc.span), scope, analyze ? Merge.exec : Merge.plan);
        return;
      }
      case 'PrepareStmt':
        if (!asNode(f.query)) bump(acc, 'unknown');
        if (typeof f.name === 'string') acc.preparedName = f.name;
        this.child(f.query, acc, this.spans.afterKeyword(acc.span, 'as'), scope, Merge.exec);
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
        this.child(f.query, acc, this.spans.afterKeyword(acc.span, 'as', true), scope, Merge.exec);
        return;
      }
      case 'DeclareCursorStmt':
        bump(acc, 'read');
        this.child(f.query, acc, this.spans.afterKeyword(acc.span, 'for'), scope, Merge.exec);
        return;
      case 'RuleStmt': {
        bump(acc, 'ddl');
        if (isObj(f.relation)) this.addRangeVar(f.relation, acc, undefined, true);
        this.walk(f.whereClause, acc, undefined);
        const actions = Array.isArray(f.actions) ? f.actions : [];
        const spans = this.spans.ruleSpans(acc.span, actions.length);
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
        this.child(f.query, acc, this.spans.copySpan(acc.span), scope, Merge.exec);
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
      case 'DeallocateStmt':
        this.otherStatement(type, acc);
        if (typeof f.name === 'string') acc.preparedName = f.name; // absent: DEALLOCATE ALL
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
    } else if (LEXICAL_SETTINGS.has(name)) {
      acc.risks.add(R.lexical_setting);
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

  /** Offset of a string literal's text inside the statement, when it is written there unescaped. */
  private locateLiteral(text: string, acc: Acc): number | undefined {
    const at = this.sql.indexOf(text, acc.span.start);
    return at >= 0 && at + text.length <= acc.span.end ? at : undefined;
  }
}
