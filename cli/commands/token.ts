/** `warden token`: prints a token from the built-in development issuer of the embedded default. */
import type { Command } from 'commander';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { DevIssuer, parseDuration } from '../../adapters/local/dev-issuer.ts';

export function registerTokenCommand(program: Command, getConfig: () => LoadedConfig): void {
  program
    .command('token')
    .description('print a token from the development issuer (embedded default only), for use as the PostgreSQL password')
    .requiredOption('--sub <agent>', "the agent's identity (token subject); use it as the PostgreSQL user name")
    .option('--groups <a,b>', 'comma-separated groups the agent belongs to', '')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 1h, 900s', '15m')
    .addHelpText('after', '\nExample:\n  PGPASSWORD=$(npx warden token --sub demo-agent --groups readers) psql "host=127.0.0.1 port=6432 user=demo-agent dbname=demo"')
    .action(async (o: { sub: string; groups: string; ttl: string }) => {
      const { config, stateDir } = getConfig();
      const d = config.identity.devIssuer;
      if (!d.enabled) throw new Error('the development issuer is disabled in the configuration (identity.devIssuer.enabled)');
      const issuer = await DevIssuer.loadOrCreate(stateDir, { issuerUrl: `http://${d.host}:${d.port}`, audience: d.audience });
      const groups = o.groups.split(',').map((g) => g.trim()).filter(Boolean);
      const token = await issuer.issueToken({ sub: o.sub, groups, ttlSeconds: parseDuration(o.ttl) });
      process.stdout.write(token + '\n');
    });
}
