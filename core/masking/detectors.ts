/**
 * Content detectors: find sensitive values by their shape anywhere in a text cell.
 *
 * This runs over every text cell of every result row, so a cell that holds nothing sensitive must
 * cost little and allocate nothing. Each detector is gated by a native search, far faster than a
 * JavaScript loop over characters (about 3 ns a character on the benchmark machine): `indexOf` of a
 * character or prefix that is rare in text ('@', '+', '-----BEGIN ', 'J' of `eyJ`, 'A' of AKIA/AIza,
 * '_' of ghp_/sk_live_/npm_, 'xox', 'k-' of sk-), or a regular expression the engine can skip through
 * several characters at a time (9 digits with small separators between, `secret|bearer`). Only then
 * does a precise scanner run, from where the gate matched.
 *
 * Scanners are hand-written where a regular expression would backtrack, and all are linear: no nested
 * quantifiers, every scan resumes after the previous candidate, and look-ahead checks are bounded (a
 * token's first 36 characters, not its whole run), so a hostile 1 MB cell is scanned in milliseconds.
 *
 * Matches are UTF-16 offsets. Overlapping matches are merged into one span (their union) labelled by
 * the more specific detector (PRIORITY): a PEM block swallows the emails in it, a card number wins over
 * the phone number it also looks like, and no part of either value is left outside the span.
 *
 * Deliberate non-matches (see the tests): `user@localhost` and `user@10.0.0.1` (an email needs a domain
 * with a 2+ letter TLD); plain 10-digit runs, dates, IPv4 addresses and ISBNs as phones; SSNs without
 * dashes; digit runs glued to letters (hashes, UUIDs, identifiers) as cards; AWS secret keys with no key
 * id or secret-like name in the cell (column rules cover a `secret` column); lowercase IBANs.
 */
import type { Detector } from './vocabulary.ts';

/** One detected value: `text.slice(start, end)` (UTF-16 offsets). */
export interface DetectorMatch {
  readonly detector: Detector;
  readonly start: number;
  readonly end: number;
}

/** Every match of the enabled detectors in `text`, sorted by start, non-overlapping. */
export function findSensitive(text: string, detectors: readonly Detector[]): DetectorMatch[] {
  return scanText(text, detectorBits(detectors)) ?? [];
}

/**
 * The same as findSensitive, but `undefined` (no allocation) when nothing matches, and the detectors
 * given as a bit set (`detectorBits`) so a caller can compute it once per policy rather than per cell.
 */
export function scanText(text: string, enabled: number): DetectorMatch[] | undefined {
  const n = text.length;
  if (n < 6 || enabled === 0) return undefined; // the shortest detectable value is `a@b.co`
  let out: DetectorMatch[] | undefined;
  if (enabled & BIT.private_key && n >= 27 && text.indexOf('-----BEGIN ') !== -1) out = scanPem(text, out);
  if (enabled & BIT.jwt && n >= 20 && text.indexOf('J') !== -1) out = scanJwt(text, out);
  let awsKeyInCell = false;
  if (enabled & (BIT.api_token | BIT.aws_access_key | BIT.aws_secret_key) && n >= 20) {
    const r = scanTokens(text, enabled, out);
    out = r.out;
    awsKeyInCell = r.awsKey;
  }
  // One search for both words (the engine skips through text by the word's length).
  const words = n >= 27 && (enabled & (BIT.api_token | BIT.aws_secret_key)) !== 0 && SECRET_OR_BEARER.test(text);
  if (words && enabled & BIT.api_token) out = scanBearer(text, out);
  if (enabled & BIT.aws_secret_key && n >= 40 && (awsKeyInCell || (words && SECRET_NAME.test(text)))) out = scanAwsSecret(text, awsKeyInCell, out);
  if (enabled & BIT.email && text.indexOf('@') !== -1) out = scanEmail(text, out);
  if (enabled & BIT.phone && n >= 9 && text.indexOf('+') !== -1) out = scanE164(text, out);
  if (enabled & (BIT.card | BIT.ssn | BIT.phone) && n >= 11) {
    // SSNs, North American phones and cards all hold 9+ digits with at most two separator characters
    // between consecutive ones (`(415) 555-2671`).
    NINE_DIGITS.lastIndex = 0;
    if (NINE_DIGITS.test(text)) {
      // None of them starts before the first such run (a phone one '(' before it); the run ends at
      // lastIndex and is at most 25 characters long.
      const from = Math.max(0, NINE_DIGITS.lastIndex - 26);
      if (enabled & BIT.card && n >= 13) out = scanCard(text, from, out);
      if (enabled & BIT.ssn && text.indexOf('-', from) !== -1) out = scanSsn(text, from, out);
      if (enabled & BIT.phone && hasNanpSeparator(text, from)) out = scanNanp(text, from, out);
    }
  }
  // IBANs are not under that gate: a BBAN may mix letters into its digits (RO49 AAAA 1B31 …).
  // toLowerCase returns its input when nothing changes: a cheap "has a capital letter".
  if (enabled & BIT.iban && n >= 15 && text.toLowerCase() !== text) out = scanIban(text, out);
  return out === undefined || out.length < 2 ? out : resolveOverlaps(out);
}

const SEP02 = '[ ().-]{0,2}';
/** Unrolled, not `(?:…){8}`: every position is then a class the engine can skip by (measured 5x faster). */
const NINE_DIGITS = new RegExp(`[0-9]${`${SEP02}[0-9]`.repeat(8)}`, 'g');

/** The bit set of a list of detectors (for scanText). Unknown names are ignored. */
export function detectorBits(detectors: readonly Detector[]): number {
  let bits = 0;
  // A switch, not BIT[d]: a keyed lookup per entry costs more than scanning a short cell.
  for (let i = 0; i < detectors.length; i++) {
    switch (detectors[i]) {
      case 'card': bits |= BIT.card; break;
      case 'ssn': bits |= BIT.ssn; break;
      case 'email': bits |= BIT.email; break;
      case 'phone': bits |= BIT.phone; break;
      case 'iban': bits |= BIT.iban; break;
      case 'aws_access_key': bits |= BIT.aws_access_key; break;
      case 'aws_secret_key': bits |= BIT.aws_secret_key; break;
      case 'private_key': bits |= BIT.private_key; break;
      case 'jwt': bits |= BIT.jwt; break;
      case 'api_token': bits |= BIT.api_token; break;
    }
  }
  return bits;
}

// ---------------------------------------------------------------------------------------------------
// Shared tables

const BIT: Readonly<Record<Detector, number>> = {
  card: 1 << 0,
  ssn: 1 << 1,
  email: 1 << 2,
  phone: 1 << 3,
  iban: 1 << 4,
  aws_access_key: 1 << 5,
  aws_secret_key: 1 << 6,
  private_key: 1 << 7,
  jwt: 1 << 8,
  api_token: 1 << 9,
};

/** On overlap the merged span takes the label of the more specific detector (higher wins). */
const PRIORITY: Readonly<Record<Detector, number>> = {
  private_key: 10,
  jwt: 9,
  aws_secret_key: 8,
  aws_access_key: 7,
  api_token: 6,
  iban: 5,
  email: 4,
  card: 3,
  ssn: 2,
  phone: 1,
};

const C_DIGIT = 1;
const C_UPPER = 2;
const C_LOWER = 4;
/** [A-Za-z0-9_-]: the alphabet of API tokens and base64url (JWT parts). */
const C_TOK = 8;
/** [A-Za-z0-9/+]: the alphabet of AWS secret keys. */
const C_B64 = 16;
/** Characters of an email's local part (a pragmatic subset of RFC 5322 atext, see scanEmail). */
const C_LOCAL = 32;
/** Characters of a domain label: [A-Za-z0-9-]. */
const C_DOMAIN = 64;
const C_ALNUM = C_DIGIT | C_UPPER | C_LOWER;

const CLASS = (() => {
  const t = new Uint8Array(128);
  const set = (chars: string, bits: number): void => {
    for (const ch of chars) t[ch.charCodeAt(0)]! |= bits;
  };
  const range = (from: string, to: string): string => {
    let r = '';
    for (let c = from.charCodeAt(0); c <= to.charCodeAt(0); c++) r += String.fromCharCode(c);
    return r;
  };
  const word = C_TOK | C_B64 | C_LOCAL | C_DOMAIN;
  set(range('0', '9'), C_DIGIT | word);
  set(range('A', 'Z'), C_UPPER | word);
  set(range('a', 'z'), C_LOWER | word);
  set('_', C_TOK | C_LOCAL);
  set('-', C_TOK | C_LOCAL | C_DOMAIN);
  set('+', C_B64 | C_LOCAL);
  set('/', C_B64);
  set('.%!#$*^~', C_LOCAL);
  return t;
})();

const DOT = 46;
const DASH = 45;
const UNDERSCORE = 95;
const SPACE = 32;

const cls = (c: number): number => (c < 128 ? CLASS[c]! : 0);
const isDigit = (c: number): boolean => c >= 48 && c <= 57;
const isAlnum = (c: number): boolean => (cls(c) & C_ALNUM) !== 0;
/** Beyond ASCII, letters, marks and digits of any script count as word characters (names, IDN). */
const NON_ASCII_WORD = /^[\p{L}\p{M}\p{N}]$/u;
const isWordNonAscii = (c: number): boolean => c >= 128 && (c < 0xd800 || c > 0xdfff) && NON_ASCII_WORD.test(String.fromCharCode(c));

function add(out: DetectorMatch[] | undefined, detector: Detector, start: number, end: number): DetectorMatch[] {
  const m: DetectorMatch = { detector, start, end };
  if (out === undefined) return [m];
  out.push(m);
  return out;
}

/** Sort, then merge overlapping spans into their union, labelled by the higher-priority detector. */
function resolveOverlaps(all: DetectorMatch[]): DetectorMatch[] {
  all.sort((a, b) => a.start - b.start || b.end - a.end);
  const res: DetectorMatch[] = [];
  let cur = all[0]!;
  for (let i = 1; i < all.length; i++) {
    const m = all[i]!;
    if (m.start < cur.end) {
      const detector = PRIORITY[m.detector] > PRIORITY[cur.detector] ? m.detector : cur.detector;
      const end = m.end > cur.end ? m.end : cur.end;
      if (detector !== cur.detector || end !== cur.end) cur = { detector, start: cur.start, end };
    } else {
      res.push(cur);
      cur = m;
    }
  }
  res.push(cur);
  return res;
}

function runEnd(text: string, from: number, bits: number): number {
  let i = from;
  while (i < text.length && cls(text.charCodeAt(i)) & bits) i++;
  return i;
}

/** Are the `count` characters from `from` all in the class? (False past the end of the text.) */
function allIn(text: string, from: number, count: number, bits: number): boolean {
  if (from + count > text.length) return false;
  for (let j = from; j < from + count; j++) if (!(cls(text.charCodeAt(j)) & bits)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------
// PEM private keys

const PEM_KINDS = '(?:(?:RSA|EC|DSA|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY(?: BLOCK)?-----';
const PEM_BEGIN = new RegExp(`-----BEGIN ${PEM_KINDS}`, 'y');
const PEM_END = new RegExp(`-----END ${PEM_KINDS}`, 'y');

/**
 * The whole block, BEGIN line to END line. A block with no END line (a truncated value) is masked to
 * the end of the cell: what follows a BEGIN line is key material until proven otherwise.
 * PGP private key blocks are matched as well.
 */
function scanPem(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  let i = text.indexOf('-----BEGIN ');
  while (i !== -1) {
    PEM_BEGIN.lastIndex = i;
    if (!PEM_BEGIN.test(text)) {
      i = text.indexOf('-----BEGIN ', i + 11);
      continue;
    }
    let end = text.length;
    for (let j = text.indexOf('-----END ', PEM_BEGIN.lastIndex); j !== -1; j = text.indexOf('-----END ', j + 9)) {
      PEM_END.lastIndex = j;
      if (PEM_END.test(text)) {
        end = PEM_END.lastIndex;
        break;
      }
    }
    out = add(out, 'private_key', i, end);
    i = text.indexOf('-----BEGIN ', end);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// JWTs

/** `{"alg":"x"}` is 15 characters in base64url. */
const MIN_JWT_HEADER = 15;
/** JWS/JWE headers are small; a longer "header" is not decoded (x5c chains fit well within this). */
const MAX_JWT_HEADER = 16_384;

/**
 * `eyJ…` (base64url of `{"`) header that decodes to a JSON object with a string "alg", then a payload
 * and a signature; the signature may be empty only with alg "none". A JWE (header with "enc") spans
 * five parts. Not decoded: the payload (a JWS payload need not be JSON). Found from each 'J' (rare in
 * text, unlike the 'e' an `indexOf('eyJ')` would stop at).
 */
function scanJwt(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  const n = text.length;
  for (let j = text.indexOf('J', 2); j !== -1; j = text.indexOf('J', j + 1)) {
    const i = j - 2;
    if (text.charCodeAt(i) !== 101 /* e */ || text.charCodeAt(i + 1) !== 121 /* y */ || (i > 0 && cls(text.charCodeAt(i - 1)) & C_TOK)) continue;
    const h = runEnd(text, j + 1, C_TOK);
    const p = h < n && text.charCodeAt(h) === DOT ? runEnd(text, h + 1, C_TOK) : h;
    if (p === h || p === h + 1 || p >= n || text.charCodeAt(p) !== DOT) {
      j = h - 1; // the next candidate starts after this header
      continue;
    }
    let s = runEnd(text, p + 1, C_TOK);
    const header = h - i >= MIN_JWT_HEADER && h - i <= MAX_JWT_HEADER ? decodeJoseHeader(text.slice(i, h)) : undefined;
    if (header === undefined || (s === p + 1 && header.alg.toLowerCase() !== 'none')) {
      j = h - 1;
      continue;
    }
    if (header.enc) {
      // JWE compact: header.key.iv.ciphertext.tag (the key part may be empty).
      for (let part = 0; part < 2 && s < n && text.charCodeAt(s) === DOT; part++) s = runEnd(text, s + 1, C_TOK);
    }
    out = add(out, 'jwt', i, s);
    j = s - 1;
  }
  return out;
}

function decodeJoseHeader(part: string): { alg: string; enc: boolean } | undefined {
  const json = Buffer.from(part, 'base64url').toString('utf8').trimEnd();
  // Most look-alikes fail here, without the cost of an exception.
  if (json.charCodeAt(json.length - 1) !== 125 /* } */ || json.indexOf('"alg"') === -1) return undefined;
  try {
    const v: unknown = JSON.parse(json);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const alg = (v as { alg?: unknown }).alg;
    return typeof alg === 'string' ? { alg, enc: typeof (v as { enc?: unknown }).enc === 'string' } : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// API tokens and AWS access key ids

const AWS_KEY_PREFIXES = new Set(['AKIA', 'ASIA', 'AGPA', 'AIDA', 'AROA', 'AIPA', 'ANPA', 'ANVA', 'APKA']);
const isBase32Upper = (c: number): boolean => (c >= 65 && c <= 90) || (c >= 50 && c <= 55);

interface TokenScan {
  out: DetectorMatch[] | undefined;
  /** An AWS access key id is in the cell (evidence for the secret key detector). */
  awsKey: boolean;
}

/**
 * Token formats are found from a part of their prefix that is rare in text: 'A' (AKIA…, AIza…),
 * '_' (ghp_, github_pat_, sk_live_, npm_…), 'xox' (xoxb-…), 'k-' (sk-…). A token must not follow a letter or digit
 * (`GITHUB_TOKEN_ghp_…` is fine, `mask-…` holds no `sk-`), and is masked to the end of its run of
 * [A-Za-z0-9_-]: a token followed by more token characters is still that token. Prefix and minimum
 * body are checked over a bounded number of characters, so candidates that fail cost O(1).
 */
function scanTokens(text: string, enabled: number, out: DetectorMatch[] | undefined): TokenScan {
  const n = text.length;
  const wantToken = (enabled & BIT.api_token) !== 0;
  let awsKey = false;
  for (let p = text.indexOf('A'); p !== -1 && p <= n - 20; p = text.indexOf('A', p + 1)) {
    if (p > 0 && isAlnum(text.charCodeAt(p - 1))) continue;
    if (isAwsKeyId(text, p)) {
      awsKey = true;
      if (enabled & BIT.aws_access_key) out = add(out, 'aws_access_key', p, p + 20);
      p += 19;
    } else if (wantToken && text.startsWith('AIza', p) && allIn(text, p + 4, 35, C_TOK)) {
      // Google API keys: AIza + 35
      const e = runEnd(text, p + 39, C_TOK);
      out = add(out, 'api_token', p, e);
      p = e - 1;
    }
  }
  if (!wantToken) return { out, awsKey };
  for (let j = text.indexOf('_', 2); j !== -1; j = text.indexOf('_', j + 1)) {
    const p = underscoreTokenStart(text, j);
    if (p === -1) continue;
    const e = runEnd(text, j + 1, C_TOK);
    out = add(out, 'api_token', p, e);
    j = e - 1;
  }
  // Slack: xoxb- xoxa- xoxp- xoxr- xoxs- + 10
  for (let p = text.indexOf('xox'); p !== -1; p = text.indexOf('xox', p + 1)) {
    const c3 = text.charCodeAt(p + 3);
    if (!(c3 === 98 || c3 === 97 || c3 === 112 || c3 === 114 || c3 === 115) /* b a p r s */ || text.charCodeAt(p + 4) !== DASH) continue;
    if (!startsToken(text, p) || !allIn(text, p + 5, 10, C_TOK)) continue;
    const e = runEnd(text, p + 5, C_TOK);
    if (isPseudonym(text, p + 5, e)) continue;
    out = add(out, 'api_token', p, e);
    p = e - 1;
  }
  // OpenAI/Anthropic-style: sk- (sk-proj-, sk-ant-…) + 20 of [A-Za-z0-9_-], with a digit or capital
  // among the first 32 so kebab-case words (`sk-learn-…`) are not tokens. Found from 'k-': 'k' is
  // rarer than 's' and '-' in text.
  for (let j = text.indexOf('k-', 1); j !== -1; j = text.indexOf('k-', j + 1)) {
    const p = j - 1;
    if (text.charCodeAt(p) !== 115 /* s */ || !startsToken(text, p) || !allIn(text, j + 2, 20, C_TOK)) continue;
    if (!hasDigitOrUpper(text, j + 2, Math.min(n, j + 34))) continue;
    const e = runEnd(text, j + 2, C_TOK);
    if (isPseudonym(text, j + 2, e)) continue;
    out = add(out, 'api_token', p, e);
    j = e - 1;
  }
  return { out, awsKey };
}

/** AKIA/ASIA/… + 16 of [A-Z2-7], exactly 20 characters with no letter or digit after. */
function isAwsKeyId(text: string, p: number): boolean {
  if (!AWS_KEY_PREFIXES.has(text.slice(p, p + 4))) return false;
  for (let j = p + 4; j < p + 20; j++) if (!isBase32Upper(text.charCodeAt(j))) return false;
  return p + 20 === text.length || !isAlnum(text.charCodeAt(p + 20));
}

const startsToken = (text: string, p: number): boolean => p >= 0 && (p === 0 || !isAlnum(text.charCodeAt(p - 1)));

/** The start of a token whose prefix ends with the '_' at `j`, or -1. */
function underscoreTokenStart(text: string, j: number): number {
  const c1 = text.charCodeAt(j - 1);
  const c2 = text.charCodeAt(j - 2);
  // GitHub: ghp_ gho_ ghu_ ghs_ ghr_ + 36 alphanumerics
  if (c2 === 104 /* h */ && text.charCodeAt(j - 3) === 103 /* g */ && (c1 === 112 || c1 === 111 || c1 === 117 || c1 === 115 || c1 === 114) /* p o u s r */) {
    return startsToken(text, j - 3) && allIn(text, j + 1, 36, C_ALNUM) ? j - 3 : -1;
  }
  // GitHub fine-grained: github_pat_ + 82 of [A-Za-z0-9_]
  if (c1 === 98 /* b */ && text.startsWith('github_pat_', j - 6)) {
    return startsToken(text, j - 6) && allIn(text, j + 5, 82, C_ALNUM | C_TOK) ? j - 6 : -1;
  }
  // Stripe: sk_ rk_ pk_ + live_/test_ + 24 alphanumerics
  if (c1 === 107 /* k */ && (c2 === 115 || c2 === 114 || c2 === 112) /* s r p */) {
    const ok = (text.startsWith('live_', j + 1) || text.startsWith('test_', j + 1)) && allIn(text, j + 6, 24, C_ALNUM);
    return ok && startsToken(text, j - 2) ? j - 2 : -1;
  }
  // npm: npm_ + 36 alphanumerics
  if (c1 === 109 /* m */ && c2 === 112 /* p */ && text.charCodeAt(j - 3) === 110 /* n */) {
    return startsToken(text, j - 3) && allIn(text, j + 1, 36, C_ALNUM) ? j - 3 : -1;
  }
  return -1;
}

function hasDigitOrUpper(text: string, from: number, to: number): boolean {
  for (let q = from; q < to; q++) if (cls(text.charCodeAt(q)) & (C_DIGIT | C_UPPER)) return true;
  return false;
}

/**
 * `Bearer <token>`: only the token is masked, so the output still reads `Bearer [API_TOKEN]`. Our own
 * pseudonyms (`tok_` + 16 base32, see strategies.ts) are 20 characters: they are not tokens, or
 * masking with `hash` would not be idempotent.
 */
const BEARER = /(?<![A-Za-z0-9])bearer[ \t]{1,4}([A-Za-z0-9._~+/-]{20,}=*)/gi;
const PSEUDONYM = /^tok_[a-z2-7]{16}$/;

/**
 * Is text[from, to) one of our pseudonyms? They are made of token characters, so `hash` turning
 * `sk-xoxb-…` into `sk-tok_…` would otherwise create a token where none was found.
 */
function isPseudonym(text: string, from: number, to: number): boolean {
  return to - from === 20 && text.startsWith('tok_', from) && PSEUDONYM.test(text.slice(from, to));
}

function scanBearer(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  BEARER.lastIndex = 0;
  for (let m = BEARER.exec(text); m !== null; m = BEARER.exec(text)) {
    const token = m[1]!;
    if (token.length === 20 && PSEUDONYM.test(token)) continue;
    const end = m.index + m[0].length;
    out = add(out, 'api_token', end - token.length, end);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// AWS secret access keys

const SECRET_NAME = /secret/i;
const SECRET_OR_BEARER = /secret|bearer/i;
/** How far before a candidate a secret-like name may be (`"aws_secret_access_key": "…"`). */
const SECRET_NAME_WINDOW = 100;

/**
 * Exactly 40 of [A-Za-z0-9/+] ('=' may precede, as in `key=…`, but not follow: that would be longer
 * base64), and only with evidence: an access key id in the same cell, or "secret"
 * (aws_secret_access_key, SecretAccessKey…) shortly before. The candidate must also look random: a '/'
 * or '+', or upper case, lower case and digits together, so a hex SHA-1 or git commit id never matches.
 */
function scanAwsSecret(text: string, awsKeyInCell: boolean, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  const n = text.length;
  let i = 0;
  while (i < n) {
    if (!(cls(text.charCodeAt(i)) & C_B64)) {
      i++;
      continue;
    }
    const s = i;
    i = runEnd(text, s, C_B64);
    if (i - s !== 40 || (i < n && text.charCodeAt(i) === 61 /* = */) || !looksRandom(text, s, i)) continue;
    if (awsKeyInCell || SECRET_NAME.test(text.slice(Math.max(0, s - SECRET_NAME_WINDOW), s))) out = add(out, 'aws_secret_key', s, i);
  }
  return out;
}

function looksRandom(text: string, from: number, to: number): boolean {
  let kinds = 0;
  for (let j = from; j < to; j++) {
    const c = text.charCodeAt(j);
    if (c === 47 /* / */ || c === 43 /* + */) return true;
    kinds |= cls(c);
  }
  return (kinds & C_ALNUM) === C_ALNUM;
}

// ---------------------------------------------------------------------------------------------------
// Emails

const isLocal = (c: number): boolean => (c < 128 ? (CLASS[c]! & C_LOCAL) !== 0 : isWordNonAscii(c));
const isDomainChar = (c: number): boolean => (c < 128 ? (CLASS[c]! & C_DOMAIN) !== 0 : isWordNonAscii(c));
const isLetter = (c: number): boolean => (c < 128 ? (CLASS[c]! & (C_UPPER | C_LOWER)) !== 0 : isWordNonAscii(c));

/**
 * Around each '@': the local part is the run of [A-Za-z0-9._%+-!#$*^~] (RFC 5322 atext without the
 * characters that usually delimit it in text: quotes, '/', '=', '?', '&', '{', '}', '|', '`') plus
 * letters of any script, leading dots dropped; the domain is 2+ labels of [A-Za-z0-9-] (or letters of
 * any script) ending in a TLD of 2+ letters; a trailing dot is not part of it. Quoted local parts and
 * IP-literal domains are not matched, nor is `user@localhost`. Each character is visited at most twice
 * (once as a domain, once as the next local part), whatever the input.
 */
function scanEmail(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  for (let at = text.indexOf('@'); at !== -1; at = text.indexOf('@', at + 1)) {
    // The local part may reach back into the previous match's domain (`a@b.co@c.co`): the two merge,
    // rather than leave `@c.co` behind for a pseudonym to turn into an email.
    let s = at;
    while (s > 0 && isLocal(text.charCodeAt(s - 1))) s--;
    while (s < at && text.charCodeAt(s) === DOT) s++;
    const e = s < at ? domainEnd(text, at + 1) : -1;
    if (e !== -1) out = add(out, 'email', s, e);
  }
  return out;
}

/** End of the longest `label(.label)+` from `from` whose last label is a TLD, or -1. */
function domainEnd(text: string, from: number): number {
  const n = text.length;
  let i = from;
  let labels = 0;
  let end = -1;
  for (;;) {
    const ls = i;
    let lettersEnd = -1; // where the label's leading letters end
    while (i < n) {
      const c = text.charCodeAt(i);
      if (!isDomainChar(c)) break;
      if (lettersEnd === -1 && !isLetter(c)) lettersEnd = i;
      i++;
    }
    if (i === ls) break;
    labels++;
    if (labels >= 2) {
      if (lettersEnd === -1 && i - ls >= 2) end = i;
      // `bob@example.com--`: a TLD followed by hyphens ends there (a TLD never holds one).
      else if (lettersEnd - ls >= 2 && text.charCodeAt(lettersEnd) === DASH) end = lettersEnd;
    }
    if (i + 1 < n && text.charCodeAt(i) === DOT && isDomainChar(text.charCodeAt(i + 1))) i++;
    else break;
  }
  return end;
}

// ---------------------------------------------------------------------------------------------------
// Payment cards

/** 13 digits with optional single spaces or dashes between: where a card can start (unrolled, see NINE_DIGITS). */
const THIRTEEN_DIGITS = new RegExp(`[0-9]${'[ -]?[0-9]'.repeat(12)}`, 'g');

/**
 * Digits are grouped into units: digit runs joined by single dashes (`4111-1111-1111-1111` is one unit
 * of 16), and units joined by single spaces form a sequence. A card is a run of whole units of a
 * sequence with 13-19 digits, a known IIN range with a length that brand issues, and a valid Luhn sum.
 * Splitting only at spaces keeps UUIDs and dashed dates whole (too many digits), while
 * `2024-01-15 4111111111111111` still finds the card. A unit touching a letter, or a decimal point
 * after a digit (`0.4111…`), is part of something else and never starts or ends a card (a comma is not
 * a decimal point here: `4111…,2024` is a CSV line). Per start unit at most 6 groups are examined, and
 * each sequence once, so the scan is linear.
 */
function scanCard(text: string, from: number, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  const n = text.length;
  const us = UNIT_START;
  const ue = UNIT_END;
  const ud = UNIT_DIGITS;
  THIRTEEN_DIGITS.lastIndex = from;
  // A leftmost match starts where its sequence starts: an earlier start in the same sequence would
  // have matched first.
  for (let m = THIRTEEN_DIGITS.exec(text); m !== null; m = THIRTEEN_DIGITS.exec(text)) {
    let i = m.index;
    let k = 0;
    for (;;) {
      const start = i;
      let d = 0;
      for (;;) {
        while (i < n && isDigit(text.charCodeAt(i))) {
          d++;
          i++;
        }
        if (i + 1 < n && text.charCodeAt(i) === DASH && isDigit(text.charCodeAt(i + 1))) i++;
        else break;
      }
      us[k] = start;
      ue[k] = i;
      ud[k] = d;
      k++;
      if (k < MAX_UNITS && i + 1 < n && text.charCodeAt(i) === SPACE && isDigit(text.charCodeAt(i + 1))) i++;
      else break;
    }
    const firstClean = !gluedBefore(text, us[0]!);
    const lastClean = !gluedAfter(text, ue[k - 1]!);
    for (let a = firstClean ? 0 : 1; a < k; a++) {
      let total = 0;
      let best = -1;
      for (let b = a; b < k; b++) {
        if (ud[b]! < MIN_GROUP) break;
        total += ud[b]!;
        if (total > 19) break;
        if (total >= 13 && (b < k - 1 || lastClean) && isCard(text, us[a]!, ue[b]!, total)) best = b;
      }
      // Every start is tried, also inside a card already found: overlapping candidates merge into one
      // span, so an IBAN or a number right before a card cannot hide the card's last groups.
      if (best !== -1) out = add(out, 'card', us[a]!, ue[best]!);
    }
    // A sequence longer than MAX_UNITS goes on from 6 units back, so a card across the cut is seen
    // (a card spans at most 6 units of 3+ digits).
    THIRTEEN_DIGITS.lastIndex = k === MAX_UNITS ? us[k - 6]! : i;
  }
  return out;
}

/**
 * Cards are printed in groups of 3 or more digits (4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3): shorter groups
 * are something else (`+1 4111…`, a list of numbers) and cannot be part of one. This also bounds the
 * work per start to 6 groups.
 */
const MIN_GROUP = 3;
/** Units per sequence examined at once; a longer sequence is continued as a new one (still linear). */
const MAX_UNITS = 64;
const UNIT_START = new Int32Array(MAX_UNITS);
const UNIT_END = new Int32Array(MAX_UNITS);
const UNIT_DIGITS = new Int32Array(MAX_UNITS);

/** Is the number at `i` glued to what precedes it: a letter or digit, or `3.` (a decimal)? */
function gluedBefore(text: string, i: number): boolean {
  if (i === 0) return false;
  const c = text.charCodeAt(i - 1);
  if (isAlnum(c) || isWordNonAscii(c)) return true;
  return c === DOT && i >= 2 && isDigit(text.charCodeAt(i - 2));
}

function gluedAfter(text: string, i: number): boolean {
  if (i >= text.length) return false;
  const c = text.charCodeAt(i);
  if (isAlnum(c) || isWordNonAscii(c)) return true;
  return c === DOT && i + 1 < text.length && isDigit(text.charCodeAt(i + 1));
}

function isCard(text: string, from: number, to: number, len: number): boolean {
  let first4 = 0;
  let got = 0;
  for (let j = from; got < 4; j++) {
    const c = text.charCodeAt(j);
    if (isDigit(c)) {
      first4 = first4 * 10 + (c - 48);
      got++;
    }
  }
  return issuedLength(first4, len) && luhn(text, from, to);
}

/** Known IIN ranges and the lengths each brand issues. @see https://en.wikipedia.org/wiki/Payment_card_number#Issuer_identification_number_(IIN) */
function issuedLength(p4: number, len: number): boolean {
  const p1 = Math.floor(p4 / 1000);
  const p2 = Math.floor(p4 / 100);
  const p3 = Math.floor(p4 / 10);
  if (p1 === 4) return len === 13 || len === 16 || len === 19; // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return len === 16; // Mastercard
  if (p2 === 34 || p2 === 37) return len === 15; // American Express
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return len >= 16; // Discover
  if (p4 >= 3528 && p4 <= 3589) return len >= 16; // JCB
  if (p2 === 36 || p2 === 38 || (p3 >= 300 && p3 <= 305)) return len >= 14; // Diners Club
  if (p2 === 62) return len >= 16; // UnionPay
  return false;
}

function luhn(text: string, from: number, to: number): boolean {
  let sum = 0;
  let double = false;
  for (let j = to - 1; j >= from; j--) {
    const c = text.charCodeAt(j);
    if (!isDigit(c)) continue;
    let d = c - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

// ---------------------------------------------------------------------------------------------------
// IBANs

/** IBAN lengths of the SWIFT registry's countries. @see https://www.swift.com/standards/data-standards/iban-international-bank-account-number */
const IBAN_LENGTH: ReadonlyMap<string, number> = new Map(
  Object.entries({
    AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BR: 29, BY: 28, CH: 21, CR: 22, CY: 28,
    CZ: 24, DE: 22, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18,
    GR: 27, GT: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32,
    LI: 21, LT: 20, LU: 20, LV: 21, MC: 27, MD: 24, ME: 22, MK: 19, MR: 27, MT: 31, MU: 30, NL: 18, NO: 15, PK: 24,
    PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, SA: 24, SC: 31, SE: 24, SI: 19, SK: 24, SM: 27, ST: 25, SV: 28,
    TL: 23, TN: 24, TR: 26, UA: 29, VA: 22, VG: 24, XK: 20,
  }),
);

const IBAN_START = /[A-Z]{2}[0-9]{2}/g;
const isUpperOrDigit = (c: number): boolean => (cls(c) & (C_UPPER | C_DIGIT)) !== 0;

/**
 * Country code, 2 check digits, BBAN of the country's length, upper case, either unbroken or in groups
 * of four separated by single spaces, no letter or digit on either side; ISO 13616 mod-97 must be 1.
 */
function scanIban(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  const n = text.length;
  IBAN_START.lastIndex = 0;
  for (let m = IBAN_START.exec(text); m !== null; m = IBAN_START.exec(text)) {
    const s = m.index;
    IBAN_START.lastIndex = s + 1;
    const len = IBAN_LENGTH.get(text.slice(s, s + 2));
    if (len === undefined || (s > 0 && isAlnum(text.charCodeAt(s - 1)))) continue;
    let p = s + 4;
    let count = 4;
    while (count < len && p < n) {
      const c = text.charCodeAt(p);
      if (isUpperOrDigit(c)) {
        count++;
        p++;
      } else if (c === SPACE && count % 4 === 0 && p + 1 < n && isUpperOrDigit(text.charCodeAt(p + 1))) p++;
      else break;
    }
    if (count !== len || (p < n && isAlnum(text.charCodeAt(p))) || !ibanChecksumOk(text, s, p)) continue;
    out = add(out, 'iban', s, p);
    IBAN_START.lastIndex = p;
  }
  return out;
}

/** ISO 7064 mod 97-10 over BBAN + country + check digits, letters as 10..35, spaces skipped. */
function ibanChecksumOk(text: string, from: number, to: number): boolean {
  let r = 0;
  const step = (c: number): void => {
    if (c === SPACE) return;
    r = isDigit(c) ? (r * 10 + (c - 48)) % 97 : (r * 100 + (c - 55)) % 97;
  };
  for (let j = from + 4; j < to; j++) step(text.charCodeAt(j));
  for (let j = from; j < from + 4; j++) step(text.charCodeAt(j));
  return r === 1;
}

// ---------------------------------------------------------------------------------------------------
// US social security numbers

const SSN = /[0-9]{3}-[0-9]{2}-[0-9]{4}/g;
/** Numbers published in advertising (Woolworth's wallet card, Ameriquest) and never valid. */
const SSN_ADVERTISING = new Set(['078-05-1120', '219-09-9999']);

/**
 * Dashed AAA-GG-SSSS only, not inside a longer number (no letter or digit, nor `digit-`, on either
 * side); area 000, 666 and 900-999, group 00 and serial 0000 are never issued.
 */
function scanSsn(text: string, from: number, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  SSN.lastIndex = from;
  for (let m = SSN.exec(text); m !== null; m = SSN.exec(text)) {
    const s = m.index;
    const v = m[0];
    if (!standsAlone(text, s, s + 11)) {
      SSN.lastIndex = s + 1;
      continue;
    }
    const area = v.slice(0, 3);
    if (area === '000' || area === '666' || area[0] === '9' || v.slice(4, 6) === '00' || v.slice(7) === '0000' || SSN_ADVERTISING.has(v)) continue;
    out = add(out, 'ssn', s, s + 11);
  }
  return out;
}

/** No letter or digit right before or after, and no `digit-`/`digit.` or `-digit`/`.digit` continuing the number. */
function standsAlone(text: string, s: number, e: number): boolean {
  return startsAlone(text, s) && endsAlone(text, e);
}

function startsAlone(text: string, s: number): boolean {
  if (s === 0) return true;
  const c = text.charCodeAt(s - 1);
  return !(isAlnum(c) || ((c === DASH || c === DOT) && s > 1 && isDigit(text.charCodeAt(s - 2))));
}

function endsAlone(text: string, e: number): boolean {
  if (e >= text.length) return true;
  const c = text.charCodeAt(e);
  return !(isAlnum(c) || ((c === DASH || c === DOT) && e + 1 < text.length && isDigit(text.charCodeAt(e + 1))));
}

// ---------------------------------------------------------------------------------------------------
// Phone numbers

/**
 * North American: `(NPA) NXX-XXXX`, `NPA-NXX-XXXX`, `NPA.NXX.XXXX`, optionally after `1-`/`1 `/`1.`;
 * NPA and NXX never start with 0 or 1. Separators are required (a bare 10-digit run is not a phone), and
 * the number must stand alone: a '+', '.' or '-' right before, or a `.digit`/`-digit` after, means a
 * longer dotted or dashed number (IP addresses, versions, ISBNs).
 */
const NANP =
  /(?:1[-. ])?(?:\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[-. ][0-9]{4}|[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}|[2-9][0-9]{2}\.[2-9][0-9]{2}\.[0-9]{4})/g;

function scanNanp(text: string, from: number, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  NANP.lastIndex = from;
  for (let m = NANP.exec(text); m !== null; m = NANP.exec(text)) {
    const s = m.index;
    const e = s + m[0].length;
    const before = s > 0 ? text.charCodeAt(s - 1) : SPACE;
    if (isAlnum(before) || before === 43 /* + */ || before === DOT || before === DASH || !endsAlone(text, e)) {
      NANP.lastIndex = s + 1;
      continue;
    }
    out = add(out, 'phone', s, e);
  }
  return out;
}

/** Every North American format has a '-', '.' or '('. */
const hasNanpSeparator = (text: string, from: number): boolean =>
  text.indexOf('-', from) !== -1 || text.indexOf('.', from) !== -1 || text.indexOf('(', from) !== -1;

const isPhoneSep = (c: number): boolean => c === SPACE || c === DASH || c === DOT;

/**
 * `+` then a country code digit 1-9, then 8-15 digits in all, in groups separated by single spaces,
 * dashes or dots, a group possibly in parentheses (`+1 (415) 555-2671`, `+44 (0)20 7946 0958`). The
 * number ends after the last group that keeps it within 15 digits (`+44 20 7946 0958 2024` is the phone
 * and a year) and is not glued to a letter. Each '+' scan resumes after the previous one,
 * so the whole is linear.
 */
function scanE164(text: string, out: DetectorMatch[] | undefined): DetectorMatch[] | undefined {
  const n = text.length;
  let i = text.indexOf('+');
  while (i !== -1) {
    let p = i + 1;
    const c1 = p < n ? text.charCodeAt(p) : 0;
    if (!isDigit(c1) || c1 === 48 || (i > 0 && isAlnum(text.charCodeAt(i - 1)))) {
      i = text.indexOf('+', p);
      continue;
    }
    p = digitsEnd(text, p);
    let digits = p - i - 1;
    // A group glued to a letter (`… 901 6lGl`) is not part of the number: an end must stand alone.
    let end = digits >= 8 && digits <= 15 && !(p < n && isAlnum(text.charCodeAt(p))) ? p : -1;
    while (digits <= 15) {
      // One more group: [sep] digits | [sep] '(' digits ')' — or digits right after ')'.
      let q = p;
      if (q < n && isPhoneSep(text.charCodeAt(q))) q++;
      let groupEnd: number;
      if (q < n && text.charCodeAt(q) === 40 /* ( */) {
        const r = digitsEnd(text, q + 1);
        if (r === q + 1 || r >= n || text.charCodeAt(r) !== 41 /* ) */) break;
        digits += r - q - 1;
        groupEnd = r + 1;
      } else if (q < n && isDigit(text.charCodeAt(q)) && (q > p || text.charCodeAt(p - 1) === 41)) {
        const r = digitsEnd(text, q);
        digits += r - q;
        groupEnd = r;
      } else break;
      p = groupEnd;
      if (digits >= 8 && digits <= 15 && !(p < n && isAlnum(text.charCodeAt(p)))) end = p;
    }
    if (end !== -1) out = add(out, 'phone', i, end);
    i = text.indexOf('+', Math.max(p, i + 1));
  }
  return out;
}

function digitsEnd(text: string, from: number): number {
  let i = from;
  while (i < text.length && isDigit(text.charCodeAt(i))) i++;
  return i;
}
