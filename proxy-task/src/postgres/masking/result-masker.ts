/**
 * Masks one session's results as they stream: RowDescription says where each column comes from (a table
 * OID and attribute number, traced to a column rule) and how it is sent (text or binary); each DataRow's
 * cells are then rewritten by the column's rule, or run through the content detectors when no rule covers
 * them. Row by row: nothing is held beyond the row being rewritten.
 *
 * Binary format: text-like types (text, varchar, char, name, json, xml) are rewritten like text; jsonb
 * keeps its version byte; a column with a rule of any other type becomes NULL (its binary form cannot
 * carry a placeholder), and the detectors leave non-text binary cells alone.
 */
import { findSensitive } from '../../../../core/masking/detectors.ts';
import { detectorBits } from '../../../../core/masking/detectors.ts';
import { maskTextWith } from '../../../../core/masking/mask-text.ts';
import { maskValue } from '../../../../core/masking/strategies.ts';
import type { Detector, MaskingPolicy, MaskingSummary, MaskStrategy } from '../../../../core/masking/vocabulary.ts';
import type { VaultCell } from '../../../../core/masking/forensic-vault.ts';
import type { MaskingCatalog, ResolvedRule } from './masking-catalog.ts';
import { JSONB_TYPE, TEXT_LIKE_TYPES, type FieldDescription } from './result-messages.ts';

/** A masked cell's original, for the forensic vault. */
export type MaskedCell = VaultCell;

type ColumnPlan =
  | { readonly kind: 'rule'; readonly rule: ResolvedRule; readonly encoding: Encoding; readonly name: string }
  | { readonly kind: 'detect'; readonly encoding: Encoding; readonly name: string }
  | { readonly kind: 'none' };

/** How a cell's bytes hold its text: as they are, after jsonb's version byte, or not at all. */
type Encoding = 'text' | 'jsonb' | 'opaque';

const NONE: ColumnPlan = Object.freeze({ kind: 'none' });

export class ResultMasker {
  private plan: ColumnPlan[] | null = null;
  private rows = 0;
  private formats: readonly number[] = [];
  private sample: (string | null)[][] = [];
  private readonly columnCounts = new Map<string, { strategy: MaskStrategy; cells: number }>();
  private readonly detectorCounts = new Map<Detector, number>();
  private nulledBinary = 0;

  private sink: ((cell: MaskedCell) => void) | undefined;
  private readonly detectorSet: number;
  /** Pseudonyms of recent values: a keyed hash costs microseconds, and results repeat values. */
  private readonly pseudonyms = new Map<string, string>();
  /** Where each cell of the current DataRow starts in its body, and its length (-1: NULL); reused. */
  private starts = new Int32Array(16);
  private lengths = new Int32Array(16);

  constructor(
    private readonly policy: MaskingPolicy,
    private readonly catalog: MaskingCatalog,
    private readonly hashKey: Uint8Array,
  ) {
    this.detectorSet = detectorBits(policy.detectors);
  }

  /** Where each masked cell's original goes (the forensic vault). */
  onMasked(sink: (cell: MaskedCell) => void): void {
    this.sink = sink;
  }

  /** True while the current result has columns to rewrite. */
  get active(): boolean {
    return this.plan !== null;
  }

  /** A RowDescription: plans each column of the rows that follow. */
  describe(fields: readonly FieldDescription[]): void {
    const detect = this.policy.detectors.length > 0;
    let any = false;
    const plan = fields.map((f): ColumnPlan => {
      const encoding: Encoding = f.format === 0 || TEXT_LIKE_TYPES.has(f.typeOid) ? 'text' : f.typeOid === JSONB_TYPE ? 'jsonb' : 'opaque';
      const rule = this.catalog.lookup(f.tableOid, f.attnum);
      if (rule) {
        any = true;
        return { kind: 'rule', rule, encoding, name: f.name };
      }
      if (detect) {
        // A binary value of another type (text[], a record, bytea) can still hold text: looked at as bytes,
        // and sent as NULL when a detector finds something in it.
        any = true;
        return { kind: 'detect', encoding, name: f.name };
      }
      return NONE;
    });
    this.plan = any ? plan : null;
    this.formats = fields.map((f) => f.format);
  }

  /** The current result ended (CommandComplete, an error, ReadyForQuery): rows of a later one need its own description. */
  endResult(): void {
    this.plan = null;
  }

  /**
   * A DataRow body: the DataRow message to send in its place. Cells are looked at in place (offsets into
   * the body); only the cells that change are turned into new bytes, and the row is written once, with
   * the untouched cells copied as they came.
   */
  maskRow(body: Buffer): Buffer {
    const plan = this.plan;
    const n = body.readInt16BE(0);
    if (this.starts.length < n) {
      this.starts = new Int32Array(n * 2);
      this.lengths = new Int32Array(n * 2);
    }
    const { starts, lengths } = this;
    let at = 2;
    for (let i = 0; i < n; i++) {
      const len = body.readInt32BE(at);
      at += 4;
      starts[i] = at;
      lengths[i] = len;
      if (len > 0) {
        if (at + len > body.length) throw new RangeError('DataRow: cell runs past the message');
        at += len;
      }
    }
    const row = this.rows++;
    let replaced: (Buffer | null | undefined)[] | undefined;
    if (plan) {
      const m = Math.min(n, plan.length);
      for (let i = 0; i < m; i++) {
        const p = plan[i]!;
        if (p.kind === 'none' || lengths[i]! < 0) continue;
        const cell = body.subarray(starts[i]!, starts[i]! + lengths[i]!);
        const next = p.kind === 'rule' ? this.applyRule(p, cell, row, i) : this.detect(p, cell, row, i);
        if (next !== cell) (replaced ??= new Array(n))[i] = next;
      }
    }
    if (this.sample.length < SAMPLE_ROWS) {
      this.sample.push(
        Array.from({ length: n }, (_, i) => {
          const r = replaced?.[i];
          const cell = r !== undefined ? r : lengths[i]! < 0 ? null : body.subarray(starts[i]!, starts[i]! + lengths[i]!);
          return sampleCell(cell, this.formats[i] ?? 0);
        }),
      );
    }
    if (replaced === undefined) {
      // Unchanged: the same bytes behind a header (the scanner cut the original out of the stream).
      const out = Buffer.allocUnsafe(5 + body.length);
      out[0] = 0x44;
      out.writeInt32BE(4 + body.length, 1);
      body.copy(out, 5);
      return out;
    }
    let size = 4 + 2;
    for (let i = 0; i < n; i++) {
      const r = replaced[i];
      size += 4 + (r === undefined ? Math.max(0, lengths[i]!) : r === null ? 0 : r.length);
    }
    const out = Buffer.allocUnsafe(1 + size);
    out[0] = 0x44;
    out.writeInt32BE(size, 1);
    out.writeInt16BE(n, 5);
    let to = 7;
    for (let i = 0; i < n; i++) {
      const r = replaced[i];
      if (r === undefined) {
        // Untouched cells, copied together with their length words up to the next replaced cell.
        let j = i;
        while (j + 1 < n && replaced[j + 1] === undefined) j++;
        const from = starts[i]! - 4;
        const end = starts[j]! + Math.max(0, lengths[j]!);
        body.copy(out, to, from, end);
        to += end - from;
        i = j;
      } else if (r === null) {
        out.writeInt32BE(-1, to);
        to += 4;
      } else {
        out.writeInt32BE(r.length, to);
        r.copy(out, to + 4);
        to += 4 + r.length;
      }
    }
    return out;
  }

  /**
   * One row of COPY TO output, as values: a value with a rule is masked by it, the others go through the
   * detectors. `rules` follows the row's columns (undefined: no column has a rule).
   */
  maskValues(values: readonly (string | null)[], rules: readonly (ResolvedRule | undefined)[] | undefined): (string | null)[] {
    const row = this.rows++;
    const out = values.map((v, column) => {
      if (v === null) return null;
      const rule = rules?.[column];
      if (rule) {
        const c = this.columnCounts.get(rule.source);
        if (c) c.cells++;
        else this.columnCounts.set(rule.source, { strategy: rule.strategy, cells: 1 });
        this.sink?.({ row, column, columnName: rule.source.slice(rule.source.lastIndexOf('.') + 1), source: rule.source, original: v });
        return rule.strategy === 'hash' ? this.pseudonym(v) : maskValue(v, rule.strategy, { label: 'REDACTED', hashKey: this.hashKey });
      }
      if (this.policy.detectors.length === 0) return v;
      const r = maskTextWith(v, this.detectorSet, this.policy.detectorStrategy, this.hashKey);
      for (const m of r.matches) {
        this.detectorCounts.set(m.detector, (this.detectorCounts.get(m.detector) ?? 0) + 1);
        this.sink?.({ row, column, columnName: `column ${column + 1}`, detector: m.detector, original: v.slice(m.start, m.end) });
      }
      return r.text;
    });
    if (this.sample.length < SAMPLE_ROWS) this.sample.push(out.map((v) => (v === null ? null : v.length > SAMPLE_CELL_CHARS ? `${v.slice(0, SAMPLE_CELL_CHARS)}…` : v)));
    return out;
  }

  /** Free text the server sends (error and notice fields): detectors only. */
  maskMessageText(text: string): string {
    if (this.policy.detectors.length === 0) return text;
    const r = maskTextWith(text, this.detectorSet, 'redact', this.hashKey);
    for (const m of r.matches) this.detectorCounts.set(m.detector, (this.detectorCounts.get(m.detector) ?? 0) + 1);
    return r.text ?? '';
  }

  /** Whether a table (bare name, any schema) has column rules. */
  hasRulesFor(table: string): boolean {
    return this.policy.columns.some((c) => c.table === table);
  }

  /** What was masked since the last call (the statement's evidence); undefined when nothing was. */
  takeSummary(): MaskingSummary | undefined {
    this.rows = 0;
    const sample = this.sample;
    this.sample = [];
    if (this.columnCounts.size === 0 && this.detectorCounts.size === 0 && this.nulledBinary === 0) return undefined;
    const summary: MaskingSummary = {
      columns: [...this.columnCounts].map(([column, c]) => ({ column, strategy: c.strategy, cells: c.cells })),
      detectors: [...this.detectorCounts].map(([detector, values]) => ({ detector, values })),
      ...(this.nulledBinary ? { nulledBinary: this.nulledBinary } : {}),
      ...(sample.length ? { sample } : {}),
    };
    this.columnCounts.clear();
    this.detectorCounts.clear();
    this.nulledBinary = 0;
    return summary;
  }

  private pseudonym(value: string): string {
    let p = this.pseudonyms.get(value);
    if (p === undefined) {
      p = maskValue(value, 'hash', { label: 'REDACTED', hashKey: this.hashKey })!;
      if (this.pseudonyms.size >= 8192) this.pseudonyms.clear();
      this.pseudonyms.set(value, p);
    }
    return p;
  }

  private detectOpaque(p: Extract<ColumnPlan, { kind: 'detect' }>, cell: Buffer, row: number, column: number): Buffer | null {
    if (cell.length < 6) return cell; // no detector matches fewer than six characters (ints, dates, bools)
    const matches = findSensitive(printable(cell), this.policy.detectors);
    if (matches.length === 0) return cell;
    for (const m of matches) this.detectorCounts.set(m.detector, (this.detectorCounts.get(m.detector) ?? 0) + 1);
    this.nulledBinary++;
    this.sink?.({ row, column, columnName: p.name, detector: matches[0]!.detector, original: cell.toString('base64') });
    return null;
  }

  private applyRule(p: Extract<ColumnPlan, { kind: 'rule' }>, cell: Buffer, row: number, column: number): Buffer | null {
    const c = this.columnCounts.get(p.rule.source);
    if (c) c.cells++;
    else this.columnCounts.set(p.rule.source, { strategy: p.rule.strategy, cells: 1 });
    const original = p.encoding === 'opaque' ? null : textOf(cell, p.encoding);
    this.sink?.({ row, column, columnName: p.name, source: p.rule.source, original: original ?? cell.toString('base64') });
    if (p.encoding === 'opaque') {
      this.nulledBinary++;
      return null;
    }
    const masked = p.rule.strategy === 'hash' ? this.pseudonym(original!) : maskValue(original!, p.rule.strategy, { label: 'REDACTED', hashKey: this.hashKey });
    return masked === null ? null : bytesOf(masked, p.encoding);
  }

  private detect(p: Extract<ColumnPlan, { kind: 'detect' }>, cell: Buffer, row: number, column: number): Buffer | null {
    if (p.encoding === 'opaque') return this.detectOpaque(p, cell, row, column);
    const text = textOf(cell, p.encoding);
    const r = maskTextWith(text, this.detectorSet, this.policy.detectorStrategy, this.hashKey);
    if (r.matches.length === 0) return cell;
    for (const m of r.matches) {
      this.detectorCounts.set(m.detector, (this.detectorCounts.get(m.detector) ?? 0) + 1);
      this.sink?.({ row, column, columnName: p.name, detector: m.detector, original: text.slice(m.start, m.end) });
    }
    return r.text === null ? null : bytesOf(r.text, p.encoding);
  }
}

/** Rows of a statement's results kept (masked) as its sample in the audit trail. */
const SAMPLE_ROWS = 3;
const SAMPLE_CELL_CHARS = 64;

function sampleCell(cell: Buffer | null, format: number): string | null {
  if (cell === null) return null;
  if (format !== 0) return `<binary, ${cell.length} bytes>`;
  const text = cell.toString('utf8', 0, Math.min(cell.length, SAMPLE_CELL_CHARS * 4));
  return text.length > SAMPLE_CELL_CHARS ? `${text.slice(0, SAMPLE_CELL_CHARS)}…` : text;
}

function printable(cell: Buffer): string {
  // Bytes as characters one to one, with the binary framing (lengths, OIDs, NULs) turned into separators
  // so that the text inside stands apart as the detectors expect.
  let out = '';
  for (let i = 0; i < cell.length; i++) {
    const b = cell[i]!;
    out += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : b >= 0x80 ? String.fromCharCode(b) : ' ';
  }
  return out;
}

function textOf(cell: Buffer, encoding: Encoding): string {
  return encoding === 'jsonb' ? cell.toString('utf8', 1) : cell.toString('utf8');
}

function bytesOf(text: string, encoding: Encoding): Buffer {
  return encoding === 'jsonb' ? Buffer.concat([Buffer.from([1]), Buffer.from(text, 'utf8')]) : Buffer.from(text, 'utf8');
}
