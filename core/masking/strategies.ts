/**
 * Masking strategies: what a sensitive value becomes. Pure functions of the value (and, for `hash`, the
 * target's key); nothing here looks at where the value came from.
 */
import { createHmac } from 'node:crypto';
import { MaskStrategy, type Detector } from './vocabulary.ts';

export interface MaskOptions {
  /** The redaction label: a detector's (`EMAIL`…) or `REDACTED` for a column rule. */
  readonly label: string;
  /** The target's pseudonymisation key (HMAC-SHA-256). */
  readonly hashKey: Uint8Array;
}

/**
 * The masked form of one value:
 *  - `redact`: `[LABEL]`;
 *  - `partial`: the same length, at most 4 characters of the value kept (see partialMask);
 *  - `hash`: `tok_` + 16 base32 characters of HMAC-SHA-256(hashKey, value): equal values stay equal
 *    under one key, and the pseudonyms of two keys are unrelated;
 *  - `null`: SQL NULL.
 */
export function maskValue(value: string, strategy: MaskStrategy, o: MaskOptions): string | null {
  switch (strategy) {
    case MaskStrategy.redact:
      return `[${o.label.toUpperCase()}]`;
    case MaskStrategy.partial:
      return partialMask(value);
    case MaskStrategy.hash:
      return pseudonym(value, o.hashKey);
    case MaskStrategy.null:
      return null;
    default:
      return assertNever(strategy);
  }
}

const PLACEHOLDER: Readonly<Record<Detector, string>> = {
  card: '[CARD]',
  ssn: '[SSN]',
  email: '[EMAIL]',
  phone: '[PHONE]',
  iban: '[IBAN]',
  aws_access_key: '[AWS_ACCESS_KEY]',
  aws_secret_key: '[AWS_SECRET_KEY]',
  private_key: '[PRIVATE_KEY]',
  jwt: '[JWT]',
  api_token: '[API_TOKEN]',
};

/**
 * What `redact` writes for a detected value. Placeholders are upper-case letters, '_' and brackets
 * only, so no detector finds anything in them (the masking tests prove it for each).
 */
export function placeholderFor(detector: Detector): string {
  return PLACEHOLDER[detector];
}

/** Characters `partial` keeps in place in a number: they show its format, not its value. */
const isSeparator = (c: number): boolean => c === 32 || c === 45 /* - */ || c === 46 /* . */ || c === 40 /* ( */ || c === 41 /* ) */;
const isDigit = (c: number): boolean => c >= 48 && c <= 57;

/**
 * `partial`, same length as the value, never more than 4 of its characters kept (separators aside):
 *  - 8+ digits (a card, phone, IBAN, account number): the last four digits kept, every other digit
 *    and letter replaced by '*', spaces, dashes, dots, parentheses and a leading '+' kept:
 *    `4111 1111 1111 1111` → `**** **** **** 1111`, `+1 (415) 555-2671` → `+* (***) ***-2671`;
 *  - otherwise 8+ characters: the last four kept (`john@example.com` → `************.com`);
 *  - 5 to 7 characters: the last two kept;
 *  - 4 characters or fewer: all replaced.
 * The kept tail never starts inside a surrogate pair (one fewer character is kept instead).
 */
export function partialMask(value: string): string {
  const n = value.length;
  let digits = 0;
  for (let i = 0; i < n; i++) if (isDigit(value.charCodeAt(i))) digits++;
  if (digits >= 8) {
    let out = '';
    let seenDigits = 0;
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i);
      if (isDigit(c)) {
        seenDigits++;
        out += seenDigits > digits - 4 ? value[i] : '*';
      } else out += isSeparator(c) || (i === 0 && c === 43 /* + */) ? value[i] : '*';
    }
    return out;
  }
  const keep = n >= 8 ? 4 : n >= 5 ? 2 : 0;
  let from = n - keep;
  if (keep > 0 && isLowSurrogate(value.charCodeAt(from))) from++;
  return '*'.repeat(from) + value.slice(from);
}

const isLowSurrogate = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff;

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * `tok_` + the first 80 bits of HMAC-SHA-256(key, UTF-8 value) in lower-case RFC 4648 base32 (16
 * characters). Base32 rather than hex: sixteen decimal digits in a row (a card look-alike) are then
 * practically impossible, and lower case keeps it clear of the IBAN and AWS key id shapes.
 */
export function pseudonym(value: string, hashKey: Uint8Array): string {
  // node:crypto's HMAC, not a hand-written hash: about 3.5 µs a value; callers cache repeated values.
  const mac = createHmac('sha256', hashKey).update(value, 'utf8').digest();
  let out = 'tok_';
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < 10; i++) {
    acc = (acc << 8) | mac[i]!;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

function assertNever(x: never): never {
  throw new Error(`unknown masking strategy: ${String(x)}`);
}
