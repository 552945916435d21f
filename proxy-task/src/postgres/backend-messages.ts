/**
 * Builders for the messages Warden itself sends to a client, and decoders for the few message bodies
 * the session reads. Everything else is relayed as received.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import { AuthCode } from './protocol-codes.ts';

function typed(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

export function authenticationRequest(code: number, extra?: Buffer): Buffer {
  return typed('R', extra ? Buffer.concat([int32(code), extra]) : int32(code));
}

export const authenticationOk = (): Buffer => authenticationRequest(AuthCode.ok);
export const authenticationCleartextPassword = (): Buffer => authenticationRequest(AuthCode.cleartextPassword);

export function backendKeyData(processId: number, secretKey: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(processId, 0);
  b.writeInt32BE(secretKey, 4);
  return typed('K', b);
}

export function parameterStatus(name: string, value: string): Buffer {
  return typed('S', Buffer.from(`${name}\0${value}\0`, 'utf8'));
}

/** NegotiateProtocolVersion: the newest protocol version supported (3.0) and the `_pq_.` options not recognized. */
export function negotiateProtocolVersion(unrecognized: readonly string[]): Buffer {
  const head = Buffer.allocUnsafe(8);
  head.writeInt32BE(3 << 16, 0);
  head.writeInt32BE(unrecognized.length, 4);
  return typed('v', Buffer.concat([head, ...unrecognized.map((o) => Buffer.from(`${o}\0`, 'utf8'))]));
}

export function readyForQuery(status: 'I' | 'T' | 'E'): Buffer {
  return typed('Z', Buffer.from(status, 'latin1'));
}

export interface NoticeFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'INFO' | 'LOG' | 'DEBUG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function fieldsBody(f: NoticeFields): Buffer {
  let s = `S${f.severity}\0V${f.severity}\0C${f.code}\0M${f.message}\0`;
  if (f.detail) s += `D${f.detail}\0`;
  if (f.hint) s += `H${f.hint}\0`;
  return Buffer.from(s + '\0', 'utf8');
}

export const errorResponse = (f: NoticeFields): Buffer => typed('E', fieldsBody(f));
export const noticeResponse = (f: NoticeFields): Buffer => typed('N', fieldsBody(f));

/** Fields of an ErrorResponse / NoticeResponse body, keyed by their one-letter codes. */
export function decodeFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    out[code] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return out;
}

/** A null-terminated string at `offset`; returns the string and the offset after its terminator. */
export function cstring(buf: Buffer, offset: number): [string, number] {
  const end = buf.indexOf(0, offset);
  if (end < 0) throw new RangeError('unterminated string');
  return [buf.toString('utf8', offset, end), end + 1];
}

/** StartupMessage parameters (the body after the protocol version). */
export function decodeStartupParameters(body: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  let i = 4;
  while (i < body.length && body[i] !== 0) {
    const [k, a] = cstring(body, i);
    const [v, b] = cstring(body, a);
    params.set(k, v);
    i = b;
  }
  return params;
}

export interface ParseMessage {
  name: string;
  text: string;
  paramTypes: number[];
}

export function decodeParse(body: Buffer): ParseMessage {
  const [name, a] = cstring(body, 0);
  const [text, b] = cstring(body, a);
  const n = body.readInt16BE(b);
  const paramTypes: number[] = [];
  for (let k = 0; k < n; k++) paramTypes.push(body.readUInt32BE(b + 2 + 4 * k));
  return { name, text, paramTypes };
}

export interface BindMessage {
  portal: string;
  statement: string;
  /** Parameter values as text; binary ones hex-encoded as `\x…`; SQL NULL as null. */
  params: (string | null)[];
}

export function decodeBind(body: Buffer): BindMessage {
  const [portal, a] = cstring(body, 0);
  const [statement, b] = cstring(body, a);
  let i = b;
  const nFormats = body.readInt16BE(i);
  i += 2;
  const formats: number[] = [];
  for (let k = 0; k < nFormats; k++, i += 2) formats.push(body.readInt16BE(i));
  const nParams = body.readInt16BE(i);
  i += 2;
  const params: (string | null)[] = [];
  for (let k = 0; k < nParams; k++) {
    const len = body.readInt32BE(i);
    i += 4;
    if (len < 0) {
      params.push(null);
      continue;
    }
    if (i + len > body.length) throw new RangeError('parameter exceeds message');
    const fmt = nFormats === 0 ? 0 : nFormats === 1 ? formats[0]! : (formats[k] ?? 0);
    params.push(fmt === 1 ? '\\x' + body.toString('hex', i, i + len) : body.toString('utf8', i, i + len));
    i += len;
  }
  return { portal, statement, params };
}

/** Execute: portal name (and a row limit we do not need). Describe/Close: a kind byte then a name. */
export function decodeExecutePortal(body: Buffer): string {
  return cstring(body, 0)[0];
}

export function decodeKindAndName(body: Buffer): { kind: 'S' | 'P'; name: string } {
  const kind = String.fromCharCode(body[0] ?? 0);
  if (kind !== 'S' && kind !== 'P') throw new RangeError('bad describe/close kind');
  return { kind, name: cstring(body, 1)[0] };
}

/** Rows from a CommandComplete tag such as `SELECT 3`, `INSERT 0 5`, `UPDATE 2`, `COPY 10`. */
export function rowsFromCommandTag(tag: string): number | undefined {
  const m = /(\d+)$/.exec(tag);
  return m ? Number(m[1]) : undefined;
}
