/** The `warden` command in a child process, as an operator runs it, and temporary folders removed after the file's tests. */
import { after } from 'node:test';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(REPO, 'cli/bin/warden.mjs');

export interface WardenCliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `warden ...` from the repository root, without WARDEN_CONFIG from this environment; resolves with
 * the exit code instead of rejecting on a non-zero one.
 */
export function runWardenCli(args: string[], opts: { timeoutMs?: number } = {}): Promise<WardenCliRun> {
  const env = { ...process.env };
  delete env.WARDEN_CONFIG;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, env, timeout: opts.timeoutMs ?? 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/**
 * Call at the top level of a test file: returns a function making temporary folders named `prefix…`,
 * all removed after the file's tests.
 */
export function temporaryFolders(): (prefix: string) => string {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  return (prefix) => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
}
