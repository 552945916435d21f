/**
 * `warden`: the command for operators, approvers and auditors.
 * Every subcommand has --help.
 */
import { Command } from 'commander';
import { configPath, loadConfigFile, type LoadedConfig } from '../adapters/local/config-file.ts';
import { ConfigInvalidError } from '../core/config/schema.ts';
import { registerApprovalCommands } from './commands/approvals.ts';
import { registerAuditCommands } from './commands/audit.ts';
import { registerPolicyCommands } from './commands/policy.ts';
import { registerRevocationCommands } from './commands/revocations.ts';
import { registerTokenCommand } from './commands/token.ts';
import { registerVaultCommands } from './commands/vault.ts';

const program = new Command('warden')
  .description('Warden: identity-aware access gateway for AI agents (PostgreSQL, SSH)')
  .option('-c, --config <file>', 'configuration file (default: $WARDEN_CONFIG or ./warden.config.yaml)')
  .showHelpAfterError();

let loaded: LoadedConfig | undefined;
export function getConfig(): LoadedConfig {
  loaded ??= loadConfigFile(configPath(program.opts<{ config?: string }>().config));
  return loaded;
}

registerTokenCommand(program, getConfig);
registerAuditCommands(program, () => getConfig().auditDir, () => getConfig().stateDir);
registerPolicyCommands(program, getConfig);
registerVaultCommands(program, getConfig);
registerApprovalCommands(program, getConfig);
registerRevocationCommands(program, getConfig);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigInvalidError) process.stderr.write(`${err.message}\n`);
  else process.stderr.write(`warden: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
