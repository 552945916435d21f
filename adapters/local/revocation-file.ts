/**
 * LocalRevocationFile: the embedded default's RevocationList, a JSON file under the state folder
 * (`revocations.file`, default `<stateDir>/revocations.json`):
 *
 *   { "revoked": [ { "issuer": "...", "subject": "...", "revokedAt": "...", "reason": "...", "revokedBy": "..." } ] }
 *
 * The folder is watched (fs.watch) so a change applies within milliseconds, and the file's identity
 * (inode, size, times) is polled in case the watch misses an event (network file systems, inotify limits).
 *
 * A missing file is an empty list: nobody has been revoked yet. A file that cannot be read or does not
 * hold a valid document makes the list `unavailable`, so every new login is refused until it is fixed
 * (fail closed), and the error is logged once with what is wrong. An empty file counts as invalid too: a
 * writer that truncates before it writes must not un-revoke everyone for a moment. `warden revoke` writes
 * the file atomically (temp file + rename), so the gateway never sees half of it.
 */
import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher, type Stats } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import type { RevocationList, RevocationStatus, RevokedIdentity } from '../../core/identity/revocation.ts';
import {
  parseRevocationDocument,
  RevocationDocumentError,
  RevocationListeners,
  RevocationSnapshot,
  SILENT_REVOCATION_LOGGER,
  type RevocationDocument,
  type RevocationLogger,
} from '../../core/identity/revocation-document.ts';
import type { LoadedConfig } from './config-file.ts';
import { syncDir } from './audit-journal.ts';

/** A revocation list of a few thousand identities is well under a megabyte; anything this big is not one. */
const MAX_FILE_BYTES = 16 * 1024 * 1024;
const DEFAULT_POLL_INTERVAL_MS = 1000;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const noop = (): void => {};

/** The revocation file of a configuration: `revocations.file`, relative to the state folder. */
export function revocationsFilePath(loaded: LoadedConfig): string {
  const file = loaded.config.revocations.file;
  return isAbsolute(file) ? file : resolve(loaded.stateDir, file);
}

/** The revocation file cannot be read or does not hold a valid document. */
export class RevocationFileError extends Error {
  constructor(
    readonly path: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`revocation file ${path}: ${problem}`, options);
    this.name = 'RevocationFileError';
  }
}

/** Reads and validates the file; a missing file is an empty list. Throws RevocationFileError otherwise. */
export async function readRevocationFile(path: string): Promise<RevocationDocument> {
  const r = await readWithStats(path);
  return r.doc;
}

async function readWithStats(path: string): Promise<{ doc: RevocationDocument; signature: string }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { doc: { revoked: [] }, signature: MISSING };
    throw new RevocationFileError(path, `cannot open: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  try {
    // Stats and content from the same open file: the signature describes exactly what was read.
    const st = await fh.stat();
    const signature = statSignature(st);
    if (!st.isFile()) throw new RevocationFileError(path, 'not a regular file');
    if (st.size > MAX_FILE_BYTES) throw new RevocationFileError(path, `${st.size} bytes (at most ${MAX_FILE_BYTES})`);
    const text = await fh.readFile('utf8');
    if (text.trim() === '') throw new RevocationFileError(path, 'the file is empty (expected {"revoked": [...]})');
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new RevocationFileError(path, `not valid JSON (${(err as Error).message})`, { cause: err });
    }
    try {
      return { doc: parseRevocationDocument(parsed), signature };
    } catch (err) {
      if (err instanceof RevocationDocumentError) throw new RevocationFileError(path, `not a revocation list: ${err.message}`, { cause: err });
      throw err;
    }
  } catch (err) {
    if (err instanceof RevocationFileError) throw err;
    throw new RevocationFileError(path, `cannot read: ${(err as Error).message}`, { cause: err });
  } finally {
    await fh.close().catch(noop);
  }
}

/**
 * Replaces the file atomically: a temp file in the same folder (0600), fsynced, renamed over the file,
 * and the folder fsynced, so a reader sees the old document or the new one, never a mix.
 */
export async function writeRevocationFile(path: string, doc: RevocationDocument): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', FILE_MODE);
    try {
      await fh.writeFile(JSON.stringify({ revoked: doc.revoked }, null, 2) + '\n', 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(noop);
    throw err;
  }
  await syncDir(dir);
}

const MISSING = 'missing';

function statSignature(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

export interface LocalRevocationFileOptions {
  path: string;
  log?: RevocationLogger;
  /** How often the file's identity is checked besides watching its folder. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Watch the folder for a prompt reload; polling alone when false. Default true. */
  watch?: boolean;
}

export class LocalRevocationFile implements RevocationList {
  readonly path: string;
  readonly ready: Promise<void>;
  private readonly log: RevocationLogger;
  private readonly listeners: RevocationListeners;
  /** Undefined while the list is unavailable (not loaded yet, or the file is invalid). */
  private snapshot: RevocationSnapshot | undefined;
  private problem: string | undefined;
  /** The stat signature of what was last read. */
  private seen: string | undefined;
  private loading: Promise<void> | undefined;
  private reloadAgain = false;
  private watcher: FSWatcher | undefined;
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(opts: LocalRevocationFileOptions) {
    this.path = opts.path;
    this.log = opts.log ?? SILENT_REVOCATION_LOGGER;
    this.listeners = new RevocationListeners((err) => this.log.error('revocation list: a change listener failed', { err }));
    this.ready = this.reload().then(() => {
      if (!this.snapshot) throw new RevocationFileError(this.path, this.problem ?? 'not loaded');
    });
    this.ready.catch(noop); // the caller awaits it; an unawaited failure is not an unhandled rejection
    if (opts.watch ?? true) this.startWatching();
    this.timer = setInterval(() => void this.poll(), opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS);
    this.timer.unref();
  }

  check(issuer: string, subject: string): RevocationStatus {
    return this.snapshot ? this.snapshot.status(issuer, subject) : 'unavailable';
  }

  onChange(listener: () => void): () => void {
    return this.listeners.add(listener);
  }

  /** The revoked identities now (empty while unavailable). */
  entries(): RevokedIdentity[] {
    return this.snapshot?.entries() ?? [];
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
    this.listeners.clear();
    await this.loading?.catch(noop);
  }

  private startWatching(): void {
    const name = basename(this.path);
    try {
      // The folder, not the file: an atomic replace gives the file a new inode, which a file watch would miss.
      const w = watch(dirname(this.path), { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name) void this.reload();
      });
      w.on('error', (err) => {
        this.log.warn('revocation list: watching the folder failed; polling only', { path: this.path, err });
        w.close();
        if (this.watcher === w) this.watcher = undefined;
      });
      this.watcher = w;
    } catch (err) {
      // No folder yet, or no watch available: polling notices the file once it appears.
      this.log.warn('revocation list: cannot watch the folder; polling only', { path: this.path, err });
    }
  }

  private async poll(): Promise<void> {
    if (this.closed || this.loading) return;
    let signature: string;
    try {
      signature = statSignature(await stat(this.path));
    } catch (err) {
      signature = (err as NodeJS.ErrnoException).code === 'ENOENT' ? MISSING : `error:${(err as NodeJS.ErrnoException).code ?? 'unknown'}`;
    }
    if (signature !== this.seen) await this.reload();
  }

  /** Reloads the file; concurrent calls share one load and one more after it (never two at once). */
  private reload(): Promise<void> {
    if (this.loading) {
      this.reloadAgain = true;
      return this.loading;
    }
    this.loading = (async () => {
      do {
        this.reloadAgain = false;
        await this.loadOnce();
      } while (this.reloadAgain && !this.closed);
    })().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async loadOnce(): Promise<void> {
    try {
      const { doc, signature } = await readWithStats(this.path);
      this.seen = signature;
      this.apply(new RevocationSnapshot(doc.revoked), undefined);
    } catch (err) {
      this.seen = undefined; // read again at the next poll
      this.apply(undefined, err instanceof RevocationFileError ? err.problem : (err as Error).message);
    }
  }

  private apply(next: RevocationSnapshot | undefined, problem: string | undefined): void {
    if (this.closed) return;
    const prev = this.snapshot;
    const prevProblem = this.problem;
    this.snapshot = next;
    this.problem = problem;
    if (!next) {
      if (problem !== prevProblem) {
        this.log.error('revocation list unavailable: every new login is refused until the file is fixed (fail closed); live sessions continue', { path: this.path, problem });
      }
    } else if (!prev) {
      this.log.info(prevProblem ? 'revocation list readable again' : 'revocation list loaded', { path: this.path, revoked: next.size });
    }
    const changed = !prev !== !next || (prev !== undefined && next !== undefined && prev.fingerprint !== next.fingerprint);
    if (changed) this.listeners.emit();
  }
}
