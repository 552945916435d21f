/**
 * Starts and stops a real PostgreSQL cluster from the machine's server binaries (initdb, pg_ctl,
 * postgres, psql), for `npm start` demos and integration tests.
 *
 * Every start rewrites pg_hba.conf and an included `warden.conf`, so options always win over whatever
 * a reused cluster had. Settings go through that file rather than `pg_ctl -o`, which pg_ctl passes
 * through a shell.
 *
 * This module holds the PostgresServer class and its process lifecycle. The pieces it uses live next to
 * it: binaries discovery (`postgres-binaries.ts`), child commands and the server OS user
 * (`postgres-commands.ts`), data directories and exit cleanup (`postgres-cluster.ts`), configuration
 * files (`postgres-config-files.ts`), SQL quoting (`postgres-sql-quoting.ts`) and errors
 * (`postgres-server-errors.ts`).
 */
import { existsSync } from 'node:fs';
import { chmod, chown, copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findPostgresBinDir } from './postgres-binaries.ts';
import { forgetLiveServer, initCluster, prepareDataDir, registerLiveServer, templateDataDir, type LiveRecord } from './postgres-cluster.ts';
import { isRoot, lookupServerOsUser, run, serverUserCanTraverse } from './postgres-commands.ts';
import {
  ensureInclude,
  hbaConf,
  INCLUDE_FILE,
  RESERVED_SETTINGS,
  serverConf,
  SSL_CERT_NAME,
  SSL_KEY_NAME,
  writeServerFile,
  type PostgresAuthMethod,
} from './postgres-config-files.ts';
import { PostgresServerConfigError, PostgresServerStartError } from './postgres-server-errors.ts';
import { passwordVerifier, quoteIdent, quoteLiteral } from './postgres-sql-quoting.ts';

export { findPostgresBinDir } from './postgres-binaries.ts';
export type { PostgresAuthMethod } from './postgres-config-files.ts';
export {
  POSTGRES_BINARIES_NOT_FOUND_MESSAGE,
  PostgresServerBinariesNotFoundError,
  PostgresServerCommandError,
  PostgresServerConfigError,
  PostgresServerStartError,
} from './postgres-server-errors.ts';
export { quoteIdent, quoteLiteral } from './postgres-sql-quoting.ts';

export interface PostgresServerOptions {
  /** Persistent directory: an existing cluster there is reused. Default: a fresh temp dir removed at stop. */
  dataDir?: string;
  /** Default: a free port on 127.0.0.1. */
  port?: number;
  /** Default: env PG_BIN_DIR, `pg_config --bindir`, or the highest /usr/lib/postgresql/<n>/bin. */
  binDir?: string;
  /** Default 'postgres'. */
  superuser?: string;
  /** Auth for TCP connections from 127.0.0.1 / ::1. The unix socket stays trust, for setup. Default 'trust'. */
  authMethod?: PostgresAuthMethod;
  /** Extra server settings, e.g. { log_statement: 'all' }. */
  settings?: Record<string, string>;
  /** Enables ssl=on with this certificate and key (copied into the data dir). */
  ssl?: { certFile: string; keyFile: string };
}

const PORT_ATTEMPTS = 4; // the first try plus 3 retries on a port collision
// Unix socket paths are limited to ~107 bytes; leave room for "/.s.PGSQL.NNNNN".
const MAX_SOCKET_DIR_LENGTH = 80;

function tempRoot(): string {
  const t = os.tmpdir();
  if (t.length <= MAX_SOCKET_DIR_LENGTH - 20 && serverUserCanTraverse(t)) return t;
  return '/tmp';
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port assigned'))));
    });
  });
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await stat(p)).size;
  } catch {
    return 0;
  }
}

async function readFrom(p: string, offset: number): Promise<string> {
  try {
    const buf = await readFile(p);
    return buf.subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

const PORT_IN_USE = /Address already in use|could not bind IPv[46] address|could not create any TCP\/IP sockets/i;

export class PostgresServer {
  readonly host = '127.0.0.1' as const;
  readonly port: number;
  readonly socketDir: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** Server version, e.g. "15.14". */
  readonly version: string;
  readonly superuser: string;
  readonly authMethod: PostgresAuthMethod;
  readonly binDir: string;
  readonly ssl: boolean;

  readonly #live: LiveRecord;
  #stopping: Promise<void> | undefined;

  private constructor(fields: {
    port: number;
    socketDir: string;
    dataDir: string;
    logFile: string;
    version: string;
    superuser: string;
    authMethod: PostgresAuthMethod;
    binDir: string;
    ssl: boolean;
    live: LiveRecord;
  }) {
    this.port = fields.port;
    this.socketDir = fields.socketDir;
    this.dataDir = fields.dataDir;
    this.logFile = fields.logFile;
    this.version = fields.version;
    this.superuser = fields.superuser;
    this.authMethod = fields.authMethod;
    this.binDir = fields.binDir;
    this.ssl = fields.ssl;
    this.#live = fields.live;
  }

  static async start(opts: PostgresServerOptions = {}): Promise<PostgresServer> {
    const binDir = findPostgresBinDir(opts.binDir);
    const bin = (name: string): string => path.join(binDir, name);
    const superuser = opts.superuser ?? 'postgres';
    const authMethod = opts.authMethod ?? 'trust';
    const settings = opts.settings ?? {};
    for (const key of Object.keys(settings)) {
      if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) throw new PostgresServerConfigError(`invalid setting name: ${key}`);
      if (RESERVED_SETTINGS.has(key.toLowerCase())) {
        throw new PostgresServerConfigError(`setting ${key} is derived from the options; use the port option instead`);
      }
    }
    if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port > 0 && opts.port < 65536)) {
      throw new PostgresServerConfigError(`invalid port: ${opts.port}`);
    }

    const versionOut = await run(bin('postgres'), ['--version']);
    const version = /\(PostgreSQL\)\s+(\S+)/.exec(versionOut.stdout)?.[1] ?? versionOut.stdout.trim();
    const major = Number.parseInt(version, 10);

    const owner = isRoot() ? lookupServerOsUser() : undefined;
    const giveToServer = async (p: string): Promise<void> => {
      if (owner) await chown(p, owner.uid, owner.gid);
    };

    const root = tempRoot();
    const removeDirs: string[] = [];
    let dataDir: string;
    let socketDir: string;
    let logFile: string;
    try {
      if (opts.dataDir === undefined) {
        const base = await mkdtemp(path.join(root, 'warden-pg-'));
        removeDirs.push(base);
        await giveToServer(base);
        socketDir = base;
        dataDir = path.join(base, 'data');
        logFile = path.join(base, 'postgres.log');
        const template = await templateDataDir(binDir, superuser, major, owner, root);
        await run('cp', ['-a', template, dataDir], { asServerUser: true, cwd: socketDir });
      } else {
        // A short socket path of its own: the data dir's path may exceed the unix socket limit.
        socketDir = await mkdtemp(path.join(root, 'warden-pg-sock-'));
        removeDirs.push(socketDir);
        await giveToServer(socketDir);
        dataDir = path.resolve(opts.dataDir);
        logFile = path.join(dataDir, 'warden-postgres.log');
        await prepareDataDir(dataDir, major, owner);
        if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
          await initCluster(bin('initdb'), dataDir, superuser, major, socketDir);
        } else {
          const status = run(bin('pg_ctl'), ['-D', dataDir, 'status'], { asServerUser: true, cwd: socketDir });
          if (await status.then(() => true, () => false)) {
            throw new PostgresServerConfigError(`a PostgreSQL server is already running on data directory ${dataDir}`);
          }
        }
      }

      const ssl = opts.ssl !== undefined;
      if (opts.ssl) {
        // Copied so the server user owns them with the 0600 mode PostgreSQL insists on for the key.
        for (const [src, name] of [
          [opts.ssl.certFile, SSL_CERT_NAME],
          [opts.ssl.keyFile, SSL_KEY_NAME],
        ] as const) {
          const dst = path.join(dataDir, name);
          await copyFile(src, dst);
          await chmod(dst, 0o600);
          await giveToServer(dst);
        }
      }
      await writeServerFile(path.join(dataDir, 'pg_hba.conf'), hbaConf(authMethod), owner);
      await ensureInclude(path.join(dataDir, 'postgresql.conf'));

      let port = opts.port ?? (await freePort());
      for (let attempt = 1; ; attempt++) {
        await writeServerFile(
          path.join(dataDir, INCLUDE_FILE),
          serverConf({ port, socketDir, authMethod, ssl, settings }),
          owner,
        );
        const logOffset = await fileSize(logFile);
        try {
          await run(bin('pg_ctl'), ['-D', dataDir, '-l', logFile, '-w', '-t', '60', '-s', 'start'], {
            asServerUser: true,
            cwd: socketDir,
          });
        } catch (e) {
          const log = await readFrom(logFile, logOffset);
          if (opts.port === undefined && PORT_IN_USE.test(log) && attempt < PORT_ATTEMPTS) {
            port = await freePort();
            continue;
          }
          const why = PORT_IN_USE.test(log) ? `port ${port} is already in use` : 'pg_ctl start failed';
          throw new PostgresServerStartError(`PostgreSQL did not start (${why}); data dir ${dataDir}`, tail(log), {
            cause: e,
          });
        }
        break;
      }

      const rec: LiveRecord = { pgCtl: bin('pg_ctl'), dataDir, cwd: socketDir, removeDirs };
      registerLiveServer(rec);
      return new PostgresServer({
        port,
        socketDir,
        dataDir,
        logFile,
        version,
        superuser,
        authMethod,
        binDir,
        ssl,
        live: rec,
      });
    } catch (e) {
      for (const d of removeDirs) await rm(d, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
  }

  /** postgresql://user[:password]@127.0.0.1:port/database */
  connectionString(user: string = this.superuser, database = 'postgres', password?: string): string {
    const auth = password === undefined ? encodeURIComponent(user) : `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
    return `postgresql://${auth}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
  }

  /**
   * Runs SQL through psql over the unix socket (trust), as the superuser unless `user` is given.
   * Output is unaligned and tuples-only (`-A -t`): one row per line, fields joined by '|'.
   * Stops at the first error and throws PostgresServerCommandError with psql's stderr.
   */
  async psql(sql: string, opts: { database?: string; user?: string } = {}): Promise<string> {
    const args = ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDir, '-p', String(this.port)];
    args.push('-U', opts.user ?? this.superuser, '-d', opts.database ?? 'postgres', '-f', '-');
    const { stdout } = await run(path.join(this.binDir, 'psql'), args, { input: sql, cwd: this.socketDir });
    return stdout;
  }

  /**
   * Creates the role, or updates an existing one's password (and LOGIN/SUPERUSER only when given), so
   * it is safe on every start of a persistent cluster. The password is stored as a verifier matching
   * authMethod (md5 for 'md5', SCRAM otherwise); `null` clears it.
   */
  async createRole(
    name: string,
    password: string | null,
    opts: { superuser?: boolean; login?: boolean } = {},
  ): Promise<void> {
    const exists = (await this.psql(`SELECT 1 FROM pg_roles WHERE rolname = ${quoteLiteral(name)}`)).trim() === '1';
    const attrs: string[] = [];
    // On ALTER, leave unspecified attributes alone: never demote an existing superuser by accident.
    const login = opts.login ?? (exists ? undefined : true);
    const superuser = opts.superuser ?? (exists ? undefined : false);
    if (login !== undefined) attrs.push(login ? 'LOGIN' : 'NOLOGIN');
    if (superuser !== undefined) attrs.push(superuser ? 'SUPERUSER' : 'NOSUPERUSER');
    if (password === null) attrs.push('PASSWORD NULL');
    else attrs.push(`PASSWORD ${quoteLiteral(passwordVerifier(name, password, this.authMethod) ?? password)}`);
    await this.psql(`${exists ? 'ALTER' : 'CREATE'} ROLE ${quoteIdent(name)} WITH ${attrs.join(' ')}`);
  }

  /** Creates the database if missing; returns whether it did. An existing one is left as is. */
  async createDatabase(name: string, owner?: string): Promise<boolean> {
    const exists = (await this.psql(`SELECT 1 FROM pg_database WHERE datname = ${quoteLiteral(name)}`)).trim() === '1';
    if (exists) return false;
    await this.psql(`CREATE DATABASE ${quoteIdent(name)}${owner ? ` OWNER ${quoteIdent(owner)}` : ''}`);
    return true;
  }

  /** pg_ctl stop -m fast; removes the temp dir if start created it. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const rec = this.#live;
      try {
        await run(rec.pgCtl, ['-D', rec.dataDir, '-m', 'fast', '-w', '-t', '60', '-s', 'stop'], {
          asServerUser: true,
          cwd: rec.cwd,
        });
      } catch (e) {
        // Already down (e.g. stopped by hand) is fine; anything else is worth surfacing.
        const stillRunning = await run(rec.pgCtl, ['-D', rec.dataDir, 'status'], { asServerUser: true, cwd: rec.cwd }).then(
          () => true,
          () => false,
        );
        if (stillRunning) throw e;
      }
      forgetLiveServer(rec);
      for (const d of rec.removeDirs) await rm(d, { recursive: true, force: true });
    })();
    return this.#stopping;
  }
}
