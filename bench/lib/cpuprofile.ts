/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`): self and total time per function, self time per
 * file or package, and the share of idle, GC and program (native, outside JS) time.
 */
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  key: string;
  selfMs: number;
  totalMs: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  busyMs: number;
  gcMs: number;
  programMs: number;
  functions: Row[];
  files: Row[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

export function shortUrl(url: string, root = process.cwd()): string {
  if (!url) return '';
  let u = url.startsWith('file://') ? decodeURIComponent(url.slice(7)) : url;
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) return u.slice(nm + '/node_modules/'.length);
  if (u.startsWith(root + path.sep)) u = u.slice(root.length + 1);
  return u;
}

/** A file's group: the package for node_modules, 'node:internal' for Node's own, the file otherwise. */
export function fileGroup(url: string, root = process.cwd()): string {
  if (!url) return '(native / no script)';
  if (url.startsWith('wasm://')) return 'wasm';
  if (url.startsWith('node:')) return url.startsWith('node:internal') ? 'node:internal/*' : url;
  const s = shortUrl(url, root);
  if (url.includes('/node_modules/')) {
    const parts = s.split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  return s;
}

function frameKey(f: CallFrame, root: string): string {
  const name = f.functionName || '(anonymous)';
  if (SPECIAL.has(name) && !f.url) return name;
  // tsx emits each module on one line: the column then tells functions of the same name apart.
  const pos = f.lineNumber > 0 ? `${f.lineNumber + 1}` : `1:${f.columnNumber + 1}`;
  const where = f.url ? `${shortUrl(f.url, root)}:${pos}` : '(native)';
  return `${name} ${where}`;
}

export function summarizeProfile(p: CpuProfile, root = process.cwd()): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  // Chrome DevTools' convention: timeDeltas[i + 1] is how long sample i was on the CPU.
  const dur = (i: number): number => (i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1]! : 0) / 1000;

  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  const fileTotal = new Map<string, number>();
  let totalMs = 0;
  let idleMs = 0;
  let gcMs = 0;
  let programMs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const ms = dur(i);
    totalMs += ms;
    const leaf = byId.get(p.samples[i]!);
    if (!leaf) continue;
    const name = leaf.callFrame.functionName;
    if (name === '(idle)') {
      idleMs += ms;
      continue;
    }
    if (name === '(garbage collector)') gcMs += ms;
    if (name === '(program)') programMs += ms;
    const k = frameKey(leaf.callFrame, root);
    self.set(k, (self.get(k) ?? 0) + ms);
    const g = SPECIAL.has(name) ? name : fileGroup(leaf.callFrame.url, root);
    fileSelf.set(g, (fileSelf.get(g) ?? 0) + ms);
    const seen = new Set<string>();
    const seenFiles = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (n.callFrame.functionName === '(root)') break;
      const key = frameKey(n.callFrame, root);
      if (!seen.has(key)) {
        seen.add(key);
        total.set(key, (total.get(key) ?? 0) + ms);
      }
      const fg = SPECIAL.has(n.callFrame.functionName) ? n.callFrame.functionName : fileGroup(n.callFrame.url, root);
      if (!seenFiles.has(fg)) {
        seenFiles.add(fg);
        fileTotal.set(fg, (fileTotal.get(fg) ?? 0) + ms);
      }
    }
  }
  const rows = (s: Map<string, number>, t: Map<string, number>): Row[] =>
    [...new Set([...s.keys(), ...t.keys()])].map((key) => ({ key, selfMs: s.get(key) ?? 0, totalMs: t.get(key) ?? 0 }));
  return {
    totalMs,
    idleMs,
    busyMs: totalMs - idleMs,
    gcMs,
    programMs,
    functions: rows(self, total),
    files: rows(fileSelf, fileTotal),
  };
}

export function formatSummary(s: ProfileSummary, top = 30): string {
  const pct = (ms: number): string => `${((100 * ms) / s.busyMs).toFixed(1)}%`.padStart(6);
  const ms = (x: number): string => x.toFixed(0).padStart(7);
  const out: string[] = [];
  out.push(`profile: ${(s.totalMs / 1000).toFixed(1)} s wall, busy ${(s.busyMs / 1000).toFixed(1)} s (${((100 * s.busyMs) / s.totalMs).toFixed(0)}% of one core), idle ${(s.idleMs / 1000).toFixed(1)} s`);
  out.push(`  of busy: GC ${pct(s.gcMs).trim()}, (program) ${pct(s.programMs).trim()} (native code outside JS: syscalls, libuv, JIT)`);
  out.push('');
  out.push(`top ${top} by self time (% of busy):`);
  out.push(`${'self ms'.padStart(7)}  ${'self'.padStart(6)}  ${'total'.padStart(6)}  function`);
  for (const r of [...s.functions].sort((a, b) => b.selfMs - a.selfMs).slice(0, top)) out.push(`${ms(r.selfMs)}  ${pct(r.selfMs)}  ${pct(r.totalMs)}  ${r.key}`);
  out.push('');
  out.push(`top ${top} by total (inclusive) time:`);
  out.push(`${'total ms'.padStart(8)}  ${'total'.padStart(6)}  ${'self'.padStart(6)}  function`);
  for (const r of [...s.functions].sort((a, b) => b.totalMs - a.totalMs).slice(0, top)) out.push(` ${ms(r.totalMs)}  ${pct(r.totalMs)}  ${pct(r.selfMs)}  ${r.key}`);
  out.push('');
  out.push('self time by file / package:');
  for (const r of [...s.files].sort((a, b) => b.selfMs - a.selfMs).slice(0, 20)) out.push(`${ms(r.selfMs)}  ${pct(r.selfMs)}  ${r.key}`);
  out.push('');
  out.push('total (inclusive) time by file / package:');
  for (const r of [...s.files].sort((a, b) => b.totalMs - a.totalMs).slice(0, 20)) out.push(`${ms(r.totalMs)}  ${pct(r.totalMs)}  ${r.key}`);
  return out.join('\n');
}
