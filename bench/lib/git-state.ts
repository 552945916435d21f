/**
 * The source tree a benchmark measured: HEAD and the files changed outside bench/ (read-only git
 * commands). Others edit the proxy while benchmarks run, so figures are only comparable with this.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './proc.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface TreeState {
  head: string;
  subject: string;
  /** `git status --short` lines outside bench/. */
  changed: string[];
}

export async function treeState(): Promise<TreeState> {
  try {
    const head = await run('git', ['-C', ROOT, 'log', '-1', '--format=%h%x00%s']);
    const status = await run('git', ['-C', ROOT, 'status', '--short', '--', '.', ':(exclude)bench']);
    const [h = '?', subject = ''] = head.stdout.trim().split('\0');
    return { head: h, subject, changed: status.stdout.split('\n').filter((l) => l.trim()) };
  } catch {
    return { head: 'unknown', subject: '', changed: [] };
  }
}

export function describeTree(t: TreeState): string {
  const dirty = t.changed.length ? `; uncommitted outside bench/: ${t.changed.map((l) => l.trim()).join(', ')}` : '; clean outside bench/';
  return `source tree: ${t.head} "${t.subject}"${dirty}`;
}
