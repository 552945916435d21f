/**
 * SQL text sent to the server through psql: quoted identifiers and literals, and the password verifier
 * that CREATE / ALTER ROLE stores.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { PostgresAuthMethod } from './postgres-config-files.ts';
import { PostgresServerConfigError } from './postgres-server-errors.ts';

export function quoteIdent(name: string): string {
  if (name.includes('\0')) throw new PostgresServerConfigError('identifier contains NUL');
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new PostgresServerConfigError('literal contains NUL');
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * Hashes the password client-side so the cleartext never reaches the server log (log_statement=all).
 * Only for printable ASCII, where SASLprep is the identity; anything else goes as cleartext and the
 * server hashes it per password_encryption.
 */
export function passwordVerifier(role: string, password: string, method: PostgresAuthMethod): string | undefined {
  if (!/^[\x20-\x7e]*$/.test(password)) return undefined;
  if (method === 'md5') return `md5${createHash('md5').update(password + role).digest('hex')}`;
  const iterations = 4096;
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest('base64');
  const serverKey = createHmac('sha256', salted).update('Server Key').digest('base64');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey}:${serverKey}`;
}
