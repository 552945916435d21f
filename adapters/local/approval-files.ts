/**
 * Approvals on the embedded default: each request is one JSON file `<stateDir>/approvals/<id>.json`,
 * written by the gateway (create, expire, withdraw, use a grant) and by `warden approvals` (votes), which
 * run as separate processes. Every change is conditional on the state's revision (approval-store.ts).
 *
 * How the writes stay correct between processes:
 *  - create writes the whole file under a temporary name, fsyncs it, then hard-links it to its final
 *    name. link() fails with EEXIST atomically when the id exists, so a request is never replaced, and a
 *    reader never sees a half-written file. Rejected: opening the final name with `wx` and then writing
 *    (readers could see an empty or partial file and report it corrupt), and taking the lock first (an
 *    extra round trip that link already makes unnecessary).
 *  - replace takes the request's lock file `<id>.lock` (created with O_EXCL), reads the file again under
 *    it, compares the revision, writes the new state to a temporary file, fsyncs it and renames it over
 *    the old one (readers see the old or the new file, whole), then removes the lock. Rejected: a rename
 *    without a lock (two writers would both read revision r and both write r+1: a lost vote); flock (not
 *    in Node's standard library).
 *  - A lock whose process is dead (same host) or that is older than `staleLockMs` was left by a crash and
 *    is broken; see withFileLock for how breaking it cannot remove a live holder's lock by mistake.
 *
 * Files are read back strictly (zod): a file that does not hold a valid state is an
 * ApprovalFileCorruptError naming the file, never a crash. Ids are checked before they become file names.
 */
import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import {
  newApprovalState,
  type ApprovalId,
  type ApprovalRequest,
  type ApprovalState,
} from '../../core/approval/approval-request.ts';
import { expire, useGrant, withdraw } from '../../core/approval/approval-rules.ts';
import type { ApprovalService } from '../../core/approval/approval-service.ts';
import { ApprovalNotFoundError, transition, type ApprovalStore } from '../../core/approval/approval-store.ts';
import { canonicalJson } from '../../core/audit/hash-chain.ts';

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** A request file is small (one statement, a few votes); anything this big is not one of ours. */
const MAX_FILE_BYTES = 8 * 1024 * 1024;
const ID_RE = /^[A-Za-z0-9_-]{1,128}$/;
const FILE_RE = /^([A-Za-z0-9_-]{1,128})\.json$/;
const noop = (): void => {};

/** The approvals folder of a state folder. */
export function approvalsDir(stateDir: string): string {
  return join(stateDir, 'approvals');
}

// --- ids -------------------------------------------------------------------------------------

/** Crockford's base32: no i, l, o, u, so an id read aloud or retyped is not misread. */
const BASE32 = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A new request id: `apr-` and 10 base32 characters (50 random bits). Short enough to type into
 * `warden approvals approve`, too many to guess (and guessing one gives nothing: voting needs a
 * configured approver).
 */
export function newApprovalId(): ApprovalId {
  const bytes = randomBytes(7);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let out = '';
  for (let i = 0; i < 10; i++) out += BASE32[Number((bits >> BigInt(5 * i)) & 31n)];
  return `apr-${out}` as ApprovalId;
}

export class ApprovalIdInvalidError extends Error {
  constructor(readonly value: string) {
    super(`invalid approval id ${JSON.stringify(value)}: expected 1-128 characters of A-Z, a-z, 0-9, _ and -`);
    this.name = 'ApprovalIdInvalidError';
  }
}

export function isApprovalId(value: unknown): value is ApprovalId {
  return typeof value === 'string' && ID_RE.test(value);
}

/** The id as a file-name-safe ApprovalId, or ApprovalIdInvalidError (never a path outside the folder). */
export function asApprovalId(value: string): ApprovalId {
  if (!isApprovalId(value)) throw new ApprovalIdInvalidError(value);
  return value;
}

// --- errors ----------------------------------------------------------------------------------

export class ApprovalFileCorruptError extends Error {
  constructor(
    readonly file: string,
    problem: string,
    options?: { cause?: unknown },
  ) {
    super(`approval file ${file}: ${problem}`, options);
    this.name = 'ApprovalFileCorruptError';
  }
}

export class ApprovalAlreadyExistsError extends Error {
  constructor(readonly id: string) {
    super(`approval request ${id} exists already`);
    this.name = 'ApprovalAlreadyExistsError';
  }
}

export class ApprovalLockTimeoutError extends Error {
  constructor(readonly lockFile: string, waitedMs: number) {
    super(`lock ${lockFile} is still held after ${waitedMs} ms by a live process`);
    this.name = 'ApprovalLockTimeoutError';
  }
}

// --- the file format -------------------------------------------------------------------------

const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO-8601 time');
const approvalIdSchema = z
  .string()
  .regex(ID_RE, 'must be 1-128 characters of A-Z, a-z, 0-9, _ and -')
  .transform((s) => s as ApprovalId);

const StoredRequestSchema = z
  .object({
    id: approvalIdSchema,
    requester: z.object({ issuer: z.string().min(1), subject: z.string().min(1), groups: z.array(z.string()) }).strict(),
    target: z.object({ name: z.string().min(1), kind: z.literal('postgres'), environment: z.string() }).strict(),
    sessionId: z.string(),
    statement: z
      .object({
        text: z.string(),
        fingerprint: z.string(),
        digest: z.string(),
        command: z.string(),
        tables: z.array(z.string()),
        risks: z.array(z.string()),
      })
      .strict(),
    reason: z.string().optional(),
    policies: z.array(z.string()),
    policyReason: z.string().optional(),
    // At least one approval: a request that needs none would be approved by the first click.
    requirement: z.object({ approvers: z.array(z.string().min(1)).min(1), approvals: z.number().int().min(1) }).strict(),
    mode: z.enum(['wait', 'async']),
    createdAt: isoTime,
    expiresAt: isoTime,
  })
  .strict();

const StoredVoteSchema = z
  .object({
    approverId: z.string().min(1),
    choice: z.enum(['approve', 'deny']),
    reason: z.string().optional(),
    at: isoTime,
    channel: z.string().min(1),
  })
  .strict();

const StoredStateSchema = z
  .object({
    request: StoredRequestSchema,
    status: z.enum(['pending', 'approved', 'denied', 'expired', 'withdrawn']),
    votes: z.array(StoredVoteSchema),
    revision: z.number().int().min(0),
    decidedAt: isoTime.optional(),
    outcomeReason: z.string().optional(),
    executedAt: isoTime.optional(),
  })
  .strict();

type StoredState = z.output<typeof StoredStateSchema>;
// The schema must follow the core types: a field added there and not here fails the type check.
type SameKeys<A, B> = [Exclude<keyof A, keyof B> | Exclude<keyof B, keyof A>] extends [never] ? true : false;
const schemaFollowsCore: [SameKeys<StoredState, ApprovalState>, SameKeys<StoredState['request'], ApprovalRequest>] = [true, true];
void schemaFollowsCore;
const asState = (s: StoredState): ApprovalState => s;

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

// --- locks -----------------------------------------------------------------------------------

export interface FileLockOptions {
  /** A lock older than this was left by a crash (holding one takes a read and a small write). Default 5 s. */
  readonly staleMs?: number;
  /** Give up waiting for a live holder after this long. Default 15 s. */
  readonly timeoutMs?: number;
}

interface LockContent {
  pid: number;
  host: string;
  time: number;
  token: string;
}

function parseLock(text: string): LockContent | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockContent>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.time === 'number' && typeof v.token === 'string') return v as LockContent;
  } catch {
    // Empty (its holder is between open and write, or crashed there) or garbage: judged by its mtime.
  }
  return undefined;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/**
 * Runs `fn` while holding the lock file `lockPath` (created with O_EXCL, holding pid, host, time and a
 * random token), between processes. `stillHeld` re-reads the lock: call it right before the write the
 * lock protects, so a holder whose lock was broken as stale (it stalled for longer than staleMs) does
 * not write.
 *
 * A stale lock is moved aside under a unique name and deleted only if what was moved is the very file
 * judged stale (same inode and content); if a new holder's lock was moved instead, it is linked back.
 * Only a three-way race around a crashed holder's lock could still leave two holders, and `stillHeld`
 * narrows even that to the moment of the rename.
 */
export async function withFileLock<T>(lockPath: string, fn: (stillHeld: () => Promise<boolean>) => Promise<T>, options: FileLockOptions = {}): Promise<T> {
  const staleMs = options.staleMs ?? 5000;
  const timeoutMs = options.timeoutMs ?? 15_000;
  const token = randomBytes(12).toString('hex');
  const started = Date.now();
  for (let pause = 2; ; pause = Math.min(pause * 2, 40)) {
    try {
      const fh = await open(lockPath, 'wx', FILE_MODE);
      try {
        await fh.writeFile(JSON.stringify({ pid: process.pid, host: hostname(), time: Date.now(), token } satisfies LockContent));
      } catch (err) {
        await fh.close().catch(noop);
        await unlink(lockPath).catch(noop);
        throw err;
      }
      await fh.close();
      break;
    } catch (err) {
      if (errCode(err) !== 'EEXIST') throw err;
    }
    if (await breakIfStale(lockPath, staleMs)) continue;
    if (Date.now() - started > timeoutMs) throw new ApprovalLockTimeoutError(lockPath, Date.now() - started);
    await sleep(pause * (0.5 + Math.random()));
  }
  const stillHeld = async (): Promise<boolean> => parseLock(await readFile(lockPath, 'utf8').catch(() => ''))?.token === token;
  try {
    return await fn(stillHeld);
  } finally {
    if (await stillHeld()) await unlink(lockPath).catch(noop);
  }
}

/** True when the lock is gone (or was removed as stale): try to take it again at once. */
async function breakIfStale(lockPath: string, staleMs: number): Promise<boolean> {
  let text: string;
  let ino: number;
  let mtimeMs: number;
  try {
    ({ ino, mtimeMs } = await stat(lockPath));
    text = await readFile(lockPath, 'utf8');
  } catch (err) {
    if (errCode(err) === 'ENOENT') return true;
    throw err;
  }
  const info = parseLock(text);
  const dead = info !== undefined && info.host === hostname() && !processAlive(info.pid);
  if (!dead && Date.now() - (info?.time ?? mtimeMs) < staleMs) return false;
  const aside = `${lockPath}.stale-${randomBytes(6).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return true;
    throw err;
  }
  const moved = await stat(aside).then((s) => s.ino, () => -1);
  const movedText = await readFile(aside, 'utf8').catch(() => undefined);
  if (moved === ino && movedText === text) {
    await unlink(aside).catch(noop);
    return true;
  }
  // Someone broke the stale lock and took a new one between our read and our rename: give it back
  // (fails with EEXIST only if yet another process took the lock meanwhile).
  await link(aside, lockPath).catch(noop);
  await unlink(aside).catch(noop);
  return false;
}

// --- the store -------------------------------------------------------------------------------

export interface LocalApprovalStoreOptions {
  /** The approvals folder (approvalsDir(stateDir)); created 0700 on the first write. */
  readonly dir: string;
  readonly lock?: FileLockOptions;
  /** Told about files listPending skips because they cannot be read (the others are still listed). */
  readonly onProblem?: (problem: ApprovalFileProblem) => void;
}

export interface ApprovalFileProblem {
  readonly file: string;
  readonly error: string;
}

export interface ApprovalListing {
  /** Oldest first. */
  readonly states: ApprovalState[];
  /** Files that could not be read, each with what is wrong. */
  readonly problems: ApprovalFileProblem[];
}

export class LocalApprovalStore implements ApprovalStore {
  readonly dir: string;
  private readonly lockOptions: FileLockOptions;
  private readonly onProblem: ((problem: ApprovalFileProblem) => void) | undefined;
  private dirReady: Promise<void> | undefined;

  constructor(options: LocalApprovalStoreOptions) {
    this.dir = options.dir;
    this.lockOptions = options.lock ?? {};
    this.onProblem = options.onProblem;
  }

  /** The file of a request (after checking the id). */
  fileOf(id: string): string {
    return join(this.dir, `${asApprovalId(id)}.json`);
  }

  async create(state: ApprovalState): Promise<void> {
    const id = asApprovalId(state.request.id);
    const text = serialize(this.validated(state));
    await this.ensureDir();
    const tmp = await this.writeTemp(id, text);
    try {
      await link(tmp, this.fileOf(id));
    } catch (err) {
      if (errCode(err) === 'EEXIST') throw new ApprovalAlreadyExistsError(id);
      throw err;
    } finally {
      await unlink(tmp).catch(noop);
    }
    await this.syncDir();
  }

  async get(id: ApprovalId): Promise<ApprovalState | undefined> {
    return this.read(asApprovalId(id));
  }

  async replace(next: ApprovalState): Promise<boolean> {
    const id = asApprovalId(next.request.id);
    const text = serialize(this.validated(next));
    const file = this.fileOf(id);
    // No such request (nor, perhaps, a folder to hold its lock): nothing to replace.
    if ((await this.read(id)) === undefined) return false;
    return withFileLock(
      join(this.dir, `${id}.lock`),
      async (stillHeld) => {
        const current = await this.read(id);
        if (current === undefined || current.revision !== next.revision - 1) return false;
        // What is being approved never changes after creation; only its state does.
        if (canonicalJson(current.request) !== canonicalJson(next.request)) {
          throw new Error(`approval ${id}: a change may not alter the request itself`);
        }
        const tmp = await this.writeTemp(id, text);
        let renamed = false;
        try {
          if (!(await stillHeld())) return false; // broken as stale while we stalled: re-judge from the top
          await rename(tmp, file);
          renamed = true;
        } finally {
          if (!renamed) await unlink(tmp).catch(noop);
        }
        await this.syncDir();
        return true;
      },
      this.lockOptions,
    );
  }

  async listPending(): Promise<ApprovalState[]> {
    const { states, problems } = await this.list();
    problems.forEach((p) => this.onProblem?.(p));
    return states.filter((s) => s.status === 'pending');
  }

  /** Every request (any status), oldest first, and the files that could not be read. */
  async list(): Promise<ApprovalListing> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if (errCode(err) === 'ENOENT') return { states: [], problems: [] };
      throw err;
    }
    const states: ApprovalState[] = [];
    const problems: ApprovalFileProblem[] = [];
    for (const name of names.sort()) {
      const id = FILE_RE.exec(name)?.[1];
      if (id === undefined) continue; // locks, temporary files
      try {
        const s = await this.read(id as ApprovalId);
        if (s !== undefined) states.push(s);
      } catch (err) {
        problems.push({ file: join(this.dir, name), error: (err as Error).message });
      }
    }
    states.sort((a, b) => Date.parse(a.request.createdAt) - Date.parse(b.request.createdAt) || a.request.id.localeCompare(b.request.id));
    return { states, problems };
  }

  private async read(id: ApprovalId): Promise<ApprovalState | undefined> {
    const file = this.fileOf(id);
    let text: string;
    try {
      const fh = await open(file, 'r');
      try {
        const { size } = await fh.stat();
        if (size > MAX_FILE_BYTES) throw new ApprovalFileCorruptError(file, `${size} bytes, more than a request can hold (${MAX_FILE_BYTES})`);
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      if (errCode(err) === 'ENOENT') return undefined;
      if (err instanceof ApprovalFileCorruptError) throw err;
      throw new ApprovalFileCorruptError(file, `cannot be read: ${(err as Error).message}`, { cause: err });
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new ApprovalFileCorruptError(file, `not valid JSON (${(err as Error).message})`, { cause: err });
    }
    const r = StoredStateSchema.safeParse(doc);
    if (!r.success) throw new ApprovalFileCorruptError(file, `not an approval request: ${describeIssues(r.error)}`, { cause: r.error });
    if (r.data.request.id !== id) throw new ApprovalFileCorruptError(file, `holds request ${r.data.request.id}, not ${id}`);
    return asState(r.data);
  }

  /** What is written must read back: the same schema guards both ways. */
  private validated(state: ApprovalState): ApprovalState {
    const r = StoredStateSchema.safeParse(state);
    if (!r.success) throw new Error(`approval ${state.request.id}: not a valid state: ${describeIssues(r.error)}`);
    return state;
  }

  private ensureDir(): Promise<void> {
    this.dirReady ??= mkdir(this.dir, { recursive: true, mode: DIR_MODE }).then(noop, (err: unknown) => {
      this.dirReady = undefined;
      throw err;
    });
    return this.dirReady;
  }

  /** Writes and fsyncs a temporary file beside the final one (same file system, so rename and link work). */
  private async writeTemp(id: ApprovalId, text: string): Promise<string> {
    const tmp = join(this.dir, `.${id}.${randomBytes(6).toString('hex')}.tmp`);
    const fh = await open(tmp, 'wx', FILE_MODE);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(noop);
      await unlink(tmp).catch(noop);
      throw err;
    }
    await fh.close();
    return tmp;
  }

  /** Makes the new name durable (a rename or link lives in the folder). */
  private async syncDir(): Promise<void> {
    const fh = await open(this.dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

function serialize(state: ApprovalState): string {
  return JSON.stringify(state, null, 2) + '\n';
}

// --- the service -----------------------------------------------------------------------------

export interface LocalApprovalServiceOptions {
  readonly store: LocalApprovalStore;
  /** Async mode: how long after its approval a request may be used, once (approvals.grantTtlSeconds). */
  readonly grantTtlMs: number;
  /** How often outcome() reads the file besides watching the folder. Default 250 ms. */
  readonly pollIntervalMs?: number;
  /** Watch the folder (fs.watch) for a prompt outcome; polling alone when false. Default true. */
  readonly watch?: boolean;
  readonly now?: () => Date;
}

/** outcome() was aborted by its signal; the request itself is left as it is. */
export class ApprovalWaitAbortedError extends Error {
  readonly code = 'ABORT_ERR';
  constructor(id: string, options?: { cause?: unknown }) {
    super(`stopped waiting for approval ${id}`, options);
    // Named like every other abort in Node, so `err.name === 'AbortError'` checks see it.
    this.name = 'AbortError';
  }
}

/** Longest delay setTimeout takes (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class LocalApprovalService implements ApprovalService {
  private readonly store: LocalApprovalStore;
  private readonly grantTtlMs: number;
  private readonly pollIntervalMs: number;
  private readonly watchDir: boolean;
  private readonly now: () => Date;

  constructor(options: LocalApprovalServiceOptions) {
    this.store = options.store;
    this.grantTtlMs = options.grantTtlMs;
    this.pollIntervalMs = options.pollIntervalMs ?? 250;
    this.watchDir = options.watch ?? true;
    this.now = options.now ?? (() => new Date());
  }

  /** Locally the approvers are told by `warden approvals list`; nothing else to notify. */
  async submit(request: ApprovalRequest): Promise<void> {
    await this.store.create(newApprovalState(request));
  }

  get(id: ApprovalId): Promise<ApprovalState | undefined> {
    return this.store.get(id);
  }

  async withdraw(id: ApprovalId, why: string): Promise<void> {
    await transition(this.store, id, (s) => withdraw(s, this.now(), why));
  }

  /**
   * Resolves once the request is closed, by anyone: a vote written by `warden approvals` in another
   * process, or the expiry, which this applies itself (a conditional write) when the time comes, so a
   * request nobody decides closes as expired. The folder is watched for a prompt answer and polled in
   * case the watch misses an event (network file systems, inotify limits).
   */
  outcome(id: ApprovalId, signal?: AbortSignal): Promise<ApprovalState> {
    return new Promise<ApprovalState>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new ApprovalWaitAbortedError(id, { cause: signal.reason }));
        return;
      }
      const file = `${id}.json`;
      let done = false;
      let running = false;
      let again = false;
      let watcher: FSWatcher | undefined;
      let expiryTimer: NodeJS.Timeout | undefined;
      const poll = setInterval(() => void check(), this.pollIntervalMs);
      const cleanup = (): void => {
        clearInterval(poll);
        clearTimeout(expiryTimer);
        watcher?.close();
        watcher = undefined;
        signal?.removeEventListener('abort', onAbort);
      };
      const finish = (settle: () => void): void => {
        if (done) return;
        done = true;
        cleanup();
        settle();
      };
      const onAbort = (): void => finish(() => reject(new ApprovalWaitAbortedError(id, { cause: signal?.reason })));
      signal?.addEventListener('abort', onAbort, { once: true });

      // One read at a time; an event during a read asks for one more read after it.
      const check = async (): Promise<void> => {
        if (done) return;
        if (running) {
          again = true;
          return;
        }
        running = true;
        try {
          do {
            again = false;
            const closed = await this.closedOrExpired(id);
            if (closed.state !== undefined) {
              const s = closed.state;
              finish(() => resolve(s));
            } else if (expiryTimer === undefined && !done) {
              expiryTimer = setTimeout(() => void check(), Math.min(MAX_TIMER_MS, Math.max(0, closed.expiresInMs) + 5));
            }
          } while (again && !done);
        } catch (err) {
          finish(() => reject(err));
        } finally {
          running = false;
        }
      };

      if (this.watchDir) {
        try {
          watcher = watch(this.store.dir, (_event, name) => {
            if (name === null || name === file) void check();
          });
          // A watch that fails later (folder removed, inotify limits) leaves polling on its own.
          watcher.on('error', () => {
            watcher?.close();
            watcher = undefined;
          });
        } catch {
          watcher = undefined; // no folder yet, or no watch available: polling only
        }
      }
      void check();
    });
  }

  /** The closed state, after expiring the request if its time is up; else how long until it is. */
  private async closedOrExpired(id: ApprovalId): Promise<{ state?: ApprovalState; expiresInMs: number }> {
    const state = await this.store.get(id);
    if (state === undefined) throw new ApprovalNotFoundError(id);
    if (state.status !== 'pending') return { state, expiresInMs: 0 };
    const now = this.now();
    const expiresInMs = Date.parse(state.request.expiresAt) - now.getTime();
    if (expiresInMs > 0) return { expiresInMs };
    const next = await transition(this.store, id, (s) => expire(s, now));
    return next !== undefined && next.status !== 'pending' ? { state: next, expiresInMs: 0 } : { expiresInMs: 0 };
  }

  /**
   * Finds this requester's approved, unused async request for exactly this statement on this target and
   * marks it used. The conditional write makes it single use between processes: of two racing callers,
   * the second re-reads the request, finds it used, and gets nothing. Wait-mode requests are never
   * grants: their statement ran when they were approved.
   */
  async useGrant(requester: { issuer: string; subject: string }, target: string, digest: string): Promise<ApprovalState | undefined> {
    const matches = (s: ApprovalState): boolean =>
      s.request.mode === 'async' &&
      s.request.requester.issuer === requester.issuer &&
      s.request.requester.subject === requester.subject &&
      s.request.target.name === target &&
      s.request.statement.digest === digest;
    const { states } = await this.store.list();
    // Oldest approval first: it is the one closest to running out.
    const candidates = states
      .filter((s) => s.status === 'approved' && s.executedAt === undefined && matches(s))
      .sort((a, b) => Date.parse(a.decidedAt ?? '') - Date.parse(b.decidedAt ?? ''));
    for (const c of candidates) {
      const used = await transition(this.store, c.request.id, (s) => (matches(s) ? useGrant(s, this.now(), this.grantTtlMs) : undefined));
      if (used !== undefined) return used;
    }
    return undefined;
  }
}
