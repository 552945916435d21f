/**
 * Classifies the statements of one text. SQL text found inside a statement (function and DO bodies,
 * constant arguments of functions that run SQL) gets a classifier of its own, whose findings count for
 * the statement that holds it.
 */
import { OPERATION_ORDER, READ_ONLY_MAX_RANK, RISK_ORDER, RiskFlag, type StatementClass } from './classification.ts';
import { commandOf } from './command-tag.ts';
import type { Span } from './nested-statement-spans.ts';
import { parsePlpgsql, parseSql } from './parser.ts';
import { Merge, mergeInto, newAcc, type Acc } from './statement-findings.ts';
import { StatementVisitor, type Scope } from './statement-visitor.ts';
import { asNode, constString, fieldsOf, isObj, listItems, type Obj } from './walk.ts';

const R = RiskFlag;

/** Classifies the statements of one text; sub-texts (function bodies) get a classifier of their own. */
export class Classifier extends StatementVisitor {
  /**
   * @param shift where `sql` starts in the Query text, when it is a slice of it (0 for the Query itself)
   * @param fallback the Query-text span to report when `sql` is not a slice of the Query
   */
  constructor(sql: string, private readonly shift: number | undefined, private readonly fallback: Span | undefined) {
    super(sql);
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

  protected override statement(type: string, f: Obj, span: Span, scope: Scope | undefined): StatementClass {
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

  // --- routine bodies ------------------------------------------------------------------------

  /** Looks into DO / CREATE FUNCTION bodies: DO runs now (exec), a function body runs later (define). */
  protected override routineBody(kind: 'do' | 'function', f: Obj, acc: Acc): void {
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
  protected override subText(text: string, at: number | undefined, acc: Acc, mode: Merge, flagFailure = true): void {
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
    for (const s of stmts) mergeInto(acc, s, mode);
  }

  /** `s` in Query-text offsets. */
  private reportSpan(s: Span): Span {
    if (this.shift !== undefined) return { start: s.start + this.shift, end: s.end + this.shift };
    return this.fallback ?? s;
  }
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
