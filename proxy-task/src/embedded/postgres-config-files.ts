/**
 * The configuration files Warden writes into a data directory at every start: pg_hba.conf, and the
 * `warden.conf` that postgresql.conf includes last. Settings go through that file rather than `pg_ctl -o`,
 * which pg_ctl passes through a shell.
 */
import { chown, readFile, writeFile } from 'node:fs/promises';
import type { OsUser } from './postgres-commands.ts';
import { PostgresServerConfigError } from './postgres-server-errors.ts';

/** Auth method of pg_hba.conf for TCP connections. */
export type PostgresAuthMethod = 'trust' | 'scram-sha-256' | 'md5' | 'password';

export const INCLUDE_FILE = 'warden.conf';
export const SSL_CERT_NAME = 'warden-server.crt';
export const SSL_KEY_NAME = 'warden-server.key';
// These are derived from the options; letting settings override them would desynchronise port/host.
export const RESERVED_SETTINGS = new Set(['port', 'listen_addresses', 'unix_socket_directories']);

function confValue(value: string): string {
  if (/[\0\r\n]/.test(value)) throw new PostgresServerConfigError(`setting value contains a line break: ${JSON.stringify(value)}`);
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

export async function writeServerFile(p: string, content: string, owner: OsUser | undefined): Promise<void> {
  await writeFile(p, content, { mode: 0o600 });
  if (owner) await chown(p, owner.uid, owner.gid);
}

export async function ensureInclude(postgresqlConf: string): Promise<void> {
  const line = `include_if_exists = '${INCLUDE_FILE}'`;
  const current = await readFile(postgresqlConf, 'utf8');
  if (current.split('\n').some((l) => l.trim() === line)) return;
  // Appending keeps the file's owner; the include comes last so it overrides initdb's defaults.
  await writeFile(postgresqlConf, `${current.endsWith('\n') ? '' : '\n'}\n# Added by Warden: per-start settings.\n${line}\n`, {
    flag: 'a',
  });
}

export function hbaConf(method: PostgresAuthMethod): string {
  return [
    '# Written by Warden at every start; edits are overwritten.',
    '# The unix socket stays trust so Warden can set up roles and databases.',
    'local   all          all                 trust',
    'local   replication  all                 trust',
    `host    all          all   127.0.0.1/32  ${method}`,
    `host    all          all   ::1/128       ${method}`,
    `host    replication  all   127.0.0.1/32  ${method}`,
    `host    replication  all   ::1/128       ${method}`,
    '',
  ].join('\n');
}

export function serverConf(c: {
  port: number;
  socketDir: string;
  authMethod: PostgresAuthMethod;
  ssl: boolean;
  settings: Record<string, string>;
}): string {
  const lines = [
    '# Written by Warden at every start; edits are overwritten.',
    `listen_addresses = '127.0.0.1'`,
    `port = ${c.port}`,
    `unix_socket_directories = ${confValue(c.socketDir)}`,
    // Stored verifiers must match the host auth method, or md5/scram logins fail.
    `password_encryption = ${c.authMethod === 'md5' ? "'md5'" : "'scram-sha-256'"}`,
  ];
  if (c.ssl) lines.push('ssl = on', `ssl_cert_file = '${SSL_CERT_NAME}'`, `ssl_key_file = '${SSL_KEY_NAME}'`);
  for (const [k, v] of Object.entries(c.settings)) lines.push(`${k} = ${confValue(v)}`);
  return `${lines.join('\n')}\n`;
}
