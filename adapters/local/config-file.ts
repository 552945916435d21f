/**
 * Reads `warden.config.yaml`, validates it with the shared schema and resolves local paths against the
 * state folder. A YAML syntax error names the file, line and column; a bad value names the key.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { ConfigInvalidError, parseConfig, type WardenConfig } from '../../core/config/schema.ts';

export const DEFAULT_CONFIG_FILE = 'warden.config.yaml';

export interface LoadedConfig {
  config: WardenConfig;
  file: string;
  /** Absolute state folder. */
  stateDir: string;
  /** Absolute path of the local secrets file. */
  secretsFile: string;
  /** Absolute folder of the audit trail. */
  auditDir: string;
  /** The Cedar policy folder (relative to the configuration file's folder). */
  policyDir: string;
}

/** The config file: `--config`, then WARDEN_CONFIG, then ./warden.config.yaml. */
export function configPath(explicit?: string): string {
  return resolve(explicit ?? process.env.WARDEN_CONFIG ?? DEFAULT_CONFIG_FILE);
}

export function loadConfigFile(path: string = configPath()): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigInvalidError(path, [{ key: '(file)', message: `cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigInvalidError(
      path,
      doc.errors.map((e) => ({ key: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)', message: e.message.split('\n')[0]! })),
    );
  }
  const config = parseConfig(doc.toJS(), path);
  const base = dirname(path);
  const stateDir = isAbsolute(config.stateDir) ? config.stateDir : resolve(base, config.stateDir);
  const within = (p: string): string => (isAbsolute(p) ? p : resolve(stateDir, p));
  return { config, file: path, stateDir, secretsFile: within(config.secretsFile), auditDir: within(config.audit.dir), policyDir: isAbsolute(config.policy.dir) ? config.policy.dir : resolve(base, config.policy.dir) };
}
