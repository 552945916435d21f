/**
 * PgBouncer in session mode in front of the benchmark target, the reference proxy. It refuses to run
 * as root, so when we are root it runs as the postgres OS user with its files in a /tmp folder that
 * user owns. Clients log in with SCRAM against a userlist holding the target password in clear, which
 * PgBouncer also uses for its own SCRAM login to the target.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanEnv, freePort, spawnTracked, waitForPort } from './proc.ts';

export interface PgbouncerOptions {
  targetHost: string;
  targetPort: number;
  database: string;
  user: string;
  password: string;
}

export interface Pgbouncer {
  host: string;
  port: number;
  pid: number;
  version: string;
  logFile: string;
  stop(): Promise<void>;
}

export function findPgbouncer(): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/usr/local/bin', '/usr/local/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, 'pgbouncer');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new Error('pgbouncer not found: apt-get update && apt-get install -y pgbouncer');
}

function osUser(name: string): { uid: number; gid: number } {
  const uid = spawnSync('id', ['-u', name], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) throw new Error(`no '${name}' OS user to run pgbouncer as (it refuses root)`);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

const quote = (s: string): string => `"${s.replace(/"/g, '""')}"`;

export async function startPgbouncer(o: PgbouncerOptions): Promise<Pgbouncer> {
  const exe = findPgbouncer();
  const version = (spawnSync(exe, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '').trim();
  const owner = process.getuid?.() === 0 ? osUser('postgres') : undefined;
  const dir = mkdtempSync('/tmp/warden-bench-pgbouncer-');
  const port = await freePort();
  const cfg = path.join(dir, 'pgbouncer.ini');
  const userlist = path.join(dir, 'userlist.txt');
  const logFile = path.join(dir, 'pgbouncer.log');
  writeFileSync(userlist, `${quote(o.user)} ${quote(o.password)}\n`, { mode: 0o600 });
  writeFileSync(
    cfg,
    [
      '[databases]',
      `${o.database} = host=${o.targetHost} port=${o.targetPort} dbname=${o.database}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = scram-sha-256',
      `auth_file = ${userlist}`,
      'pool_mode = session',
      'max_client_conn = 200',
      'default_pool_size = 40',
      `logfile = ${logFile}`,
      'log_connections = 0',
      'log_disconnections = 0',
      // pgbench sends none of these, but other drivers do.
      'ignore_startup_parameters = extra_float_digits',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  if (owner) for (const p of [dir, cfg, userlist]) chownSync(p, owner.uid, owner.gid);

  const child: ChildProcess = spawnTracked(exe, [cfg], {
    env: cleanEnv(),
    stdio: ['ignore', 'ignore', 'pipe'],
    cwd: dir,
    ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    resolve();
  }));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    await Promise.race([
      waitForPort('127.0.0.1', port, 10_000),
      exit.then(() => {
        throw new Error('pgbouncer exited at start');
      }),
    ]);
  } catch (err) {
    if (!exited) child.kill('SIGTERM');
    let log = '';
    try {
      log = readFileSync(logFile, 'utf8');
    } catch {
      // no log yet
    }
    cleanup();
    throw new Error(`${(err as Error).message}\n${stderr}${log}`.trim());
  }
  let stopping: Promise<void> | undefined;
  return {
    host: '127.0.0.1',
    port,
    pid: child.pid!,
    version,
    logFile,
    stop: () =>
      (stopping ??= (async () => {
        // SIGTERM: immediate shutdown (SIGINT would wait for the clients).
        if (!exited) child.kill('SIGTERM');
        const t = setTimeout(() => {
          if (!exited) child.kill('SIGKILL');
        }, 5000);
        await exit;
        clearTimeout(t);
        cleanup();
      })()),
  };
}
