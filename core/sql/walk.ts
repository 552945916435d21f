/**
 * Helpers for libpg-query's JSON parse tree. A node is `{ TypeName: { ...fields } }`; some fields hold
 * the inner object directly (e.g. `relation: { relname }`), so walkers must accept both shapes.
 */

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `[type, fields]` when `v` is a wrapped node such as `{ SelectStmt: {...} }`. */
export function asNode(v: unknown): [string, Obj] | undefined {
  if (!isObj(v)) return undefined;
  let key: string | undefined;
  for (const k in v) {
    if (key !== undefined) return undefined; // more than one key: a plain field object
    key = k;
  }
  if (key === undefined) return undefined;
  const c = key.charCodeAt(0);
  if (c < 65 || c > 90) return undefined; // node type names start upper-case, field names do not
  const inner = v[key];
  return isObj(inner) ? [key, inner] : undefined;
}

/** Inner fields of a `type` node whether wrapped as `{ Type: {...} }` or already unwrapped; undefined for another node type. */
export function fieldsOf(v: unknown, type: string): Obj | undefined {
  if (!isObj(v)) return undefined;
  const n = asNode(v);
  if (n) return n[0] === type ? n[1] : undefined;
  return v;
}

/** svals of a list of `{ String: { sval } }` nodes (identifiers such as funcname / names). */
export function stringList(v: unknown): string[] {
  if (!Array.isArray(v)) return [];
  const out: string[] = [];
  for (const item of v) {
    const n = asNode(item);
    if (n && n[0] === 'String' && typeof n[1].sval === 'string') out.push(n[1].sval);
  }
  return out;
}

/** Items of a `{ List: { items } }` node, or the array itself. */
export function listItems(v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  const n = asNode(v);
  if (n && n[0] === 'List' && Array.isArray(n[1].items)) return n[1].items;
  return [];
}

/** String value of a constant-ish node: String, A_Const sval, TypeCast of one. */
export function constString(v: unknown): string | undefined {
  const n = asNode(v);
  if (!n) return undefined;
  const [type, f] = n;
  if (type === 'String') return typeof f.sval === 'string' ? f.sval : '';
  if (type === 'A_Const') {
    if (isObj(f.sval)) return typeof f.sval.sval === 'string' ? f.sval.sval : '';
    return undefined;
  }
  if (type === 'TypeCast') return constString(f.arg);
  return undefined;
}

/**
 * PostgreSQL boolean reading of an option value (`DefElem.arg`); a missing value means true (`EXPLAIN ANALYZE`).
 * Returns undefined when the value cannot be read as a boolean.
 */
export function optionBool(arg: unknown): boolean | undefined {
  if (arg === undefined) return true;
  const n = asNode(arg);
  if (!n) return undefined;
  const [type, f] = n;
  if (type === 'Boolean') return f.boolval === true; // false is omitted from the JSON
  if (type === 'Integer') return typeof f.ival === 'number' && f.ival !== 0;
  if (type === 'A_Const') {
    if (isObj(f.boolval)) return f.boolval.boolval === true;
    if (isObj(f.ival)) return typeof f.ival.ival === 'number' && f.ival.ival !== 0;
  }
  const s = constString(arg);
  if (s === undefined) return undefined;
  const t = s.trim().toLowerCase();
  if (t === 'true' || t === 'on' || t === 'yes' || t === '1') return true;
  if (t === 'false' || t === 'off' || t === 'no' || t === '0') return false;
  return undefined;
}

/**
 * Maps UTF-8 byte offsets (what libpg-query reports) to UTF-16 string indexes (what JS slices with).
 * Lone surrogates count as 3 bytes, as TextEncoder writes them as U+FFFD.
 */
export class OffsetMap {
  private readonly map: Uint32Array | undefined;
  private readonly byteLen: number;

  constructor(readonly text: string) {
    // eslint-disable-next-line no-control-regex
    if (!/[^\x00-\x7f]/.test(text)) {
      this.map = undefined;
      this.byteLen = text.length;
      return;
    }
    let bytes = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x80) bytes += 1;
      else if (c < 0x800) bytes += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { bytes += 4; i++; }
      else bytes += 3;
    }
    const map = new Uint32Array(bytes + 1);
    let b = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      let n: number;
      let units = 1;
      if (c < 0x80) n = 1;
      else if (c < 0x800) n = 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n = 4; units = 2; }
      else n = 3;
      for (let k = 0; k < n; k++) map[b + k] = i;
      b += n;
      i += units - 1;
    }
    map[bytes] = text.length;
    this.map = map;
    this.byteLen = bytes;
  }

  /** String index of byte offset `b` (clamped to the text). */
  toChar(b: number): number {
    if (!(b > 0)) return 0;
    if (b >= this.byteLen) return this.text.length;
    return this.map ? (this.map[b] ?? this.text.length) : b;
  }
}
