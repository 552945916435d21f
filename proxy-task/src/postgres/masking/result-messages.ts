/**
 * RowDescription and DataRow, decoded and encoded: what the masking path needs of a result.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

export interface FieldDescription {
  readonly name: string;
  /** OID of the table the column comes from (0 for an expression). */
  readonly tableOid: number;
  /** The column's attribute number in that table (0 for an expression). */
  readonly attnum: number;
  readonly typeOid: number;
  /** 0 text, 1 binary. */
  readonly format: number;
}

export function decodeRowDescription(body: Buffer): FieldDescription[] {
  const n = body.readInt16BE(0);
  const fields: FieldDescription[] = [];
  let at = 2;
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, at);
    if (end < 0) throw new RangeError('RowDescription: unterminated field name');
    const name = body.toString('utf8', at, end);
    at = end + 1;
    fields.push({
      name,
      tableOid: body.readUInt32BE(at),
      attnum: body.readInt16BE(at + 4),
      typeOid: body.readUInt32BE(at + 6),
      format: body.readInt16BE(at + 16),
    });
    at += 18;
  }
  return fields;
}

/** The cells of a DataRow: byte ranges into the body, or null. */
export function decodeDataRowCells(body: Buffer): (Buffer | null)[] {
  const n = body.readInt16BE(0);
  const cells: (Buffer | null)[] = new Array(n);
  let at = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(at);
    at += 4;
    if (len < 0) cells[i] = null;
    else {
      if (at + len > body.length) throw new RangeError('DataRow: cell runs past the message');
      cells[i] = body.subarray(at, at + len);
      at += len;
    }
  }
  return cells;
}

/** A whole DataRow message ('D', length, cells). */
export function encodeDataRow(cells: readonly (Buffer | null)[]): Buffer {
  let size = 4 + 2;
  for (const c of cells) size += 4 + (c ? c.length : 0);
  const out = Buffer.allocUnsafe(1 + size);
  out[0] = 0x44;
  out.writeInt32BE(size, 1);
  out.writeInt16BE(cells.length, 5);
  let at = 7;
  for (const c of cells) {
    if (c === null) {
      out.writeInt32BE(-1, at);
      at += 4;
    } else {
      out.writeInt32BE(c.length, at);
      c.copy(out, at + 4);
      at += 4 + c.length;
    }
  }
  return out;
}

/**
 * Types whose binary form is their text (so masking can rewrite it the same way): text, varchar, bpchar,
 * name, json, xml, unknown, char. jsonb's binary form is a version byte followed by its text.
 */
export const TEXT_LIKE_TYPES: ReadonlySet<number> = new Set([25, 1043, 1042, 19, 114, 142, 705, 18]);
export const JSONB_TYPE = 3802;
