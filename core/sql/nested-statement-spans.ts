/**
 * Locates the text of a nested statement (a CTE body, the query of COPY / EXPLAIN / PREPARE / CTAS /
 * DECLARE, rule actions) inside the text of the statement that holds it, from the lexer's tokens: the
 * parse tree does not say where most nested statements start and end.
 */
import { scanSql } from './parser.ts';
import type { OffsetMap } from './walk.ts';

/** String offsets in the classifier's text, end exclusive. */
export interface Span { start: number; end: number }
interface Tok { start: number; end: number; t: string } // t: lower-cased token text

/** Span finders over one text; the text is scanned once, on first use. */
export class NestedStatementSpans {
  private tokens: Tok[] | undefined;

  constructor(private readonly sql: string, private readonly offsets: OffsetMap) {}

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
  cteSpan(location: unknown): Span | undefined {
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
  copySpan(span: Span): Span | undefined {
    const [from, to] = this.range(span);
    if (this.toks()[from + 1]?.t !== '(') return undefined;
    const close = this.closeParen(from + 1, to);
    return close < 0 ? undefined : this.tokSpan(from + 2, close);
  }

  /** Rest of the statement after the first top-level `kw` (PREPARE .. AS, CREATE TABLE .. AS, DECLARE .. FOR). */
  afterKeyword(span: Span, kw: string, dropWithData = false): Span | undefined {
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
  explainSpan(span: Span): Span | undefined {
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
  ruleSpans(span: Span, count: number): Span[] | undefined {
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
