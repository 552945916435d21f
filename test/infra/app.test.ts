/**
 * The CDK app as `cdk synth` runs it: the real function bundles (local esbuild), the proxy image's build
 * context staged (no Docker needed), cdk-nag registered as validation plugins.
 *
 * Proves: the example configuration synthesizes offline into a cloud assembly whose policy decision
 * bundle holds index.mjs, both WASM files and the Cedar policies, whose other bundles are ES modules, and
 * whose image asset is proxy-task/Dockerfile with the .dockerignore allowlist applied (no node_modules,
 * no .warden, no tests); the validation report is clean; a resource cdk-nag objects to fails synthesis
 * (the packs are enforced, not just listed); and the app's entry point turns a missing `aws` section or a
 * bad VPC CIDR into a readable message naming the key and exit code 1, without a stack trace.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { stringify } from 'yaml';
import { createWardenApp } from '../../infra/lib/warden-app.ts';
import { CDK_CONTEXT, EXAMPLE_FILE, PROJECT_ROOT, exampleDocument } from './stack-fixture.ts';

interface AssetManifest {
  files: Record<string, { source: { path: string; packaging?: string } }>;
  dockerImages: Record<string, { source: { directory: string; dockerFile?: string; platform?: string } }>;
}

describe('cdk synth of the example configuration, with real bundling', () => {
  let outdir: string;
  let assets: AssetManifest;
  before(() => {
    outdir = mkdtempSync(join(tmpdir(), 'warden-cdk-out-'));
    const { app } = createWardenApp({ projectRoot: PROJECT_ROOT, outdir, context: { ...CDK_CONTEXT, config: EXAMPLE_FILE } });
    app.synth();
    assets = JSON.parse(readFileSync(join(outdir, 'Warden.assets.json'), 'utf8')) as AssetManifest;
  });

  test('the policy decision bundle carries its WASM files and the policies; every bundle is an ES module', () => {
    const dirs = Object.values(assets.files)
      .filter((f) => f.source.packaging === 'zip')
      .map((f) => join(outdir, f.source.path));
    const bundles = dirs.filter((d) => existsSync(join(d, 'index.mjs')));
    assert.equal(bundles.length, 4);
    const policy = bundles.filter((d) => existsSync(join(d, 'libpg-query.wasm')));
    assert.equal(policy.length, 1);
    assert.deepEqual(readdirSync(policy[0]!).sort(), ['cedar_wasm_bg.wasm', 'index.mjs', 'index.mjs.map', 'libpg-query.wasm', 'policies']);
    assert.deepEqual(readdirSync(join(policy[0]!, 'policies')).sort(), readdirSync(join(PROJECT_ROOT, 'policies')).filter((n) => /\.cedar(schema)?$/.test(n)).sort());
    // The banner that gives the bundled CommonJS packages require, __dirname and __filename.
    for (const d of bundles) assert.match(readFileSync(join(d, 'index.mjs'), 'utf8').slice(0, 400), /^import \{ createRequire as __wardenCreateRequire \} from 'node:module';/);
  });

  test('the proxy image is staged from proxy-task/Dockerfile with the .dockerignore allowlist', () => {
    const images = Object.values(assets.dockerImages);
    assert.equal(images.length, 1);
    const image = images[0]!.source;
    assert.equal(image.dockerFile, 'proxy-task/Dockerfile');
    assert.equal(image.platform, 'linux/amd64');
    const staged = readdirSync(join(outdir, image.directory)).sort();
    for (const needed of ['package.json', 'package-lock.json', 'core', 'adapters', 'policies', 'proxy-task']) assert.ok(staged.includes(needed), needed);
    for (const kept of ['node_modules', '.warden', 'test', 'infra', '.git', 'cdk.out']) assert.ok(!staged.includes(kept), kept);
  });

  test('the validation report holds no violation', () => {
    const report = JSON.parse(readFileSync(join(outdir, 'validation-report.json'), 'utf8')) as { pluginReports: { violations: unknown[] }[] };
    assert.deepEqual(report.pluginReports.flatMap((r) => r.violations), []);
  });
});

describe('cdk-nag is enforced at synthesis', () => {
  test('a bucket without access logs, TLS enforcement or a KMS key fails synthesis with the rules it breaks', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'warden-cdk-out-'));
    const { app, stack } = createWardenApp({ projectRoot: PROJECT_ROOT, outdir, context: { ...CDK_CONTEXT, config: EXAMPLE_FILE } });
    new s3.Bucket(stack as Stack, 'Careless', { encryption: s3.BucketEncryption.S3_MANAGED });
    // The functions bundle first; validation runs on the finished assembly and prints its report.
    const printed: unknown[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => void printed.push(...args);
    try {
      assert.throws(() => app.synth(), /Validation failed/);
    } finally {
      console.error = consoleError;
    }
    const report = JSON.parse(readFileSync(join(outdir, 'validation-report.json'), 'utf8')) as {
      pluginReports: { violations: { ruleName: string; violatingConstructs: { constructPath?: string }[] }[] }[];
    };
    const violations = report.pluginReports.flatMap((r) => r.violations);
    const rules = violations.map((v) => v.ruleName);
    for (const rule of ['AwsSolutions-S1', 'AwsSolutions-S10', 'NIST.800.53.R5-S3BucketLoggingEnabled', 'NIST.800.53.R5-S3DefaultEncryptionKMS']) assert.ok(rules.includes(rule), rule);
    assert.ok(violations.every((v) => v.violatingConstructs.every((r) => r.constructPath === 'Warden/Careless/Resource')), 'only the careless bucket is reported');
    assert.match(printed.join('\n'), /AwsSolutions-S1/);
  });
});

describe('the app entry point with a bad configuration', () => {
  const runApp = (doc: unknown): { status: number | null; stderr: string } => {
    const dir = mkdtempSync(join(tmpdir(), 'warden-config-'));
    const file = join(dir, 'warden.aws.yaml');
    writeFileSync(file, stringify(doc));
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'infra/bin/warden.ts')], {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify({ ...CDK_CONTEXT, config: file }), CDK_OUTDIR: join(dir, 'cdk.out') },
    });
    return { status: r.status, stderr: r.stderr };
  };

  test('a missing aws section: exit 1 and a message naming the key, no stack trace', () => {
    const doc = exampleDocument();
    delete doc.aws;
    const r = runApp(doc);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /warden\.aws\.yaml: invalid configuration\n {2}- aws: is required to deploy to AWS/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  test('a bad VPC CIDR: exit 1 and a message naming aws.vpc.cidr and the reason', () => {
    const doc = exampleDocument();
    doc.aws.vpc.cidr = '10.40.0.0/12';
    const r = runApp(doc);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /- aws\.vpc\.cidr: '10\.40\.0\.0\/12': the prefix length must be between \/16 and \/28/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});
