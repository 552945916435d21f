/**
 * The configuration of a deployed proxy task: the document the stack puts in WARDEN_CONFIG_JSON,
 * validated with the same schema as `warden.config.yaml`. There is no configuration file to resolve
 * paths against, and the container's root filesystem is read-only, so:
 * - a relative `stateDir` lives under `<tmpdir>/warden` (the task's one writable folder);
 * - a relative `policy.dir` is taken from the program's folder, where the bundle ships `policies/`,
 *   unless WARDEN_POLICY_DIR names another folder.
 */
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
import { ConfigInvalidError, parseConfig } from '../../core/config/schema.ts';

/** Names a Cedar policy folder to use instead of the configuration's `policy.dir`. */
export const POLICY_DIR_VARIABLE = 'WARDEN_POLICY_DIR';

export interface EnvironmentConfigOptions {
  /** The folder of the running program; a relative `policy.dir` resolves against it. */
  programDir: string;
  env?: NodeJS.ProcessEnv;
  /** Where a relative `stateDir` resolves (default `<tmpdir>/warden`). */
  stateRoot?: string;
}

/** The inline configuration, if the environment holds one. */
export function configJsonFromEnvironment(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const text = env[AwsEnvironment.configJson];
  return text === undefined || text.trim() === '' ? undefined : text;
}

/** Parses and validates the inline configuration; throws ConfigInvalidError naming the variable and each bad key. */
export function loadConfigFromEnvironment(text: string, opts: EnvironmentConfigOptions): LoadedConfig {
  const env = opts.env ?? process.env;
  const source = `$${AwsEnvironment.configJson}`;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigInvalidError(source, [{ key: '(json)', message: (err as Error).message }]);
  }
  const config = parseConfig(doc, source);
  const stateRoot = opts.stateRoot ?? join(tmpdir(), 'warden');
  const stateDir = isAbsolute(config.stateDir) ? config.stateDir : resolve(stateRoot, config.stateDir);
  const within = (p: string): string => (isAbsolute(p) ? p : resolve(stateDir, p));
  const policyOverride = env[POLICY_DIR_VARIABLE];
  const policyDir = policyOverride ? resolve(policyOverride) : isAbsolute(config.policy.dir) ? config.policy.dir : resolve(opts.programDir, config.policy.dir);
  return { config, file: source, stateDir, secretsFile: within(config.secretsFile), auditDir: within(config.audit.dir), policyDir };
}
