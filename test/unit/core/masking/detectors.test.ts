import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { detectorBits, findSensitive, scanText } from '../../../../core/masking/detectors.ts';
import { ALL_DETECTORS, Detector } from '../../../../core/masking/vocabulary.ts';
import { fixtures } from './fixtures.ts';

/** The detected values of `text` as `[detector, value]` pairs. */
function found(text: string, detectors: readonly Detector[] = ALL_DETECTORS): [Detector, string][] {
  return findSensitive(text, detectors).map((m) => [m.detector, text.slice(m.start, m.end)]);
}

/** A value in the places it turns up: alone, in JSON, in a CSV line, in a sentence. */
const CONTEXTS: readonly { readonly name: string; readonly wrap: (v: string) => string; readonly escape: (v: string) => string }[] = [
  { name: 'alone', wrap: (v) => v, escape: (v) => v },
  { name: 'JSON', wrap: (v) => JSON.stringify({ id: 7, value: v, ok: true }), escape: (v) => JSON.stringify(v).slice(1, -1) },
  { name: 'CSV', wrap: (v) => `7,"Alice Martin",${v},2024-03-18`, escape: (v) => v },
  { name: 'sentence', wrap: (v) => `Please note ${v} for the record.`, escape: (v) => v },
];

/**
 * True positives per detector. `text` is what sits in the cell, `match` the part masked (the token of
 * `Bearer <token>`, the key of `aws_secret_access_key=<key>`).
 */
const POSITIVES: Record<Detector, readonly (string | { text: string; match: string })[]> = {
  card: [
    '4111111111111111',
    '4111 1111 1111 1111',
    '4111-1111-1111-1111',
    '4222222222222', // Visa, 13 digits
    '5555555555554444',
    '5105 1051 0510 5100',
    '2221000000000009', // Mastercard 2-series
    '378282246310005', // Amex
    '3782 822463 10005', // Amex 4-6-5
    '6011111111111117', // Discover
    '6011-0009-9013-9424',
    '3530111333300000', // JCB
    '30569309025904', // Diners, 14 digits
    '3852 000002 3237',
    '6200000000000005', // UnionPay
  ],
  ssn: ['123-45-6789', '001-01-0001', '665-99-9999', '667-12-3456', '899-12-3456'],
  email: [
    'john.smith@example.com',
    'a.b+tag@mail.example.co.uk',
    'Alice_Martin-99@Example.COM',
    'o.connor%ops@sub-domain.example.io',
    'josé.garcía@exemple.fr',
    'x@ab.cd',
  ],
  phone: [
    '+1 (415) 555-2671',
    '+14155552671',
    '+44 20 7946 0958',
    '+44 (0)20 7946 0958',
    '+49 30 901820',
    '+33 1 23 45 67 89',
    '+81-3-1234-5678',
    '(415) 555-2671',
    '(415)555-2671',
    '415-555-2671',
    '415.555.2671',
    '1-800-555-0199',
  ],
  iban: [
    'DE89 3704 0044 0532 0130 00',
    'DE89370400440532013000',
    'GB82 WEST 1234 5698 7654 32',
    'FR14 2004 1010 0505 0001 3M02 606',
    'NL91ABNA0417164300',
    'BE68539007547034',
    'CH9300762011623852957',
    'ES9121000418450200051332',
    'IT60X0542811101000000123456',
    'NO9386011117947',
    'PL61 1090 1014 0000 0712 1981 2874',
    'AT611904300234573201',
    'RO49 AAAA 1B31 0075 9384 0000', // letters inside the BBAN
    'MT84 MALT 0110 0001 2345 MTLC AST0 01S',
    'GB29 NWBK 6016 1331 9268 19',
  ],
  aws_access_key: ['AKIAIOSFODNN7EXAMPLE', 'ASIAY34FZKBOKMUTVV7A', 'AROA3XFRBF535PLBIFPI', { text: 'AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE', match: 'AKIAIOSFODNN7EXAMPLE' }],
  aws_secret_key: [
    { text: 'aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', match: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
    { text: 'AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', match: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
    { text: 'SecretAccessKey: 9drTJvcXLB89EXAMPLELB8923FB892xMFI8z2Gv4', match: '9drTJvcXLB89EXAMPLELB8923FB892xMFI8z2Gv4' },
    { text: 'secret 8Zx+Kd3q/eRtY7uIoP1aSdFgHjKlZxCvBnM0qW2e', match: '8Zx+Kd3q/eRtY7uIoP1aSdFgHjKlZxCvBnM0qW2e' },
  ],
  private_key: [fixtures.pemRsa, fixtures.pemEc, fixtures.pemOpenssh, fixtures.pemPkcs8, fixtures.pemEncrypted, fixtures.pemDsa, fixtures.pemPgp],
  jwt: [fixtures.jwtHs256, fixtures.jwtNone, fixtures.jwe, { text: `Authorization: Bearer ${fixtures.jwtHs256}`, match: fixtures.jwtHs256 }],
  api_token: [
    fixtures.githubPat,
    'gho_' + 'Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2',
    fixtures.githubFineGrained,
    'xoxb-2048000000-4096000000000-Zq8WvT2nLk5Rb9Xc3Mf6Hp1J',
    'xoxp-1234567890-1234567890-1234567890-abcdef0123456789abcdef0123456789',
    fixtures.stripeLive,
    'rk_live_Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4',
    'pk_test_Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4',
    fixtures.googleKey,
    'sk-Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2Lm5Ko3Pq',
    'sk-proj-Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2Lm5Ko3Pq-Xy_z',
    'sk-ant-api03-Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8Ni2Lm5Ko3Pq_Zq8WvT2nLk5Rb9Xc3-AA',
    'npm_Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0Ue8N',
    { text: 'Authorization: Bearer 2YotnFZFEjr1zCsicMWpAA.tGzv3JOkF0XG5Qx2TlKWIA', match: '2YotnFZFEjr1zCsicMWpAA.tGzv3JOkF0XG5Qx2TlKWIA' },
    { text: 'GITHUB_TOKEN=' + fixtures.githubPat, match: fixtures.githubPat },
  ],
};

describe('true positives: each detector finds its values alone, in JSON, in CSV and in a sentence', () => {
  for (const detector of ALL_DETECTORS) {
    test(detector, () => {
      for (const p of POSITIVES[detector]) {
        const { text, match } = typeof p === 'string' ? { text: p, match: p } : p;
        for (const ctx of CONTEXTS) {
          const cell = ctx.wrap(text);
          assert.deepEqual(found(cell), [[detector, ctx.escape(match)]], `${ctx.name}: ${cell}`);
          assert.deepEqual(found(cell, [detector]), [[detector, ctx.escape(match)]], `${ctx.name}, only ${detector}: ${cell}`);
        }
      }
    });
  }
});

/** Look-alikes: nothing is detected in any of these, all detectors on. */
const NOTHING: Record<string, readonly string[]> = {
  'a 16-digit order number with a card prefix failing Luhn': ['4111111111111112', 'order 4111 1111 1111 1112 shipped'],
  'a Luhn-valid 16-digit number without a card prefix': ['1234567812345670', 'ref 1234-5678-1234-5670'],
  'a card number glued to letters or a decimal point': ['ID4111111111111111', '4111111111111111X', '0.4111111111111111', 'x4111 1111 1111 1111'],
  'card digits in a longer number': ['41111111111111110000', '4111-1111-1111-1111-1111'],
  'ISBNs': ['ISBN 978-3-16-148410-0', '9783161484100', '0-306-40615-2', 'ISBN-10: 0306406152'],
  'dates and times': ['2024-01-15', '2024-01-15T10:30:00Z', '15/01/2024', '2024-01-15 10:30:00', '20240115103000'],
  'IPv4 addresses': ['192.168.1.1', '10.0.0.255', '172.16.254.1:5432', 'from 192.168.100.200 to 10.20.30.40'],
  'UUIDs': ['550e8400-e29b-41d4-a716-446655440000', '12345678-1234-4234-9234-123456789012', '{"id":"c0a8f3e2-5b7d-4e1a-9f6c-2d8b7a1e4f90"}'],
  'hashes and git commit ids': [
    'da39a3ee5e6b4b0d3255bfef95601890afd80709',
    'secret: da39a3ee5e6b4b0d3255bfef95601890afd80709',
    'DA39A3EE5E6B4B0D3255BFEF95601890AFD80709 secret',
    'commit 8040daa0c3f9e1b2d4a6f8e0c2b4d6f8a0c2e4f6 (secret sauce)',
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  ],
  'version strings': ['v1.2.3', '1.2.3.4', 'node 20.19.43', 'version 10.100.200.3000'],
  'plain digit runs': ['4155552671', '123456789', 'order 5551234567 shipped'],
  'emails without a real domain': ['user@localhost', 'root@10.0.0.1', 'a@b', 'foo@bar.c', '@mention', 'x@y.123', 'name@'],
  'SSNs never issued': ['000-12-3456', '666-12-3456', '900-12-3456', '999-99-9999', '123-00-4567', '123-45-0000', '078-05-1120', '219-09-9999'],
  'SSN-shaped parts of longer numbers': ['1123-45-6789', '123-45-67890', '9-123-45-6789', 'A123-45-6789'],
  'phone look-alikes': ['123-456-7890', '415-055-2671', '+1234567', '+12345678901234567', 'C++14 and C+17', '10.234.567.8901', '0-415-555-2671x'],
  'IBANs with a wrong check digit, length or country': ['DE89 3704 0044 0532 0130 01', 'DE89 3704 0044 0532 0130 0', 'ZZ89370400440532013000', 'de89370400440532013000', 'XDE89370400440532013000'],
  'AWS key look-alikes': ['AKIAIOSFODNN7EXAMPL', 'AKIAIOSFODNN7EXAMPLE1', 'AKIA1234567890123456', 'akiaiosfodnn7example', 'XAKIAIOSFODNN7EXAMPLE'],
  'AWS secret key without evidence': ['wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'note: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'],
  'other PEM blocks': ['-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----', '-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n-----END CERTIFICATE-----'],
  'JWT look-alikes': [
    'eyJub3RhbGciOjF9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl', // header without alg
    'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.', // HS256 without a signature
    'eyJhbGciOiJIUzI1NiJ9', // a header alone
    'eyJ!!!.eyJzdWIiOiIxIn0.c2ln',
  ],
  'API token look-alikes': [
    'ghp_short',
    'sk-learn-something-interesting-here',
    'task-Zq8WvT2nLk5Rb9Xc3Mf6Hp1Jd4Gs7Ay0',
    'npm_install_the_dependencies_please_now_ok',
    'Bearer short',
    'xoxb-123',
    'sk_live_short',
    'AIzaShort',
  ],
  'ordinary cells': ['Alice Martin', 'active', '', 'a', 'Zoë Dubois', '{"plan":"Pro (annual)","score":8123.55}', 'The quarterly report was filed on 2024-03-18; see ticket 8812.'],
};

describe('look-alikes are not detected', () => {
  for (const [what, cells] of Object.entries(NOTHING)) {
    test(what, () => {
      for (const cell of cells) assert.deepEqual(found(cell), [], cell);
    });
  }
});

describe('overlaps: one span, labelled by the more specific detector, nothing left outside it', () => {
  test('a PEM block swallows the email and token inside it', () => {
    const cell = fixtures.pemRsa.replace('\n-----END', '\nops@example.com ' + fixtures.githubPat + '\n-----END');
    assert.deepEqual(found(cell), [['private_key', cell]]);
  });
  test('a JWT after Bearer is a JWT, not a bearer token', () => {
    assert.deepEqual(found(`Bearer ${fixtures.jwtHs256}`), [['jwt', fixtures.jwtHs256]]);
  });
  test('a card number that also reads as an international phone number is a card, and the + goes with it', () => {
    assert.deepEqual(found('+378282246310005'), [['card', '+378282246310005']]);
  });
  test('card-like digits inside an IBAN are the IBAN', () => {
    // DE89 3704 0044 0532 0130 00 holds "3704 0044 0532 013" (Amex-shaped); whatever is found, the
    // IBAN is one match.
    assert.deepEqual(found('DE89 3704 0044 0532 0130 00'), [['iban', 'DE89 3704 0044 0532 0130 00']]);
  });
  test('an email whose local part is card digits is one match', () => {
    const [only, ...rest] = findSensitive('pay 4111111111111111@cards.example.com now', ALL_DETECTORS);
    assert.equal(rest.length, 0);
    assert.equal(only?.start, 4);
    assert.equal(only?.end, 4 + '4111111111111111@cards.example.com'.length);
  });
  test('several values in one cell come back sorted and apart', () => {
    const cell = `{"email":"a@example.com","ssn":"123-45-6789","card":"4111 1111 1111 1111","key":"AKIAIOSFODNN7EXAMPLE","tel":"+44 20 7946 0958"}`;
    assert.deepEqual(
      found(cell).map(([d]) => d),
      ['email', 'ssn', 'card', 'aws_access_key', 'phone'],
    );
  });
  test('a card at the end of a long run of space-separated numbers is found', () => {
    for (const lead of [1, 58, 59, 60, 61, 62, 63, 64, 65, 200]) {
      const cell = '123 '.repeat(lead) + '4111 1111 1111 1111';
      assert.deepEqual(found(cell).at(-1), ['card', '4111 1111 1111 1111'], `after ${lead} numbers`);
    }
  });
  test('a trailing sentence dot is not part of an email; a truncated PEM block runs to the end of the cell', () => {
    assert.deepEqual(found('write to bob@example.org.'), [['email', 'bob@example.org']]);
    const truncated = fixtures.pemRsa.slice(0, 80);
    assert.deepEqual(found(`key: ${truncated}`), [['private_key', truncated]]);
  });
});

describe('enabled detectors', () => {
  test('only the enabled detectors run', () => {
    const cell = 'a@example.com 123-45-6789';
    assert.deepEqual(found(cell, ['ssn']), [['ssn', '123-45-6789']]);
    assert.deepEqual(found(cell, ['email']), [['email', 'a@example.com']]);
    assert.deepEqual(found(cell, []), []);
  });
  test('an AWS secret key needs no enabled key id detector to use the key id as evidence', () => {
    const cell = 'AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    assert.deepEqual(found(cell, ['aws_secret_key']), [['aws_secret_key', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY']]);
    assert.deepEqual(found(cell).map(([d]) => d), ['aws_access_key', 'aws_secret_key']);
  });
  test('scanText returns undefined, not an empty array, when nothing matches', () => {
    assert.equal(scanText('Alice Martin', detectorBits(ALL_DETECTORS)), undefined);
    assert.equal(detectorBits(ALL_DETECTORS), (1 << ALL_DETECTORS.length) - 1);
  });
});

describe('hostile input of 1 MB is scanned in linear time', () => {
  const MB = 1 << 20;
  const hostile: Record<string, string> = {
    "'@' repeated": '@'.repeat(MB),
    "'a@' repeated": 'a@'.repeat(MB / 2),
    'a long local part, then @': 'a'.repeat(MB) + '@example.com',
    'dotted labels after @': 'x@' + 'a.'.repeat(MB / 2),
    'digits joined by dashes': '1-'.repeat(MB / 2),
    'card-prefix digits joined by spaces': '4 '.repeat(MB / 2),
    'digits': '4'.repeat(MB),
    'groups of four digits': '4111 '.repeat(MB / 5),
    'dashed digit triples': '123-'.repeat(MB / 4),
    "'+1' repeated": '+1'.repeat(MB / 2),
    'open parentheses and digits': '(415) '.repeat(MB / 6),
    'dots and digits': '1.'.repeat(MB / 2),
    "'eyJ.' repeated": 'eyJ.'.repeat(MB / 4),
    'one huge JWT-shaped header': 'eyJ' + 'A'.repeat(MB) + '.e30.',
    "'-----BEGIN ' repeated": '-----BEGIN '.repeat(MB / 11),
    'BEGIN lines without END': '-----BEGIN RSA PRIVATE KEY-----'.repeat(MB / 32),
    "'sk-' repeated": '-sk-'.repeat(MB / 4),
    "'ghp_' repeated": '_ghp_'.repeat(MB / 5),
    'AKIA repeated': ' AKIA'.repeat(MB / 5),
    'capital letters': 'A'.repeat(MB),
    'base64 with a secret name': 'secret ' + 'Ab1/'.repeat(MB / 4),
    '39-character base64 runs with a key id': 'AKIAIOSFODNN7EXAMPLE ' + ('Ab1/'.repeat(10).slice(0, 39) + ' ').repeat(MB / 40),
    'IBAN starts': 'DE89 '.repeat(MB / 5),
    "'Bearer ' repeated": 'Bearer '.repeat(MB / 7),
    'xox repeated': '-xoxb-'.repeat(MB / 6),
  };
  for (const [what, text] of Object.entries(hostile)) {
    test(what, () => {
      const matches = findSensitive(text, ALL_DETECTORS);
      for (let i = 1; i < matches.length; i++) assert.ok(matches[i]!.start >= matches[i - 1]!.end);
    });
  }
});
