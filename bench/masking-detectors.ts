/**
 * What content detection costs per text cell: nanoseconds per cell for typical cells, with every
 * detector on, through `scanText` (the detectors as a precomputed bit set, as the data path uses them)
 * and `maskText` (the list form, plus replacement when something matched). Prints; asserts nothing.
 *
 *   node --import tsx bench/masking-detectors.ts [--cells 200000]
 */
import { parseArgs } from 'node:util';
import { detectorBits, scanText } from '../core/masking/detectors.ts';
import { maskText } from '../core/masking/mask-text.ts';
import { ALL_DETECTORS, MaskStrategy } from '../core/masking/vocabulary.ts';

const { values } = parseArgs({ options: { cells: { type: 'string', default: '200000' } } });
const cells = Number(values.cells);

const json200 = JSON.stringify({
  id: 'c0a8f3e2-5b7d-4e1a-9f6c-2d8b7a1e4f90',
  name: 'Alice Martin',
  status: 'active',
  plan: 'Pro (annual)',
  created_at: '2024-03-18T09:21:44.512Z',
  tags: ['beta', 'eu-west-1'],
  score: 8123.55,
  note: 'renewal due',
});
const kinds: Record<string, readonly string[]> = {
  'short name': ['Alice Martin', 'Bob', 'Zoë Dubois', 'active', 'eu-west-1', 'pending'],
  'integer text': ['42', '1024', '2024-03-18', '8123.55'],
  email: ['alice.martin@example.com', 'bob+news@mail.example.co.uk', 'z.dubois@exemple.fr'],
  [`JSON ~${json200.length} chars`]: [json200],
  '16-digit number': ['1234567812345670', '4111111111111111', '9876543210123456'],
  'sentence 120 chars': ['The quarterly report was filed on 2024-03-18 by the finance team; see ticket 8812 for the details and follow-up.'],
};

const enabled = detectorBits(ALL_DETECTORS);
const key = new Uint8Array(32).fill(7);
let sink = 0;

function timePerCell(values: readonly string[], run: (s: string) => void): number {
  const n = Math.max(values.length, cells);
  for (let i = 0; i < Math.min(n, 20_000); i++) run(values[i % values.length]!); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) run(values[i % values.length]!);
  return Number(process.hrtime.bigint() - t0) / n;
}

console.log(`content detectors (all ${ALL_DETECTORS.length} on), ${cells} cells per line, Node ${process.version}`);
console.log('cell kind'.padEnd(22), 'scanText ns/cell'.padStart(17), 'maskText ns/cell'.padStart(17), '  matched');
for (const [kind, vals] of Object.entries(kinds)) {
  const scan = timePerCell(vals, (s) => {
    sink += scanText(s, enabled)?.length ?? 0;
  });
  const mask = timePerCell(vals, (s) => {
    sink += maskText(s, ALL_DETECTORS, MaskStrategy.redact, key).matches.length;
  });
  const matched = vals.filter((v) => scanText(v, enabled) !== undefined).length;
  console.log(kind.padEnd(22), scan.toFixed(0).padStart(17), mask.toFixed(0).padStart(17), `  ${matched}/${vals.length}`);
}
if (sink < 0) console.log(sink);
