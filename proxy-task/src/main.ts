/**
 * Entry point of the Warden proxy: `npm start` runs it on the embedded default; a deployed task runs the
 * bundle (`npm run bundle`: dist/proxy/main.mjs).
 * Usage: node --import tsx proxy-task/src/main.ts [--config warden.config.yaml]
 *
 * The configuration comes from `--config <file>`, else from WARDEN_CONFIG_JSON (the stack's inline
 * document, see environment-config.ts), else from WARDEN_CONFIG or ./warden.config.yaml.
 * WARDEN_ADAPTERS=aws swaps the embedded default's ports for the AWS ones. On SIGTERM or SIGINT, live
 * sessions get WARDEN_DRAIN_SECONDS (default 5) to finish; the audit trail is sealed before exit.
 */
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AwsEnvironment } from '../../core/config/aws-environment.ts';
import { ConfigInvalidError } from '../../core/config/schema.ts';
import { PolicySetInvalidError } from '../../core/policy/policy-set.ts';
import { configPath, loadConfigFile, type LoadedConfig } from '../../adapters/local/config-file.ts';
import { configJsonFromEnvironment, loadConfigFromEnvironment } from './environment-config.ts';
import { startGateway, type GatewayAdapters } from './gateway.ts';
import { createLogger } from './log.ts';

const log = createLogger();
const DEFAULT_DRAIN_SECONDS = 5;

function loadConfiguration(args: readonly string[]): LoadedConfig {
  const i = args.indexOf('--config');
  if (i >= 0) return loadConfigFile(configPath(args[i + 1]));
  const inline = configJsonFromEnvironment();
  if (inline !== undefined) return loadConfigFromEnvironment(inline, { programDir: dirname(fileURLToPath(import.meta.url)) });
  return loadConfigFile(configPath());
}

function drainMilliseconds(): number {
  const name = AwsEnvironment.drainSeconds;
  const raw = process.env[name]?.trim();
  if (!raw) return DEFAULT_DRAIN_SECONDS * 1000;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) throw new ConfigInvalidError(`$${name}`, [{ key: name, message: 'must be a number of seconds, 0 or more' }]);
  return seconds * 1000;
}

async function adaptersFor(loaded: LoadedConfig): Promise<GatewayAdapters | undefined> {
  if (process.env[AwsEnvironment.adapters] !== 'aws') return undefined;
  // Imported only here: the embedded default never loads the AWS SDK.
  const { awsAdaptersFromEnvironment } = await import('./aws-adapters.ts');
  return awsAdaptersFromEnvironment(loaded.config, log);
}

async function main(): Promise<void> {
  const loaded = loadConfiguration(process.argv.slice(2));
  const drainMs = drainMilliseconds();
  const adapters = await adaptersFor(loaded);
  const gw = await startGateway(loaded, { log, ...(adapters ? { adapters } : {}) });
  const { host, port } = gw.postgres;
  const demo = loaded.config.targets[0]?.name ?? 'demo';
  const lines = [
    '',
    `Warden is listening for PostgreSQL on ${host}:${port} (TLS: ${loaded.config.listeners.postgres.tls.mode}).`,
    gw.devIssuerUrl ? `Development token issuer: ${gw.devIssuerUrl} (JWKS at ${gw.devIssuerUrl}/.well-known/jwks.json)` : '',
    gw.demoDatabase ? `Demo target "${demo}": PostgreSQL ${gw.demoDatabase.version} on 127.0.0.1:${gw.demoDatabase.port} (only Warden holds its credential)` : '',
    adapters
      ? `Audit trail: DynamoDB tables ${process.env[AwsEnvironment.auditSessionsTable]} and ${process.env[AwsEnvironment.auditEventsTable]}, recordings in s3://${process.env[AwsEnvironment.recordingsBucket]}`
      : `Audit trail: ${loaded.auditDir}  (npx warden audit sessions)`,
    gw.policyVersion ? `Policy: ${gw.policyVersion} from ${loaded.policyDir}  (npx warden policy explain --help)` : '',
    '',
    'Connect as an agent:',
    gw.devIssuerUrl
      ? `  PGPASSWORD=$(npx warden token --sub demo-agent --groups readers) psql "host=${host} port=${port} user=demo-agent dbname=${demo}"`
      : `  PGPASSWORD=<your OIDC token> psql "host=${host} port=${port} user=<token subject> dbname=${demo}"`,
    '',
  ];
  process.stdout.write(lines.filter((l, k) => l !== '' || k === 0 || lines[k - 1] !== '').join('\n') + '\n');

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    // Live sessions get time to finish; the audit trail is flushed and sealed before exit.
    gw.close(drainMs).then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { err });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  if (err instanceof ConfigInvalidError || err instanceof PolicySetInvalidError) process.stderr.write(`${err.message}\n`);
  else log.error('Warden could not start', { err });
  process.exit(1);
});
