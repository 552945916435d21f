/**
 * The configuration file of a deployment (`cdk deploy -c config=warden.aws.yaml`), read at synth.
 *
 * The file is the proxy's own configuration plus the `aws` section, validated with the one schema
 * (core/config/schema.ts). On top of the schema this module refuses settings that validate but cannot
 * work in the deployed shape: a listener on loopback (the load balancer could never reach it), TLS off
 * (the proxy refuses tokens in cleartext off loopback, so no login could succeed), the development
 * issuer or the demo database (embedded-only conveniences), and names AWS would reject at deploy time.
 * Every problem is reported like a schema problem: the file, the key and the reason.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigInvalidError, parseConfig, type AwsDeploymentConfig, type WardenConfig } from '../../core/config/schema.ts';

/** The proxy's configuration as the stack hands it to the tasks: everything but the `aws` section. */
export type ProxyConfig = Omit<WardenConfig, 'aws'>;

export interface DeploymentConfig {
  /** The file the configuration came from (for messages). */
  readonly source: string;
  /** The whole validated configuration. */
  readonly config: WardenConfig;
  /** The `aws` section, with its defaults filled in. */
  readonly aws: AwsDeploymentConfig;
  /** What the proxy tasks receive in WARDEN_CONFIG_JSON. */
  readonly proxyConfig: ProxyConfig;
  /** Absolute path of the Cedar policy folder (`policy.dir`, relative to the file). */
  readonly policyDir: string;
}

type Problem = { key: string; message: string };

/** The retention periods CloudWatch Logs accepts. @see https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html */
export const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653] as const;

/** Reads, parses and validates a deployment configuration file; throws ConfigInvalidError naming each key. */
export function loadDeploymentConfig(path: string): DeploymentConfig {
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigInvalidError(file, [{ key: '(file)', message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigInvalidError(
      file,
      doc.errors.map((e) => ({ key: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)', message: e.message.split('\n')[0]! })),
    );
  }
  return deploymentConfigFrom(doc.toJS(), file, dirname(file));
}

/** Validates a parsed document as a deployment configuration; `baseDir` anchors a relative `policy.dir`. */
export function deploymentConfigFrom(doc: unknown, source: string, baseDir: string): DeploymentConfig {
  const config = parseConfig(doc, source);
  const { aws, ...proxyConfig } = config;
  if (aws === undefined) {
    throw new ConfigInvalidError(source, [
      { key: 'aws', message: 'is required to deploy to AWS (stackName, vpc, loadBalancer, proxy, audit, slack, ...); see warden.aws.example.yaml' },
    ]);
  }
  const problems = [...awsSectionProblems(aws), ...proxyProblems(config)];
  if (problems.length > 0) throw new ConfigInvalidError(source, problems);
  const policyDir = isAbsolute(config.policy.dir) ? config.policy.dir : resolve(baseDir, config.policy.dir);
  return { source, config, aws, proxyConfig, policyDir };
}

function awsSectionProblems(aws: AwsDeploymentConfig): Problem[] {
  const problems: Problem[] = [];
  const vpc = cidrProblem(aws.vpc.cidr, { minPrefix: 16, maxPrefix: 28 });
  if (vpc) problems.push({ key: 'aws.vpc.cidr', message: vpc });
  aws.loadBalancer.allowedCidrs.forEach((c, i) => {
    const p = cidrProblem(c, { minPrefix: 0, maxPrefix: 32 }) ?? (c.endsWith('/0') ? 'opens the gateway to the whole internet; list the client networks instead (GitHub-hosted runners publish theirs at https://api.github.com/meta)' : undefined);
    if (p) problems.push({ key: `aws.loadBalancer.allowedCidrs.${i}`, message: p });
  });
  for (const [name, value] of Object.entries(aws.slack)) {
    const p = secretNameProblem(value);
    if (p) problems.push({ key: `aws.slack.${name}`, message: p });
  }
  if (!(LOG_RETENTION_DAYS as readonly number[]).includes(aws.logRetentionDays)) {
    problems.push({ key: 'aws.logRetentionDays', message: `CloudWatch Logs keeps logs for one of ${LOG_RETENTION_DAYS.join(', ')} days; ${aws.logRetentionDays} is not one of them` });
  }
  if (aws.slack.signingSecretName === aws.slack.botTokenSecretName) {
    problems.push({ key: 'aws.slack.botTokenSecretName', message: 'must differ from aws.slack.signingSecretName' });
  }
  return problems;
}

function proxyProblems(config: WardenConfig): Problem[] {
  const problems: Problem[] = [];
  const listener = config.listeners.postgres;
  if (isLoopback(listener.host)) {
    problems.push({ key: 'listeners.postgres.host', message: `'${listener.host}' is a loopback address, which the load balancer cannot reach; use 0.0.0.0` });
  }
  if (listener.port === 0) {
    problems.push({ key: 'listeners.postgres.port', message: 'must be a fixed port (the load balancer forwards to it); 5432 is usual' });
  }
  if (listener.tls.mode === 'off') {
    problems.push({ key: 'listeners.postgres.tls.mode', message: "'off' would refuse every login: tokens are never accepted in cleartext away from loopback; use self-signed" });
  }
  if (listener.tls.mode === 'files') {
    problems.push({ key: 'listeners.postgres.tls.mode', message: "'files' names certificate files the proxy image does not hold; use self-signed" });
  }
  if (config.identity.devIssuer.enabled) {
    problems.push({ key: 'identity.devIssuer.enabled', message: 'the development issuer is for the embedded default only; list your identity provider under identity.issuers' });
  }
  if (config.embedded.demoDatabase.enabled) {
    problems.push({ key: 'embedded.demoDatabase.enabled', message: 'the demo database runs only on the embedded default; register real targets instead' });
  }
  config.targets.forEach((t, i) => {
    const p = secretNameProblem(t.credential);
    if (p) problems.push({ key: `targets.${i}.credential`, message: p });
  });
  return problems;
}

/**
 * Secrets Manager secret names: 1 to 512 of A-Z a-z 0-9 / _ + = . @ -. The stack grants access by name
 * (`secret:<name>-??????`), so a name must be a name, never an ARN.
 */
function secretNameProblem(name: string): string | undefined {
  if (name.startsWith('arn:')) return 'must be the secret\'s name, not its ARN (access is granted by name)';
  if (!/^[A-Za-z0-9/_+=.@-]{1,512}$/.test(name)) return 'must be a Secrets Manager secret name (letters, digits and / _ + = . @ -)';
  return undefined;
}

function cidrProblem(cidr: string, bounds: { minPrefix: number; maxPrefix: number }): string | undefined {
  const [address, prefixText] = cidr.split('/');
  const octets = (address ?? '').split('.').map(Number);
  const prefix = Number(prefixText);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) return `'${cidr}' is not an IPv4 CIDR: each octet must be 0 to 255`;
  if (!Number.isInteger(prefix) || prefix < bounds.minPrefix || prefix > bounds.maxPrefix) {
    return `'${cidr}': the prefix length must be between /${bounds.minPrefix} and /${bounds.maxPrefix}`;
  }
  const value = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (value % size !== 0) {
    const base = value - (value % size);
    const network = [24, 16, 8, 0].map((s) => Math.floor(base / 2 ** s) % 256).join('.');
    return `'${cidr}' has host bits set; the network is ${network}/${prefix}`;
  }
  return undefined;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
