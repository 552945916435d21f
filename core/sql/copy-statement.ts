/**
 * The shape of a `COPY ... TO STDOUT`: what it copies (a table and its columns, or a query) and how the
 * rows are written (format, delimiter, NULL string, quote and escape characters), so that the rows the
 * server streams can be taken apart, masked and put back together.
 * @see https://www.postgresql.org/docs/current/sql-copy.html
 */
import { parseSql } from './parser.ts';
import { isObj, type Obj } from './walk.ts';

export interface CopyOutShape {
  /** The table copied (as written), or undefined for `COPY (query)`. */
  readonly relation?: { readonly schema?: string; readonly name: string };
  /** Columns named in `COPY t (a, b)`; undefined: all of the table's columns, in order. */
  readonly columns?: readonly string[];
  readonly format: 'text' | 'csv' | 'binary';
  readonly delimiter: string;
  readonly nullString: string;
  readonly quote: string;
  readonly escape: string;
  readonly header: boolean;
}

/** The COPY ... TO STDOUT of a one-statement text, or undefined when the text is not one. */
export function describeCopyOut(sql: string): CopyOutShape | undefined {
  let stmt: Obj | undefined;
  try {
    const parsed = parseSql(sql) as unknown as { stmts?: { stmt?: unknown }[] };
    if (parsed.stmts?.length !== 1) return undefined;
    const s = parsed.stmts[0]?.stmt;
    stmt = isObj(s) && isObj(s.CopyStmt) ? s.CopyStmt : undefined;
  } catch {
    return undefined;
  }
  if (!stmt || stmt.is_from === true || typeof stmt.filename === 'string') return undefined;
  const options = new Map<string, string | true>();
  for (const o of Array.isArray(stmt.options) ? stmt.options : []) {
    const d = isObj(o) && isObj(o.DefElem) ? o.DefElem : undefined;
    if (!d || typeof d.defname !== 'string') continue;
    const arg = isObj(d.arg) && isObj(d.arg.String) && typeof d.arg.String.sval === 'string' ? d.arg.String.sval : true;
    options.set(d.defname.toLowerCase(), arg);
  }
  const fmt = options.get('format');
  const format = fmt === 'csv' ? 'csv' : fmt === 'binary' ? 'binary' : 'text';
  const str = (k: string, dflt: string): string => {
    const v = options.get(k);
    return typeof v === 'string' ? v : dflt;
  };
  const rel = isObj(stmt.relation) ? stmt.relation : undefined;
  const columns = Array.isArray(stmt.attlist)
    ? stmt.attlist.map((a) => (isObj(a) && isObj(a.String) && typeof a.String.sval === 'string' ? a.String.sval : '')).filter(Boolean)
    : undefined;
  const quote = str('quote', '"');
  return {
    ...(rel && typeof rel.relname === 'string' ? { relation: { ...(typeof rel.schemaname === 'string' ? { schema: rel.schemaname } : {}), name: rel.relname } } : {}),
    ...(columns ? { columns } : {}),
    format,
    delimiter: str('delimiter', format === 'csv' ? ',' : '\t'),
    nullString: str('null', format === 'csv' ? '' : '\\N'),
    quote,
    escape: str('escape', quote),
    header: options.has('header') && options.get('header') !== 'false',
  };
}
