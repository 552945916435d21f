/** Finds the PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) on this machine. */
import { spawnSync } from 'node:child_process';
import { accessSync, constants as fsConstants, readdirSync } from 'node:fs';
import path from 'node:path';
import { POSTGRES_BINARIES_NOT_FOUND_MESSAGE, PostgresServerBinariesNotFoundError } from './postgres-server-errors.ts';

const REQUIRED_BINARIES = ['initdb', 'pg_ctl', 'postgres', 'psql'] as const;

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
