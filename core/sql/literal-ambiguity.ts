/**
 * Whether a text would be split into different tokens if `standard_conforming_strings` were off.
 *
 * The classifier reads text as the server does by default (backslashes are ordinary characters in '...').
 * Statements that turn the setting off are refused, but a function whose body Warden cannot see could turn
 * it off between two statements of one pipeline, and the server would then read a literal such as
 * `'\' , '` as an escaped quote and run what Warden took for string content. So a plain literal whose end
 * would move if backslashes escaped is flagged: its meaning depends on a setting Warden cannot watch in
 * time. Literals whose extent is the same either way (`'\d+'`, `'C:\dir\file'`) are not.
 */
import { scanSql } from './parser.ts';

const QUOTE = 0x27;
const BACKSLASH = 0x5c;

export function hasAmbiguousLiteral(sql: string): boolean {
  if (!sql.includes('\\')) return false;
  let tokens;
  try {
    tokens = scanSql(sql);
  } catch {
    return true; // cannot tell: treat as ambiguous
  }
  for (const t of tokens) {
    if (t.tokenName !== 'SCONST' || !t.text.includes('\\')) continue;
    // Plain and national literals only: E'...' escapes either way; U&'...' and $$...$$ never do.
    const open = t.text.charCodeAt(0) === QUOTE ? 0 : (t.text[0] === 'N' || t.text[0] === 'n') && t.text.charCodeAt(1) === QUOTE ? 1 : -1;
    if (open < 0) continue;
    if (endWithEscapes(t.text, open) !== t.text.length) return true;
  }
  return false;
}

/** Where a literal starting at `open` would end (exclusive) if backslash escaped the next character. */
function endWithEscapes(text: string, open: number): number {
  for (let i = open + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) {
      if (text.charCodeAt(i + 1) === QUOTE) i++;
      else return i + 1;
    }
  }
  return -1; // would run past this token
}
