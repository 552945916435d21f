#!/usr/bin/env node
// Runs the test files under test/ with Node's test runner (Node 20 has no glob support for --test).
// Usage: node scripts/run-tests.mjs [folder-or-file ...]   (default: test/unit test/integration test/e2e test/infra)
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['test/unit', 'test/integration', 'test/e2e', 'test/infra'];
const files = [];
const walk = (p) => {
  let st;
  try { st = statSync(p); } catch { return; }
  if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
  else if (/\.test\.ts$/.test(p)) files.push(p);
};
roots.forEach(walk);
if (files.length === 0) { console.error('no test files found under', roots.join(' ')); process.exit(1); }
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
