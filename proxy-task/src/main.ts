/**
 * Entry point of the Warden proxy: `npm start` runs it on the embedded default.
 * Usage: node --import tsx proxy-task/src/main.ts [--config warden.config.yaml]
 */
import { ConfigInvalidError } from '../../core/config/schema.ts';
import { PolicySetInvalidError } from '../../core/policy/policy-set.ts';
import { configPath, loadConfigFile } from '../../adapters/local/config-file.ts';
import { startGateway } from './gateway.ts';
import { createLogger } from './log.ts';

const log = createLogger();

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const i = args.indexOf('--config');
  const loaded = loadConfigFile(configPath(i >= 0 ? args[i + 1] : undefined));
  const gw = await startGateway(loaded, { log });
  const { host, port } = gw.postgres;
  const demo = loaded.config.targets[0]?.name ?? 'demo';
  const lines = [
    '',
    `Warden is listening for PostgreSQL on ${host}:${port} (TLS: ${loaded.config.listeners.postgres.tls.mode}).`,
    gw.devIssuerUrl ? `Development token issuer: ${gw.devIssuerUrl} (JWKS at ${gw.devIssuerUrl}/.well-known/jwks.json)` : '',
    gw.demoDatabase ? `Demo target "${demo}": PostgreSQL ${gw.demoDatabase.version} on 127.0.0.1:${gw.demoDatabase.port} (only Warden holds its credential)` : '',
    `Audit trail: ${loaded.auditDir}  (npx warden audit sessions)`,
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
    gw.close(Number(process.env.WARDEN_DRAIN_MS ?? 5000)).then(
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
