/**
 * Starts and stops a real PostgreSQL cluster from the machine's server binaries (initdb, pg_ctl,
 * postgres, psql), for `npm start` demos and integration tests.
 *
 * Every start rewrites pg_hba.conf and an included `warden.conf`, so options always win over whatever
 * a reused cluster had. Settings go through that file rather than `pg_ctl -o`, which pg_ctl passes
 * through a shell.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, existsSync, readdirSync, rmSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export type PostgresAuthMethod = 'trust' | 'scram-sha-256' | 'md5' | 'password';

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

const REQUIRED_BINARIES = ['initdb', 'pg_ctl', 'postgres', 'psql'] as const;
const SERVER_OS_USER = 'postgres';
const PORT_ATTEMPTS = 4; // the first try plus 3 retries on a port collision
const INCLUDE_FILE = 'warden.conf';
const SSL_CERT_NAME = 'warden-server.crt';
const SSL_KEY_NAME = 'warden-server.key';
// These are derived from the options; letting settings override them would desynchronise port/host.
const RESERVED_SETTINGS = new Set(['port', 'listen_addresses', 'unix_socket_directories']);
// Unix socket paths are limited to ~107 bytes; leave room for "/.s.PGSQL.NNNNN".
const MAX_SOCKET_DIR_LENGTH = 80;

function hasServerBinaries(dir: string): boolean {
  return REQUIRED_BINARIES.every((b) => {
    try {
      accessSync(path.join(dir, b), fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Finds a directory holding initdb, pg_ctl, postgres and psql; throws PostgresServerBinariesNotFoundError. */
export function findPostgresBinDir(explicit?: string): string {
  if (explicit) {
    if (hasServerBinaries(explicit)) return explicit;
    throw new PostgresServerBinariesNotFoundError(
      `${POSTGRES_BINARIES_NOT_FOUND_MESSAGE} (binDir ${explicit} lacks ${REQUIRED_BINARIES.join('/')})`,
    );
  }
  const fromEnv = process.env.PG_BIN_DIR;
  if (fromEnv) {
    if (hasServerBinaries(fromEnv)) return fromEnv;
    throw new PostgresServerBinariesNotFoundError(
      `${POSTGRES_BINARIES_NOT_FOUND_MESSAGE} (PG_BIN_DIR=${fromEnv} lacks ${REQUIRED_BINARIES.join('/')})`,
    );
  }
  // pg_config may come from libpq-dev alone, so its bindir is only a candidate.
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8', timeout: 5000 });
  const fromPgConfig = pgConfig.status === 0 ? pgConfig.stdout.trim() : '';
  if (fromPgConfig && hasServerBinaries(fromPgConfig)) return fromPgConfig;

  const debianRoot = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(debianRoot).filter((v) => /^\d+(\.\d+)?$/.test(v));
  } catch {
    // not a Debian layout
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  for (const v of versions) {
    const dir = path.join(debianRoot, v, 'bin');
    if (hasServerBinaries(dir)) return dir;
  }
  for (const dir of ['/usr/local/pgsql/bin', '/usr/local/bin', '/usr/bin']) {
    if (hasServerBinaries(dir)) return dir;
  }
  throw new PostgresServerBinariesNotFoundError();
}

interface OsUser {
  uid: number;
  gid: number;
}

const isRoot = (): boolean => process.getuid?.() === 0;

function lookupServerOsUser(): OsUser {
  const uid = spawnSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) {
    throw new PostgresServerConfigError(
      `running as root, but there is no '${SERVER_OS_USER}' OS user to run the server as (initdb refuses root); ` +
        'install the Debian package postgresql or run as a non-root user',
    );
  }
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** Env without PG* variables, which would redirect psql/pg_ctl to some other server. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env.PGCLIENTENCODING = 'UTF8';
  return env;
}

interface RunOptions {
  input?: string;
  cwd?: string;
  /** Run as the postgres OS user when we are root (initdb/pg_ctl refuse root). */
  asServerUser?: boolean;
  timeoutMs?: number;
}

function commandLine(cmd: string, args: string[], asServerUser: boolean | undefined): [string, string[]] {
  return asServerUser && isRoot() ? ['runuser', ['-u', SERVER_OS_USER, '--', cmd, ...args]] : [cmd, args];
}

function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  const [file, argv] = commandLine(cmd, args, opts.asServerUser);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      cwd: opts.cwd,
      env: childEnv(),
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 120_000,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => reject(new PostgresServerCommandError(path.basename(cmd), null, e.message, { cause: e })));
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve({ stdout, stderr });
      else reject(new PostgresServerCommandError(path.basename(cmd), code, stderr || stdout));
    });
    // psql may exit before reading all input; the exit code tells the story.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** True if the postgres OS user can reach `dir` (every parent traversable). */
function serverUserCanTraverse(dir: string): boolean {
  if (!isRoot()) return true;
  return spawnSync('runuser', ['-u', SERVER_OS_USER, '--', 'test', '-x', dir]).status === 0;
}

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

export function quoteIdent(name: string): string {
  if (name.includes('\0')) throw new PostgresServerConfigError('identifier contains NUL');
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new PostgresServerConfigError('literal contains NUL');
  return `'${value.replace(/'/g, "''")}'`;
}

function confValue(value: string): string {
  if (/[\0\r\n]/.test(value)) throw new PostgresServerConfigError(`setting value contains a line break: ${JSON.stringify(value)}`);
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/**
 * Hashes the password client-side so the cleartext never reaches the server log (log_statement=all).
 * Only for printable ASCII, where SASLprep is the identity; anything else goes as cleartext and the
 * server hashes it per password_encryption.
 */
function passwordVerifier(role: string, password: string, method: PostgresAuthMethod): string | undefined {
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

interface LiveRecord {
  pgCtl: string;
  dataDir: string;
  cwd: string;
  removeDirs: string[];
}

// Servers started by this process, stopped best-effort when it exits so no postmaster outlives it.
const live = new Set<LiveRecord>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const rec of live) {
      const [file, argv] = commandLine(rec.pgCtl, ['-D', rec.dataDir, '-m', 'immediate', '-w', '-t', '10', '-s', 'stop'], true);
      try {
        spawnSync(file, argv, { cwd: rec.cwd, env: childEnv(), stdio: 'ignore', timeout: 15_000 });
      } catch {
        // best effort
      }
      for (const d of rec.removeDirs) {
        try {
          rmSync(d, { recursive: true, force: true });
        } catch {
          // best effort
        }
      }
    }
    live.clear();
    for (const d of processTempDirs) {
      try {
        rmSync(d, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

// A pristine initdb result per (binDir, superuser), copied for every further temp cluster of this
// process: cp -a takes about a third of initdb's time, which adds up in test suites.
const templates = new Map<string, Promise<string>>();
// Process-lifetime dirs (the templates), removed at exit.
const processTempDirs = new Set<string>();

async function initCluster(initdb: string, dataDir: string, superuser: string, major: number, cwd: string): Promise<void> {
  const args = ['-D', dataDir, '-U', superuser, '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync'];
  if (major >= 14) args.push('--no-instructions');
  await run(initdb, args, { asServerUser: true, cwd });
}

function templateDataDir(
  binDir: string,
  superuser: string,
  major: number,
  owner: OsUser | undefined,
  root: string,
): Promise<string> {
  const key = `${binDir}\0${superuser}`;
  let template = templates.get(key);
  if (!template) {
    template = (async () => {
      const base = await mkdtemp(path.join(root, 'warden-pg-template-'));
      processTempDirs.add(base);
      installExitHook();
      if (owner) await chown(base, owner.uid, owner.gid);
      const dir = path.join(base, 'data');
      await initCluster(path.join(binDir, 'initdb'), dir, superuser, major, base);
      return dir;
    })();
    template.catch(() => templates.delete(key)); // let a later start try again
    templates.set(key, template);
  }
  return template;
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
      live.add(rec);
      installExitHook();
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
      live.delete(rec);
      for (const d of rec.removeDirs) await rm(d, { recursive: true, force: true });
    })();
    return this.#stopping;
  }
}

/** Creates or checks a persistent data dir: empty or an existing cluster of the same major version. */
async function prepareDataDir(dataDir: string, major: number, owner: OsUser | undefined): Promise<void> {
  if (!existsSync(dataDir)) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (owner) await chown(dataDir, owner.uid, owner.gid);
  }
  if (!serverUserCanTraverse(dataDir)) {
    throw new PostgresServerConfigError(
      `the '${SERVER_OS_USER}' OS user cannot reach ${dataDir}: running as root, the server runs as ` +
        `'${SERVER_OS_USER}', so every parent directory must be traversable by it (chmod o+x, or use a dir under /tmp or /var/tmp; not /root)`,
    );
  }
  const pgVersionFile = path.join(dataDir, 'PG_VERSION');
  if (existsSync(pgVersionFile)) {
    const clusterMajor = Number.parseInt((await readFile(pgVersionFile, 'utf8')).trim(), 10);
    if (clusterMajor !== major) {
      throw new PostgresServerConfigError(
        `data directory ${dataDir} holds a PostgreSQL ${clusterMajor} cluster but the binaries are version ${major}`,
      );
    }
    return;
  }
  if ((await readdir(dataDir)).length > 0) {
    throw new PostgresServerConfigError(`data directory ${dataDir} is neither empty nor a PostgreSQL cluster`);
  }
  if (owner) await chown(dataDir, owner.uid, owner.gid);
}

async function writeServerFile(p: string, content: string, owner: OsUser | undefined): Promise<void> {
  await writeFile(p, content, { mode: 0o600 });
  if (owner) await chown(p, owner.uid, owner.gid);
}

async function ensureInclude(postgresqlConf: string): Promise<void> {
  const line = `include_if_exists = '${INCLUDE_FILE}'`;
  const current = await readFile(postgresqlConf, 'utf8');
  if (current.split('\n').some((l) => l.trim() === line)) return;
  // Appending keeps the file's owner; the include comes last so it overrides initdb's defaults.
  await writeFile(postgresqlConf, `${current.endsWith('\n') ? '' : '\n'}\n# Added by Warden: per-start settings.\n${line}\n`, {
    flag: 'a',
  });
}

function hbaConf(method: PostgresAuthMethod): string {
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

function serverConf(c: {
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
