/**
 * fast-check generators of sensitive values (each valid for its detector: Luhn and IIN for cards,
 * mod-97 for IBANs…) and of the harmless text around them.
 */
import fc from 'fast-check';
import type { Detector } from '../../../../core/masking/vocabulary.ts';
import { fixtures } from './fixtures.ts';

/** A value as it sits in a cell, and the part of it a detector must mask. */
export interface Planted {
  readonly detector: Detector;
  readonly text: string;
  readonly secret: string;
}

const digits = (min: number, max = min): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: min, maxLength: max });
const from = (alphabet: string, min: number, max = min): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...alphabet), minLength: min, maxLength: max });
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const plain = (detector: Detector) => (text: string): Planted => ({ detector, text, secret: text });

function luhnCheckDigit(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = Number(body[body.length - 1 - i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

const CARD_BRANDS: readonly [prefix: string, length: number][] = [
  ['4', 16], ['4', 13], ['4', 19], ['51', 16], ['55', 16], ['2221', 16], ['2720', 16], ['34', 15], ['37', 15],
  ['6011', 16], ['65', 16], ['644', 16], ['3528', 16], ['3589', 16], ['36', 14], ['300', 14], ['38', 16], ['62', 16], ['62', 19],
];

export const card: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom(...CARD_BRANDS), digits(18), fc.constantFrom('', ' ', '-'))
  .map(([[prefix, length], fill, sep]) => {
    const body = (prefix + fill).slice(0, length - 1);
    const number = body + luhnCheckDigit(body);
    const groups = length === 15 ? [4, 6, 5] : length === 14 ? [4, 6, 4] : length === 13 ? [4, 3, 3, 3] : [4, 4, 4, 4, 3];
    const parts: string[] = [];
    let at = 0;
    for (const g of groups) if (at < number.length) parts.push(number.slice(at, (at += g)));
    return plain('card')(parts.join(sep));
  });

export const ssn: fc.Arbitrary<Planted> = fc
  .tuple(fc.integer({ min: 1, max: 899 }), fc.integer({ min: 1, max: 99 }), fc.integer({ min: 1, max: 9999 }))
  .filter(([a]) => a !== 666)
  .map(([a, g, s]) => `${String(a).padStart(3, '0')}-${String(g).padStart(2, '0')}-${String(s).padStart(4, '0')}`)
  .filter((v) => v !== '078-05-1120' && v !== '219-09-9999')
  .map(plain('ssn'));

const label = from('abcdefghijklmnopqrstuvwxyz0123456789', 1, 10);
export const email: fc.Arbitrary<Planted> = fc
  .tuple(
    fc.array(from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_', 1, 8), { minLength: 1, maxLength: 3 }),
    fc.option(from('abcdefghijklmnopqrstuvwxyz0123456789', 1, 6), { nil: undefined }),
    fc.array(label, { minLength: 1, maxLength: 3 }),
    from('abcdefghijklmnopqrstuvwxyz', 2, 6),
  )
  .map(([local, tag, domain, tld]) => plain('email')(`${local.join('.')}${tag ? `+${tag}` : ''}@${domain.join('.')}.${tld}`));

const npa = fc.tuple(fc.integer({ min: 2, max: 9 }), digits(2)).map(([a, b]) => `${a}${b}`);
export const phone: fc.Arbitrary<Planted> = fc.oneof(
  fc
    .tuple(npa, npa, digits(4), fc.constantFrom('(A) B-C', 'A-B-C', 'A.B.C', '1-A-B-C', '+1 (A) B-C', '+1A B C'))
    .map(([a, b, c, f]) => plain('phone')(f.replace('A', a).replace('B', b).replace('C', c))),
  fc
    .tuple(fc.integer({ min: 1, max: 999 }), fc.array(digits(2, 4), { minLength: 2, maxLength: 4 }))
    .map(([cc, groups]) => `+${cc} ${groups.join(' ')}`)
    .filter((v) => {
      const n = v.replace(/\D/g, '').length;
      return n >= 8 && n <= 15;
    })
    .map(plain('phone')),
);

/** Countries whose BBAN is all digits (any digits make a valid BBAN once the check digits fit). */
const IBAN_DIGIT_COUNTRIES: readonly [country: string, length: number][] = [
  ['DE', 22], ['NO', 15], ['BE', 16], ['PL', 28], ['ES', 24], ['AT', 20], ['CH', 21], ['FI', 18], ['DK', 18], ['SE', 24], ['PT', 25], ['SK', 24], ['CZ', 24], ['HR', 21],
];

function ibanCheckDigits(country: string, bban: string): string {
  const rearranged = bban + [...country].map((c) => String(c.charCodeAt(0) - 55)).join('') + '00';
  let r = 0;
  for (const ch of rearranged) r = (r * 10 + Number(ch)) % 97;
  return String(98 - r).padStart(2, '0');
}

export const iban: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom(...IBAN_DIGIT_COUNTRIES), digits(30), fc.boolean())
  .map(([[country, length], fill, grouped]) => {
    const bban = fill.slice(0, length - 4);
    const compact = country + ibanCheckDigits(country, bban) + bban;
    return plain('iban')(grouped ? compact.replace(/(.{4})(?=.)/g, '$1 ') : compact);
  });

export const awsAccessKey: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom('AKIA', 'ASIA', 'AROA', 'AIDA'), from('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16))
  .map(([p, rest]) => plain('aws_access_key')(p + rest));

export const awsSecretKey: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom('aws_secret_access_key=', 'AWS_SECRET_ACCESS_KEY: ', '"SecretAccessKey": "'), from(ALNUM + '+', 20), from(ALNUM, 19))
  .map(([name, a, b]): Planted => {
    const key = `${a}/${b}`;
    return { detector: 'aws_secret_key', text: name + key, secret: key };
  });

export const privateKey: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom('RSA PRIVATE KEY', 'EC PRIVATE KEY', 'PRIVATE KEY', 'OPENSSH PRIVATE KEY'), fc.array(from(ALNUM + '+/', 64), { minLength: 1, maxLength: 4 }))
  .map(([kind, lines]) => plain('private_key')(`-----BEGIN ${kind}-----\n${lines.join('\n')}\n-----END ${kind}-----`));

const b64url = (v: object): string => Buffer.from(JSON.stringify(v)).toString('base64url');
export const jwt: fc.Arbitrary<Planted> = fc
  .tuple(fc.constantFrom('HS256', 'RS256', 'ES256', 'EdDSA'), fc.dictionary(from('abcdefghij', 1, 5), fc.oneof(fc.string(), fc.integer())), from(ALNUM + '-_', 43, 86))
  .map(([alg, claims, signature]) => plain('jwt')(`${b64url({ alg, typ: 'JWT' })}.${b64url(claims)}.${signature}`));

export const apiToken: fc.Arbitrary<Planted> = fc.oneof(
  fc.tuple(fc.constantFrom('ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_'), from(ALNUM, 36)).map(([p, b]) => plain('api_token')(p + b)),
  from(ALNUM + '_', 82).map((b) => plain('api_token')('github_pat_' + b)),
  fc.tuple(fc.constantFrom('xoxb-', 'xoxp-'), digits(10, 12), digits(10, 13), from(ALNUM, 24)).map(([p, a, b, c]) => plain('api_token')(`${p}${a}-${b}-${c}`)),
  fc.tuple(fc.constantFrom('sk_live_', 'rk_live_', 'pk_test_', 'sk_test_'), from(ALNUM, 24, 40)).map(([p, b]) => plain('api_token')(p + b)),
  from(ALNUM + '-_', 35).map((b) => plain('api_token')('AIza' + b)),
  fc.tuple(fc.constantFrom('sk-', 'sk-proj-', 'sk-ant-api03-'), from(ALNUM + '-_', 20, 60), digits(1)).map(([p, b, d]) => plain('api_token')(p + d + b)),
  from(ALNUM, 36).map((b) => plain('api_token')('npm_' + b)),
  fc.tuple(fc.constantFrom('Bearer ', 'bearer '), from(ALNUM + '._~+/-', 20, 60)).map(([p, t]): Planted => ({ detector: 'api_token', text: p + t, secret: t })),
);

export const planted: fc.Arbitrary<Planted> = fc.oneof(card, ssn, email, phone, iban, awsAccessKey, awsSecretKey, privateKey, jwt, apiToken);

/** Words and separators no detector matches, however they are combined. */
export const filler: fc.Arbitrary<string> = fc.constantFrom('hello', 'world', 'status', 'ok', 'note', 'id', 'the', 'and', 'Zoë', 'naïve', 'a', 'Pro', 'x-y', '—', '…');
export const separator: fc.Arbitrary<string> = fc.constantFrom(' ', ', ', '\n', '\t', ' | ', '; ', '", "', ' (', ') ', ': ');

/** A cell: filler words and planted values, always a separator between two pieces. */
export const cell: fc.Arbitrary<{ text: string; planted: Planted[] }> = fc
  .array(fc.oneof({ arbitrary: filler, weight: 2 }, { arbitrary: planted, weight: 1 }), { minLength: 1, maxLength: 8 })
  .chain((pieces) => fc.tuple(fc.constant(pieces), fc.array(separator, { minLength: pieces.length + 1, maxLength: pieces.length + 1 })))
  .map(([pieces, seps]) => {
    let text = seps[0]!;
    const found: Planted[] = [];
    pieces.forEach((p, i) => {
      text += typeof p === 'string' ? p : p.text;
      if (typeof p !== 'string') found.push(p);
      text += seps[i + 1]!;
    });
    return { text, planted: found };
  });

export { fixtures };
