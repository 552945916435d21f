/**
 * ResultMasker from bytes alone: RowDescription fields in, DataRow bodies in, DataRow messages out.
 * Properties over generated results (fast-check), then the statement evidence (`takeSummary`) counted
 * cell by cell.
 *
 * When a rule may leave a cell as it was: only when the value has nothing left to hide, i.e. it is
 * already its own mask (`partial` of '' or of '****1234', `redact` of '[REDACTED]'). Any non-empty
 * value without a '*' and other than the placeholder changes: partial always replaces at least one
 * character by '*' (all of a value of 4 characters or fewer, all but 2 of 5 to 7, all but 4 of longer
 * ones, every digit but the last four of a number). The generated originals are such values; the fixed
 * points are listed in an example test.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { findSensitive } from '../../../../../core/masking/detectors.ts';
import { maskValue } from '../../../../../core/masking/strategies.ts';
import { ALL_DETECTORS, type MaskingPolicy } from '../../../../../core/masking/vocabulary.ts';
import type { MaskingCatalog, ResolvedRule } from '../../../../../proxy-task/src/postgres/masking/masking-catalog.ts';
import { ResultMasker, type MaskedCell } from '../../../../../proxy-task/src/postgres/masking/result-masker.ts';
import { decodeDataRowCells, JSONB_TYPE, TEXT_LIKE_TYPES, type FieldDescription } from '../../../../../proxy-task/src/postgres/masking/result-messages.ts';
import { cell as plantedCell } from '../../../core/masking/arbitraries.ts';

// ---- a fixed rule map -------------------------------------------------------------------------------------

const PEOPLE = 16_384;
const ORDERS = 16_390;

const RULES: ReadonlyMap<string, ResolvedRule> = new Map([
  [`${PEOPLE}:3`, { source: 'public.people.email', strategy: 'redact' }],
  [`${PEOPLE}:4`, { source: 'public.people.ssn', strategy: 'partial' }],
  [`${PEOPLE}:5`, { source: 'public.people.card', strategy: 'hash' }],
  [`${PEOPLE}:6`, { source: 'public.people.salary', strategy: 'null' }],
]);

/** Where a result column may come from: a ruled column, an unruled column of a ruled table, another table, an expression. */
const RULED_SOURCES: readonly (readonly [number, number])[] = [
  [PEOPLE, 3],
  [PEOPLE, 4],
  [PEOPLE, 5],
  [PEOPLE, 6],
];
const UNRULED_SOURCES: readonly (readonly [number, number])[] = [
  [PEOPLE, 1],
  [PEOPLE, 2],
  [PEOPLE, 0],
  [ORDERS, 3],
  [0, 0],
];

/**
 * The catalog as the masker uses it: only `lookup`. (A cast, as MaskingCatalog is a class with private
 * state; the masker needs nothing else of it.)
 */
const catalog = {
  lookup: (tableOid: number, attnum: number): ResolvedRule | undefined => (tableOid === 0 ? undefined : RULES.get(`${tableOid}:${attnum}`)),
} as unknown as MaskingCatalog;

const POLICY: MaskingPolicy = {
  columns: [
    { schema: 'public', table: 'people', column: 'email', strategy: 'redact' },
    { schema: 'public', table: 'people', column: 'ssn', strategy: 'partial' },
    { schema: 'public', table: 'people', column: 'card', strategy: 'hash' },
    { schema: 'public', table: 'people', column: 'salary', strategy: 'null' },
  ],
  detectors: ALL_DETECTORS,
  detectorStrategy: 'redact',
  unmaskedGroups: [],
};

const HASH_KEY = new Uint8Array(32).fill(7);

const newMasker = (): ResultMasker => new ResultMasker(POLICY, catalog, HASH_KEY);

// ---- bytes ------------------------------------------------------------------------------------------------

const INT4 = 23;
const INT8 = 20;
const BOOL = 16;
const BYTEA = 17;
const TEXT_ARRAY = 1009;
const TYPES: readonly number[] = [25, 1043, 1042, 19, 114, JSONB_TYPE, INT4, INT8, BOOL, BYTEA, TEXT_ARRAY];
/** Types whose binary form is not their text. */
const NON_TEXT_TYPES: readonly number[] = [INT4, INT8, BOOL, BYTEA, TEXT_ARRAY];

/** A DataRow body: cell count, then each cell as length + bytes (-1 for NULL). */
function dataRowBody(cells: readonly (Buffer | null)[]): Buffer {
  const parts: Buffer[] = [Buffer.alloc(2)];
  parts[0]!.writeInt16BE(cells.length);
  for (const c of cells) {
    const len = Buffer.alloc(4);
    len.writeInt32BE(c === null ? -1 : c.length);
    parts.push(len);
    if (c) parts.push(c);
  }
  return Buffer.concat(parts);
}

/** The cells of a DataRow message, after checking its framing. */
function cellsOf(message: Buffer): (Buffer | null)[] {
  assert.equal(message[0], 0x44, 'a DataRow');
  assert.equal(message.readInt32BE(1), message.length - 1, 'its length field counts the whole message but the type byte');
  const cells = decodeDataRowCells(message.subarray(5));
  const reencoded = dataRowBody(cells);
  assert.equal(reencoded.length, message.length - 5, 'no bytes after the last cell');
  return cells;
}

type Encoding = 'text' | 'jsonb' | 'opaque';
const encodingOf = (f: FieldDescription): Encoding => (f.format === 0 || TEXT_LIKE_TYPES.has(f.typeOid) ? 'text' : f.typeOid === JSONB_TYPE ? 'jsonb' : 'opaque');

/** The text a cell holds, as the masker reads it (after jsonb's version byte). */
const textOf = (cell: Buffer, e: Encoding): string => (e === 'jsonb' ? cell.toString('utf8', 1) : cell.toString('utf8'));
const cellOf = (text: string, e: Encoding): Buffer => (e === 'jsonb' ? Buffer.concat([Buffer.from([1]), Buffer.from(text, 'utf8')]) : Buffer.from(text, 'utf8'));

// ---- arbitraries ------------------------------------------------------------------------------------------

function field(sources: readonly (readonly [number, number])[], types = TYPES, formats: readonly number[] = [0, 1]): fc.Arbitrary<FieldDescription> {
  return fc.record({
    source: fc.constantFrom(...sources),
    typeOid: fc.constantFrom(...types),
    format: fc.constantFrom(...formats),
    name: fc.constantFrom('a', 'ssn', 'x?column?'),
  }).map(({ source, typeOid, format, name }) => ({ name, tableOid: source[0], attnum: source[1], typeOid, format }));
}

/** Text with the characters detectors key on, or anything at all (well-formed, so it survives UTF-8). */
const anyText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 60 }),
  fc.string({ unit: fc.constantFrom(...'0123456789 -.()+@_AKIaeyJskx/=:*[]'), maxLength: 60 }),
);

/** Bytes a cell may hold: text of either kind, or anything (invalid UTF-8 included). */
const anyBytes = fc.oneof(
  anyText.map((s) => Buffer.from(s, 'utf8')),
  fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
);

/** Cells no detector matches, read as text or as jsonb text. */
const harmlessBytes = anyBytes.filter((b) => findSensitive(b.toString('utf8'), ALL_DETECTORS).length === 0 && findSensitive(b.toString('utf8', 1), ALL_DETECTORS).length === 0);

/** A non-empty value that is not its own mask: no '*', not the placeholder (see the header). */
const maskableText = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
  fc.string({ unit: fc.constantFrom(...'0123456789 -.()+abcXYZ@é'), minLength: 1, maxLength: 40 }),
).filter((s) => !s.includes('*') && s !== '[REDACTED]');

/** A row: its fields, and for each field a cell (NULL about one time in five). */
function row(fields: fc.Arbitrary<FieldDescription>, cell: (f: FieldDescription) => fc.Arbitrary<Buffer>): fc.Arbitrary<{ fields: FieldDescription[]; cells: (Buffer | null)[] }> {
  return fc
    .array(fields, { minLength: 1, maxLength: 8 })
    .chain((fs) => fc.tuple(fc.constant(fs), fc.tuple(...fs.map((f) => fc.option(cell(f), { nil: null, freq: 5 })))))
    .map(([fs, cells]) => ({ fields: fs, cells }));
}

const RUNS = { numRuns: 800 };

// ---- properties -------------------------------------------------------------------------------------------

describe('ResultMasker properties', () => {
  test('a cell no rule covers and no detector matches is sent byte for byte as it came', () => {
    fc.assert(
      fc.property(row(field(UNRULED_SOURCES), () => harmlessBytes), ({ fields, cells }) => {
        const m = newMasker();
        m.describe(fields);
        assert.deepEqual(cellsOf(m.maskRow(dataRowBody(cells))), cells);
        assert.equal(m.takeSummary(), undefined, 'nothing masked, nothing to report');
      }),
      RUNS,
    );
  });

  test('the row keeps its column count, and NULL cells stay NULL, whatever the columns and cells', () => {
    fc.assert(
      fc.property(row(field([...RULED_SOURCES, ...UNRULED_SOURCES]), () => anyBytes), ({ fields, cells }) => {
        const m = newMasker();
        m.describe(fields);
        const out = cellsOf(m.maskRow(dataRowBody(cells)));
        assert.equal(out.length, cells.length);
        cells.forEach((c, i) => {
          if (c === null) assert.equal(out[i], null, `column ${i}`);
        });
      }),
      RUNS,
    );
  });

  test('a ruled cell that holds text becomes its strategy’s mask, never the original; a binary one of another type becomes NULL', () => {
    const ruled = field(RULED_SOURCES);
    fc.assert(
      fc.property(
        row(ruled, (f) => (encodingOf(f) === 'opaque' ? anyBytes : maskableText.map((s) => cellOf(s, encodingOf(f))))),
        ({ fields, cells }) => {
          const m = newMasker();
          m.describe(fields);
          const out = cellsOf(m.maskRow(dataRowBody(cells)));
          fields.forEach((f, i) => {
            const original = cells[i]!;
            const masked = out[i]!;
            if (original === null) return;
            const rule = RULES.get(`${f.tableOid}:${f.attnum}`)!;
            const e = encodingOf(f);
            if (e === 'opaque' || rule.strategy === 'null') {
              assert.equal(masked, null, `${rule.source} (${f.typeOid}/${f.format}) is NULL`);
              return;
            }
            assert.ok(masked !== null, rule.source);
            if (e === 'jsonb') assert.equal(masked[0], 1, 'jsonb keeps its version byte');
            const text = textOf(original, e);
            assert.equal(textOf(masked, e), maskValue(text, rule.strategy, { label: 'REDACTED', hashKey: HASH_KEY }));
            assert.notEqual(textOf(masked, e), text, `${rule.strategy} left ${JSON.stringify(text)} as it was`);
          });
        },
      ),
      RUNS,
    );
  });

  test('a binary cell of a non-text type is NULL with a rule and byte-identical without one', () => {
    fc.assert(
      fc.property(row(field([...RULED_SOURCES, ...UNRULED_SOURCES], NON_TEXT_TYPES, [1]), () => fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a))), ({ fields, cells }) => {
        const m = newMasker();
        m.describe(fields);
        const out = cellsOf(m.maskRow(dataRowBody(cells)));
        fields.forEach((f, i) => {
          if (RULES.has(`${f.tableOid}:${f.attnum}`)) assert.equal(out[i], null, `ruled column ${i}`);
          else assert.deepEqual(out[i], cells[i], `unruled column ${i}`);
        });
      }),
      RUNS,
    );
  });

  test('a value a detector knows, in a text cell no rule covers, does not get through', () => {
    const textField = field(UNRULED_SOURCES, [25, 1043, 114], [0, 1]);
    fc.assert(
      fc.property(textField, plantedCell, (f, { text, planted }) => {
        const m = newMasker();
        m.describe([f]);
        const out = cellsOf(m.maskRow(dataRowBody([cellOf(text, 'text')])));
        const masked = out[0]!.toString('utf8');
        for (const p of planted) assert.ok(!masked.includes(p.secret), `${p.detector} ${JSON.stringify(p.secret)} in ${JSON.stringify(masked)}`);
      }),
      { numRuns: 500 },
    );
  });

  test(
    'a value a detector knows, inside a binary cell of a non-text type (text[], record, bytea), does not get through',
    () => {
      const m = newMasker();
      m.describe([{ name: 'array_agg', tableOid: 0, attnum: 0, typeOid: TEXT_ARRAY, format: 1 }]);
      // A one-dimensional text[] in binary: ndim, has-nulls, element type, then size and lower bound, then each element.
      const element = Buffer.from('536-22-8147', 'utf8');
      const head = Buffer.alloc(20);
      head.writeInt32BE(1, 0);
      head.writeInt32BE(0, 4);
      head.writeInt32BE(25, 8);
      head.writeInt32BE(1, 12);
      head.writeInt32BE(1, 16);
      const len = Buffer.alloc(4);
      len.writeInt32BE(element.length);
      const [out = null] = cellsOf(m.maskRow(dataRowBody([Buffer.concat([head, len, element])])));
      assert.ok(out === null || !out.toString('latin1').includes('536-22-8147'), out?.toString('latin1'));
    },
  );
});

describe('ResultMasker: the cells a rule leaves as they were', () => {
  test('only values that are already their own mask', () => {
    const m = newMasker();
    m.describe([
      { name: 'ssn', tableOid: PEOPLE, attnum: 4, typeOid: 25, format: 0 },
      { name: 'ssn', tableOid: PEOPLE, attnum: 4, typeOid: 25, format: 0 },
      { name: 'email', tableOid: PEOPLE, attnum: 3, typeOid: 25, format: 0 },
      { name: 'ssn', tableOid: PEOPLE, attnum: 4, typeOid: 25, format: 0 },
    ]);
    // A masked SSN is not a fixed point: '***-**-1234' has 4 digits, so partial masks it as text.
    const cells = ['', '****1234', '[REDACTED]', '***-**-1234'].map((s) => Buffer.from(s));
    const out = cellsOf(m.maskRow(dataRowBody(cells)));
    assert.deepEqual(
      out.map((c) => c?.toString()),
      ['', '****1234', '[REDACTED]', '*******1234'],
    );
  });
});

// ---- the evidence -----------------------------------------------------------------------------------------

describe('ResultMasker.takeSummary', () => {
  const int4 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  const FIELDS: FieldDescription[] = [
    { name: 'ssn', tableOid: PEOPLE, attnum: 4, typeOid: 25, format: 0 },
    { name: 'email', tableOid: PEOPLE, attnum: 3, typeOid: 25, format: 0 },
    { name: 'salary', tableOid: PEOPLE, attnum: 6, typeOid: INT4, format: 1 },
    { name: 'note', tableOid: 0, attnum: 0, typeOid: 25, format: 0 },
    { name: 'again', tableOid: PEOPLE, attnum: 4, typeOid: 1043, format: 1 },
    { name: 'id', tableOid: PEOPLE, attnum: 1, typeOid: INT4, format: 1 },
  ];
  const ROWS: (Buffer | null)[][] = [
    [Buffer.from('536-22-8147'), Buffer.from('a@example.com'), int4(123457), Buffer.from('mail b@example.org and c@example.net'), Buffer.from('536-22-8147'), int4(1)],
    [null, Buffer.from('x@example.com'), null, Buffer.from('nothing to see'), Buffer.from('471-83-2956'), int4(2)],
    [Buffer.from('12'), null, int4(5), Buffer.from('card 4111 1111 1111 1111, ssn 471-83-2956'), null, int4(3)],
  ];

  test('counts masked cells per column rule (two result columns of one rule add up) and values per detector', () => {
    const m = newMasker();
    const vault: MaskedCell[] = [];
    m.onMasked((c) => vault.push(c));
    m.describe(FIELDS);
    for (const r of ROWS) m.maskRow(dataRowBody(r));
    m.endResult();
    assert.equal(m.maskMessageText('Key (email)=(q@example.com) already exists.'), 'Key (email)=([EMAIL]) already exists.');

    const s = m.takeSummary();
    assert.ok(s);
    assert.deepEqual(
      [...s.columns].sort((a, b) => a.column.localeCompare(b.column)),
      [
        { column: 'public.people.email', strategy: 'redact', cells: 2 },
        { column: 'public.people.salary', strategy: 'null', cells: 2 },
        { column: 'public.people.ssn', strategy: 'partial', cells: 4 },
      ],
    );
    assert.deepEqual(
      [...s.detectors].sort((a, b) => a.detector.localeCompare(b.detector)),
      [
        { detector: 'card', values: 1 },
        { detector: 'email', values: 3 }, // two in a row, one in the message text
        { detector: 'ssn', values: 1 },
      ],
    );
    assert.equal(s.nulledBinary, 2, 'the binary int4 salary cells');

    // Each masked cell's original went to the vault (message texts are not results: they do not).
    assert.equal(vault.filter((c) => c.source).length, 8);
    assert.equal(vault.filter((c) => c.detector).length, 4);
    assert.deepEqual(
      vault.filter((c) => c.detector).map((c) => [c.row, c.column, c.detector, c.original]),
      [
        [0, 3, 'email', 'b@example.org'],
        [0, 3, 'email', 'c@example.net'],
        [2, 3, 'card', '4111 1111 1111 1111'],
        [2, 3, 'ssn', '471-83-2956'],
      ],
    );
    assert.deepEqual(vault.find((c) => c.source === 'public.people.salary'), { row: 0, column: 2, columnName: 'salary', source: 'public.people.salary', original: int4(123457).toString('base64') });

    assert.equal(m.takeSummary(), undefined, 'the counts start again after each statement');
  });

  test('rows of a result nobody described are not masked or counted, and the counts are per statement', () => {
    const m = newMasker();
    m.describe(FIELDS);
    m.maskRow(dataRowBody(ROWS[0]!));
    m.endResult();
    // A DataRow after the result ended (no RowDescription): sent as it came, nothing counted.
    const out = cellsOf(m.maskRow(dataRowBody(ROWS[1]!)));
    assert.deepEqual(out, ROWS[1]);
    const first = m.takeSummary();
    assert.deepEqual(
      first?.columns.map((c) => [c.column, c.cells]).sort(),
      [
        ['public.people.email', 1],
        ['public.people.salary', 1],
        ['public.people.ssn', 2],
      ],
    );
    m.describe(FIELDS);
    m.maskRow(dataRowBody(ROWS[2]!));
    const second = m.takeSummary();
    assert.deepEqual(
      second?.columns.map((c) => [c.column, c.cells]).sort(),
      [
        ['public.people.salary', 1],
        ['public.people.ssn', 1],
      ],
    );
    assert.deepEqual(second?.detectors.map((d) => [d.detector, d.values]).sort(), [
      ['card', 1],
      ['ssn', 1],
    ]);
  });
});
