/**
 * One row of COPY TO output taken apart into values and put back together, in the text and CSV formats,
 * so that values can be masked. The server sends one row per CopyData message.
 * @see https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.2 (text) and .9.3 (CSV)
 */
import type { CopyOutShape } from '../../../../core/sql/copy-statement.ts';

export function splitCopyRow(line: string, shape: CopyOutShape): (string | null)[] {
  return shape.format === 'csv' ? splitCsv(line, shape) : splitText(line, shape);
}

export function joinCopyRow(values: readonly (string | null)[], shape: CopyOutShape): string {
  return shape.format === 'csv' ? joinCsv(values, shape) : joinText(values, shape);
}

const TEXT_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

function splitText(line: string, s: CopyOutShape): (string | null)[] {
  const out: (string | null)[] = [];
  let raw = '';
  let value = '';
  for (let i = 0; i <= line.length; i++) {
    const ch = line[i];
    if (ch === undefined || ch === s.delimiter) {
      out.push(raw === s.nullString ? null : value);
      raw = '';
      value = '';
      continue;
    }
    if (ch === '\\' && i + 1 < line.length) {
      const next = line[++i]!;
      raw += ch + next;
      if (next in TEXT_ESCAPES) value += TEXT_ESCAPES[next];
      else if (next >= '0' && next <= '7') {
        let oct = next;
        while (oct.length < 3 && line[i + 1] !== undefined && line[i + 1]! >= '0' && line[i + 1]! <= '7') oct += line[++i];
        raw += oct.slice(1);
        value += String.fromCharCode(parseInt(oct, 8));
      } else if (next === 'x' && /[0-9a-fA-F]/.test(line[i + 1] ?? '')) {
        let hex = line[++i]!;
        if (/[0-9a-fA-F]/.test(line[i + 1] ?? '')) hex += line[++i];
        raw += hex;
        value += String.fromCharCode(parseInt(hex, 16));
      } else value += next;
      continue;
    }
    raw += ch;
    value += ch;
  }
  return out;
}

function joinText(values: readonly (string | null)[], s: CopyOutShape): string {
  return values
    .map((v) => {
      if (v === null) return s.nullString;
      let out = '';
      for (const ch of v) {
        if (ch === '\\') out += '\\\\';
        else if (ch === '\n') out += '\\n';
        else if (ch === '\r') out += '\\r';
        else if (ch === '\t') out += '\\t';
        else if (ch === s.delimiter) out += `\\${ch}`;
        else out += ch;
      }
      return out;
    })
    .join(s.delimiter);
}

function splitCsv(line: string, s: CopyOutShape): (string | null)[] {
  const out: (string | null)[] = [];
  let i = 0;
  for (;;) {
    let value = '';
    let quoted = false;
    if (line[i] === s.quote) {
      quoted = true;
      i++;
      for (; i < line.length; i++) {
        const ch = line[i]!;
        if (ch === s.escape && (line[i + 1] === s.quote || (s.escape !== s.quote && line[i + 1] === s.escape))) {
          value += line[++i];
          continue;
        }
        if (ch === s.quote) {
          i++;
          break;
        }
        value += ch;
      }
    }
    for (; i < line.length && line[i] !== s.delimiter; i++) value += line[i];
    out.push(!quoted && value === s.nullString ? null : value);
    if (i >= line.length) break;
    i++; // the delimiter
  }
  return out;
}

function joinCsv(values: readonly (string | null)[], s: CopyOutShape): string {
  return values
    .map((v) => {
      if (v === null) return s.nullString;
      let out = s.quote;
      for (const ch of v) out += ch === s.quote || ch === s.escape ? s.escape + ch : ch;
      return out + s.quote;
    })
    .join(s.delimiter);
}
