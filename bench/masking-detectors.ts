/**
 * What content detection costs per text cell: nanoseconds per cell for typical cells, with every
 * detector on, through `scanText` (detection only, the detectors as a precomputed bit set), `maskTextWith`
 * (the same bit set, plus replacement when something matched) and `maskText` (the detector list, as
 * given by a policy). Then the cost of one value's `hash` (beside node:crypto's createHmac, which it
 * replaces) and `partial`. The median of --rounds rounds of --cells cells each; on a shared machine the
 * figures move by ±30% between runs. Prints; asserts nothing.
 *
 *   node --import tsx bench/masking-detectors.ts [--cells 200000] [--rounds 5]
 */
import { createHmac } from 'node:crypto';
import { parseArgs } from 'node:util';
import { detectorBits, scanText } from '../core/masking/detectors.ts';
import { maskText, maskTextWith } from '../core/masking/mask-text.ts';
import { partialMask, pseudonym } from '../core/masking/strategies.ts';
import { ALL_DETECTORS, MaskStrategy } from '../core/masking/vocabulary.ts';

const { values } = parseArgs({ options: { cells: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '5' } } });
const cells = Number(values.cells);
const rounds = Number(values.rounds);

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
  // The cells bench/masking.ts masks by content (its email and ssn columns have column rules).
  'masking.ts: name': ['Customer 1', 'Customer 482913', 'Customer 1000000'],
  'masking.ts: card': ['4111 1111 1111 0123', '4111 1111 1111 1111', '4111 1111 1111 9876'],
  'masking.ts: phone': ['+1 415 555 0123', '+1 415 555 9876'],
  'masking.ts: note': ['delivered on time', 'delivered on time', 'please call me back, order 7000000000482910'],
};

const enabled = detectorBits(ALL_DETECTORS);
const key = new Uint8Array(32).fill(7);
let sink = 0;

function timePerCell(values: readonly string[], run: (s: string) => void): number {
  for (let i = 0; i < 20_000; i++) run(values[i % values.length]!); // warm up
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < cells; i++) run(values[i % values.length]!);
    times.push(Number(process.hrtime.bigint() - t0) / cells);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
}

console.log(`content detectors (all ${ALL_DETECTORS.length} on), median of ${rounds} x ${cells} cells, Node ${process.version}`);
console.log('cell kind'.padEnd(22), 'scanText'.padStart(10), 'maskTextWith'.padStart(13), 'maskText'.padStart(10), '  matched   (ns per cell)');
for (const [kind, vals] of Object.entries(kinds)) {
  const scan = timePerCell(vals, (s) => {
    sink += scanText(s, enabled)?.length ?? 0;
  });
  const maskWith = timePerCell(vals, (s) => {
    sink += maskTextWith(s, enabled, MaskStrategy.redact, key).matches.length;
  });
  const mask = timePerCell(vals, (s) => {
    sink += maskText(s, ALL_DETECTORS, MaskStrategy.redact, key).matches.length;
  });
  const matched = vals.filter((v) => scanText(v, enabled) !== undefined).length;
  console.log(kind.padEnd(22), scan.toFixed(0).padStart(10), maskWith.toFixed(0).padStart(13), mask.toFixed(0).padStart(10), `  ${matched}/${vals.length}`);
}

const emails = Array.from({ length: 1000 }, (_, i) => `customer${i * 7919}@example.com`);
console.log('\nstrategy, per value'.padEnd(40), 'ns');
const strategies: Record<string, (s: string) => void> = {
  'hash (pseudonym)': (s) => {
    sink += pseudonym(s, key).length;
  },
  'createHmac + digest (for comparison)': (s) => {
    sink += createHmac('sha256', key).update(s, 'utf8').digest().length;
  },
  partial: (s) => {
    sink += partialMask(s).length;
  },
};
for (const [name, run] of Object.entries(strategies)) console.log(name.padEnd(40), timePerCell(emails, run).toFixed(0).padStart(6));
if (sink < 0) console.log(sink);
