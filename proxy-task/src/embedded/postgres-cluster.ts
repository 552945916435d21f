/**
 * Cluster data directories and their cleanup: a pristine initdb result per process, copied for temp
 * clusters; checks on a persistent data directory; and, when the process exits, a best-effort stop of every
 * server it started and removal of the directories it created.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { childEnv, commandLine, run, SERVER_OS_USER, serverUserCanTraverse, type OsUser } from './postgres-commands.ts';
import { PostgresServerConfigError } from './postgres-server-errors.ts';

/** What the exit hook needs to stop a server and remove the directories made for it. */
export interface LiveRecord {
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

/** Stops `rec`'s server at process exit unless forgotten first. */
export function registerLiveServer(rec: LiveRecord): void {
  live.add(rec);
  installExitHook();
}

/** `rec`'s server was stopped: the exit hook leaves it alone; the caller removes its directories. */
export function forgetLiveServer(rec: LiveRecord): void {
  live.delete(rec);
}

// A pristine initdb result per (binDir, superuser), copied for every further temp cluster of this
// process: cp -a takes about a third of initdb's time, which adds up in test suites.
const templates = new Map<string, Promise<string>>();
// Process-lifetime dirs (the templates), removed at exit.
const processTempDirs = new Set<string>();

export async function initCluster(initdb: string, dataDir: string, superuser: string, major: number, cwd: string): Promise<void> {
  const args = ['-D', dataDir, '-U', superuser, '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync'];
  if (major >= 14) args.push('--no-instructions');
  await run(initdb, args, { asServerUser: true, cwd });
}

export function templateDataDir(
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

/** Creates or checks a persistent data dir: empty or an existing cluster of the same major version. */
export async function prepareDataDir(dataDir: string, major: number, owner: OsUser | undefined): Promise<void> {
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
