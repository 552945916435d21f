#!/usr/bin/env node
// Bundles the proxy for its container: dist/proxy/main.mjs (+ source map), the health check, the WASM
// modules the bundle loads at run time, the Cedar policies and the demo seed. The folder runs with
// `node dist/proxy/main.mjs` and needs no node_modules.
// Usage: node scripts/bundle-proxy.mjs   (npm run bundle)
import { ESM_BUNDLE_BANNER_LINES, ESM_BUNDLE_DEFINE } from './esm-bundle-banner.mjs';
import { build } from 'esbuild';
import { builtinModules, createRequire } from 'node:module';
import { copyFileSync, cpSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outDir = join(root, 'dist/proxy');
const require = createRequire(join(root, 'package.json'));

// Packages that read a file next to their own module at run time (`${__dirname}/x.wasm`). The bundle
// maps __dirname to its own folder (see `define` below), so each file is copied next to main.mjs.
const RUNTIME_FILES = [
  { pkg: 'libpg-query', entry: 'libpg-query', file: 'libpg-query.wasm' },
  { pkg: '@cedar-policy/cedar-wasm', entry: '@cedar-policy/cedar-wasm/nodejs', file: 'cedar_wasm_bg.wasm' },
];
// Left out of the bundle and absent at run time: pg loads pg-native only for `pg.native`, which Warden never uses.
const EXTERNAL = ['pg-native'];

const banner = ESM_BUNDLE_BANNER_LINES.join('\n');

const started = Date.now();
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: { main: 'proxy-task/src/main.ts', healthcheck: 'proxy-task/src/healthcheck.ts' },
  outdir: outDir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  sourcesContent: true,
  // Lambda and the AWS SDK are imported dynamically (gateway.ts, main.ts): esbuild keeps them in this
  // one file but evaluates them only when that import runs.
  splitting: false,
  external: EXTERNAL,
  banner: { js: banner },
  define: ESM_BUNDLE_DEFINE,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
});

// Every import left in the output must be a Node built-in or a declared external: anything else would
// fail at run time in a container without node_modules.
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const unexpected = new Set();
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  for (const imp of output.imports) {
    if (imp.external && !builtins.has(imp.path) && !EXTERNAL.includes(imp.path)) unexpected.add(`${imp.path} (in ${file})`);
  }
}
if (unexpected.size > 0) {
  console.error(`bundle-proxy: imports that would need node_modules at run time:\n  ${[...unexpected].join('\n  ')}`);
  process.exit(1);
}

const inputs = Object.keys(result.metafile.inputs);
for (const r of RUNTIME_FILES) {
  if (!inputs.some((p) => p.includes(`node_modules/${r.pkg}/`))) {
    console.error(`bundle-proxy: ${r.pkg} is no longer in the bundle; remove it from RUNTIME_FILES`);
    process.exit(1);
  }
  copyFileSync(join(dirname(require.resolve(r.entry)), r.file), join(outDir, r.file));
}

// What went into the bundle (beside it, not in it: the image copies dist/proxy only), for tools that
// need to know whether the bundle is older than its sources.
writeFileSync(join(root, 'dist/proxy.meta.json'), JSON.stringify(result.metafile));

// The Cedar policies and schema: a deployed task's configuration names them relative to the bundle.
cpSync(join(root, 'policies'), join(outDir, 'policies'), { recursive: true });
// The embedded demo database's seed, read next to its module (here: next to the bundle).
copyFileSync(join(root, 'proxy-task/src/embedded/demo-seed.sql'), join(outDir, 'demo-seed.sql'));

const sizes = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else sizes.push([relative(root, p), statSync(p).size]);
  }
};
walk(outDir);
const mb = (n) => `${(n / 1024 / 1024).toFixed(2)} MB`;
const total = sizes.reduce((a, [, n]) => a + n, 0);
for (const [p, n] of sizes.filter(([, n]) => n >= 64 * 1024)) console.log(`  ${p.padEnd(40)} ${mb(n)}`);
console.log(`bundle-proxy: dist/proxy/main.mjs ${mb(statSync(join(outDir, 'main.mjs')).size)}; dist/proxy in all ${mb(total)} (${sizes.length} files) in ${Date.now() - started} ms`);
