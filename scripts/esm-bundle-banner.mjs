// An ES module bundle has no require, __filename or __dirname; bundled CommonJS packages use all three
// (the WASM packages read a file next to their module). The banner declares stand-ins and `define` points
// the free identifiers at them; code that declares its own is left alone. Used by the proxy's bundle
// (scripts/bundle-proxy.mjs) and the Lambda bundles (infra/lib/functions.ts).
export const ESM_BUNDLE_BANNER_LINES = [
  "import { createRequire as __wardenCreateRequire } from 'node:module';",
  "import { fileURLToPath as __wardenFileURLToPath } from 'node:url';",
  "import { dirname as __wardenDirname } from 'node:path';",
  'const require = __wardenCreateRequire(import.meta.url);',
  'const __wardenBundleFile = __wardenFileURLToPath(import.meta.url);',
  'const __wardenBundleDir = __wardenDirname(__wardenBundleFile);',
];

export const ESM_BUNDLE_DEFINE = { __dirname: '__wardenBundleDir', __filename: '__wardenBundleFile' };
