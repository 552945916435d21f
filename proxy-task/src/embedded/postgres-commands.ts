/**
 * Runs the server's commands (initdb, pg_ctl, postgres, psql) as child processes: without the caller's PG*
 * variables, and as the postgres OS user when this process runs as root, since initdb and pg_ctl refuse root.
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { PostgresServerCommandError, PostgresServerConfigError } from './postgres-server-errors.ts';

export const SERVER_OS_USER = 'postgres';

export interface OsUser {
  uid: number;
  gid: number;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

export function lookupServerOsUser(): OsUser {
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
export function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG')) env[k] = v;
  env.PGCLIENTENCODING = 'UTF8';
  return env;
}

export interface RunOptions {
  input?: string;
  cwd?: string;
  /** Run as the postgres OS user when we are root (initdb/pg_ctl refuse root). */
  asServerUser?: boolean;
  timeoutMs?: number;
}

export function commandLine(cmd: string, args: string[], asServerUser: boolean | undefined): [string, string[]] {
  return asServerUser && isRoot() ? ['runuser', ['-u', SERVER_OS_USER, '--', cmd, ...args]] : [cmd, args];
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
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
export function serverUserCanTraverse(dir: string): boolean {
  if (!isRoot()) return true;
  return spawnSync('runuser', ['-u', SERVER_OS_USER, '--', 'test', '-x', dir]).status === 0;
}
