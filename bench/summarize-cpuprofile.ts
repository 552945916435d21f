/**
 * Prints where a V8 CPU profile spends its time.
 *
 *   node --import tsx bench/summarize-cpuprofile.ts FILE.cpuprofile [--top 30] [--json]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { formatSummary, summarizeProfile, type CpuProfile } from './lib/cpuprofile.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' }, json: { type: 'boolean', default: false } },
});
if (positionals.length === 0) {
  process.stderr.write('usage: node --import tsx bench/summarize-cpuprofile.ts FILE.cpuprofile [--top 30] [--json]\n');
  process.exit(2);
}
for (const file of positionals) {
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
  if (values.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(`== ${file}\n${formatSummary(summary, Number(values.top))}\n\n`);
}
