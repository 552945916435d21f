/** The errors PostgresServer raises; re-exported by `postgres-server.ts`. */

export const POSTGRES_BINARIES_NOT_FOUND_MESSAGE =
  'PostgreSQL server binaries not found: install the Debian package postgresql (apt-get install postgresql) or set PG_BIN_DIR';

export class PostgresServerBinariesNotFoundError extends Error {
  constructor(message: string = POSTGRES_BINARIES_NOT_FOUND_MESSAGE, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PostgresServerBinariesNotFoundError';
  }
}

/** Invalid options or an unusable data directory; raised before anything is started. */
export class PostgresServerConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PostgresServerConfigError';
  }
}

export class PostgresServerStartError extends Error {
  readonly logTail: string;

  constructor(message: string, logTail: string, options?: { cause?: unknown }) {
    super(logTail ? `${message}\n--- server log ---\n${logTail}` : message, options);
    this.name = 'PostgresServerStartError';
    this.logTail = logTail;
  }
}

/** A child command (initdb, pg_ctl, psql) exited non-zero; the message carries its stderr. */
export class PostgresServerCommandError extends Error {
  readonly command: string;
  readonly exitCode: number | null;
  readonly stderr: string;

  constructor(command: string, exitCode: number | null, stderr: string, options?: { cause?: unknown }) {
    super(`${command} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || '(no output)'}`, options);
    this.name = 'PostgresServerCommandError';
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}
