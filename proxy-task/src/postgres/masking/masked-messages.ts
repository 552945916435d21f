/**
 * What the relay does to server messages on a masked target, besides rows: error and notice fields and
 * other free text through the detectors (with a constraint violation's quoted values withheld on tables
 * with rules), COPY ... TO STDOUT rows by their columns' rules, and the refusals masking adds.
 */
import type { Decision } from '../../../../core/policy/decision.ts';
import { describeCopyOut, type CopyOutShape } from '../../../../core/sql/copy-statement.ts';
import type { StatementClass } from '../../../../core/sql/classify.ts';
import { ServerMessage } from '../protocol-codes.ts';
import { encodeServerMessage } from '../server-scanner.ts';
import { joinCopyRow, splitCopyRow } from './copy-rows.ts';
import type { MaskingCatalog, ResolvedRule, RuledRelation } from './masking-catalog.ts';
import type { ResultMasker } from './result-masker.ts';

/** How a masked target's COPY ... TO STDOUT rows are masked: the COPY's shape and each column's rule. */
export interface CopyOutPlan {
  readonly shape: CopyOutShape;
  readonly rules: readonly (ResolvedRule | undefined)[] | undefined;
}

/**
 * How the rows of a COPY ... TO STDOUT on a masked target are masked, or why it is refused: binary COPY
 * (its values cannot carry a placeholder), `COPY (query)` over a relation with rules (its columns cannot be
 * traced without a RowDescription; SELECT can), a table name that means ruled relations of different shapes.
 */
export function planCopyOut(catalog: MaskingCatalog, s: StatementClass): CopyOutPlan | string {
  const shape = describeCopyOut(s.text);
  if (!shape) return 'this COPY cannot be read';
  if (shape.format === 'binary') return 'binary COPY ... TO STDOUT is not available on a target with masking; use the text or CSV format';
  if (!shape.relation) {
    const ruled = s.tables.some((t) => catalog.relationsNamed(t.slice(t.lastIndexOf('.') + 1)).length > 0);
    return ruled ? 'COPY (query) TO STDOUT over a table with masked columns is not available; use SELECT, or COPY the table itself' : { shape, rules: undefined };
  }
  const candidates = catalog.relationsNamed(shape.relation.name, shape.relation.schema);
  if (candidates.length === 0) return { shape, rules: undefined };
  const rulesOf = (r: RuledRelation): (ResolvedRule | undefined)[] | undefined => {
    if (!shape.columns) return r.columns.map((c) => c.rule);
    const byName = new Map(r.columns.map((c) => [c.name, c.rule]));
    return shape.columns.every((c) => byName.has(c)) ? shape.columns.map((c) => byName.get(c)) : undefined;
  };
  const plans = candidates.map(rulesOf);
  const first = plans[0];
  const same = first !== undefined && plans.every((p) => p !== undefined && p.length === first.length && p.every((r, k) => r?.source === first[k]?.source));
  return same ? { shape, rules: first } : 'this COPY names a table with masked columns ambiguously; qualify it with its schema';
}

/** An ErrorResponse or NoticeResponse with its texts through the detectors. */
export function maskedFields(masker: ResultMasker, type: number, body: Buffer): Buffer {
  const fields = decodeFieldList(body);
  // A constraint violation on a table with rules quotes its values positionally ("Failing row contains
  // (1, null, 123457, ...)", "Key (salary)=(123457)"): no rule can follow a value there, so they are withheld.
  const table = fields.find(([code]) => code === 't')?.[1];
  const withhold = table !== undefined && masker.hasRulesFor(table);
  return encodeServerMessage(
    type,
    encodeFieldsBody(
      fields.map(([code, value]) => [code, withhold && code === 'D' ? withheldDetail(value, table!) : MASKED_FIELDS.has(code) ? masker.maskMessageText(value) : value]),
    ),
  );
}

/** One row (not the header line) of COPY TO output, masked. */
export function maskedCopyRow(masker: ResultMasker, plan: CopyOutPlan, body: Buffer): Buffer {
  const text = body.toString('utf8');
  const newline = text.endsWith('\n') ? '\n' : '';
  const values = splitCopyRow(newline ? text.slice(0, -1) : text, plan.shape);
  const masked = masker.maskValues(values, plan.rules);
  return encodeServerMessage(ServerMessage.copyData, Buffer.from(joinCopyRow(masked, plan.shape) + newline, 'utf8'));
}

/** A message made of C strings (after `skip` bytes) with the strings at `indexes` through the detectors. */
export function maskedCStrings(masker: ResultMasker, type: number, body: Buffer, skip: number, indexes: readonly number[]): Buffer {
  const strings: string[] = [];
  for (let at = skip; at < body.length; ) {
    const end = body.indexOf(0, at);
    if (end < 0) break;
    strings.push(body.toString('utf8', at, end));
    at = end + 1;
  }
  const masked = strings.map((v, k) => (indexes.includes(k) ? masker.maskMessageText(v) : v));
  return encodeServerMessage(type, Buffer.concat([body.subarray(0, skip), Buffer.from(masked.map((v) => `${v.replace(/\0/g, '')}\0`).join(''), 'utf8')]));
}

/** Error and notice fields that may quote a value: message, detail, hint, context, internal query, and the schema, table, column, type and constraint names (RAISE ... USING can put any text there). */
const MASKED_FIELDS = new Set(['M', 'D', 'H', 'W', 'q', 's', 't', 'c', 'd', 'n']);

export function copyRefusal(reason: string): Decision {
  return Object.freeze({ effect: 'deny', policies: Object.freeze(['builtin.masking']), reason });
}

/** The DETAIL of an error on a table with rules, with the values it quotes withheld. */
function withheldDetail(detail: string, table: string): string {
  const note = `values withheld: table "${table}" has masked columns`;
  if (/^Failing row contains \(/.test(detail)) return `Failing row contains (${note}).`;
  const key = /^Key \((.*?)\)=\(/s.exec(detail);
  if (key) return `Key (${key[1]})=(${note}) ${/\) (already exists|is not present in table .*|conflicts with .*)\.?$/s.exec(detail)?.[1] ?? ''}`.trimEnd() + '.';
  return /=\(|\(.*,.*\)/s.test(detail) ? note : detail;
}

export function maskingRefusal(reason: string): Decision {
  return Object.freeze({ effect: 'deny', policies: Object.freeze(['builtin.masking-strict']), reason });
}

export /** `public.people` → `people`: the confinement check matches tables by bare name. */
function bareNames(tables: readonly string[]): string[] {
  return tables.map((t) => t.slice(t.lastIndexOf('.') + 1).replace(/^"|"$/g, ''));
}

/** Every field of an ErrorResponse / NoticeResponse body, in order. */
function decodeFieldList(body: Buffer): [string, string][] {
  const out: [string, string][] = [];
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    out.push([String.fromCharCode(body[i]!), body.toString('utf8', i + 1, end)]);
    i = end + 1;
  }
  return out;
}

function encodeFieldsBody(fields: readonly [string, string][]): Buffer {
  return Buffer.from(`${fields.map(([c, v]) => `${c}${v.replace(/\0/g, '')}\0`).join('')}\0`, 'utf8');
}

