import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { CopyOutShape } from '../../../../../core/sql/copy-statement.ts';
import { joinCopyRow, splitCopyRow } from '../../../../../proxy-task/src/postgres/masking/copy-rows.ts';

const TEXT: CopyOutShape = { format: 'text', delimiter: '\t', nullString: '\\N', quote: '"', escape: '"', header: false };
const CSV: CopyOutShape = { format: 'csv', delimiter: ',', nullString: '', quote: '"', escape: '"', header: false };

test('text format: escapes, NULL and the delimiter are read as the server writes them', () => {
  assert.deepEqual(splitCopyRow('1\tAlice\\tSmith\t\\N\ta\\\\b\tline\\nbreak\t\\101', TEXT), ['1', 'Alice\tSmith', null, 'a\\b', 'line\nbreak', 'A']);
});

test('CSV: quotes, doubled quotes, delimiters inside quotes, and NULL as an unquoted empty field', () => {
  assert.deepEqual(splitCopyRow('1,"Smith, Alice","say ""hi""",,""', CSV), ['1', 'Smith, Alice', 'say "hi"', null, '']);
});

test('split and join are inverse for any values, in both formats', () => {
  const value = fc.option(fc.string({ unit: fc.constantFrom('a', 'b', ',', '"', '\t', '\n', '\r', '\\', 'N', ' ', 'é') }), { nil: null });
  fc.assert(
    fc.property(fc.array(value, { minLength: 1, maxLength: 6 }), (values) => {
      for (const shape of [TEXT, CSV]) {
        // In CSV an empty string is written quoted, so it stays apart from NULL.
        assert.deepEqual(splitCopyRow(joinCopyRow(values, shape), shape), values);
      }
    }),
  );
});
