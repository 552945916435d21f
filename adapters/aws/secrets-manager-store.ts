/**
 * SecretsManagerStore: target credentials from AWS Secrets Manager, a JSON SecretString
 * `{ "username": "...", "password": "..." }` (the format of Secrets Manager's database rotation functions;
 * their other keys, `engine`, `host`, `port`, `dbname`, are ignored).
 *
 * Cached per secret name for `ttlMs` (default 5 minutes), so a login does not pay a Secrets Manager call
 * and a burst of logins does not hit its request quota: concurrent reads of one name share one request.
 *
 * Rotation: Secrets Manager rotates in four steps (createSecret stores the new password as AWSPENDING,
 * setSecret changes it in the database, testSecret, finishSecret moves AWSCURRENT to it). Between setSecret
 * and finishSecret the database already wants the AWSPENDING password while AWSCURRENT still holds the old
 * one. So when the target refuses a credential the caller calls `invalidate(name)`, and the next read
 * fetches AWSCURRENT again; if that is still the version the target refused, it fetches AWSPENDING and uses
 * that (cached briefly, `pendingTtlMs`, so the store goes back to AWSCURRENT once the rotation finishes).
 *
 * When a refresh fails (throttling, a network problem), a credential already cached is used for up to
 * `maxStaleMs` more (default 1 hour), with a warning: the target decides whether it is still good, and an
 * outage of Secrets Manager does not become an outage of every target. A secret that no longer exists is
 * not served stale.
 *
 * Values never leave this file except as the returned credential: not in errors, not in logs.
 *
 * @see https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_how.html
 * @see https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html
 */
import { GetSecretValueCommand, ResourceNotFoundException, type GetSecretValueCommandOutput, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SecretInvalidError, SecretNotFoundError, toTargetCredential, type SecretStore, type TargetCredential } from '../../core/secrets/secret-store.ts';

export const DEFAULT_SECRET_TTL_MS = 5 * 60_000;
const DEFAULT_PENDING_TTL_MS = 30_000;
const DEFAULT_MAX_STALE_MS = 60 * 60_000;
/** After a failed refresh, a stale credential is served this long before the next attempt. */
const DEFAULT_RETRY_AFTER_MS = 10_000;
const STAGE_CURRENT = 'AWSCURRENT';
const STAGE_PENDING = 'AWSPENDING';

export interface SecretsManagerStoreLogger {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface SecretsManagerStoreOptions {
  readonly client: SecretsManagerClient;
  /** How long a credential read with AWSCURRENT is used before it is read again. Default 5 minutes. */
  readonly ttlMs?: number;
  /** How long a credential read with AWSPENDING (during a rotation) is used. Default 30 s. */
  readonly pendingTtlMs?: number;
  /** How long past its TTL a cached credential is still used while Secrets Manager cannot be read. Default 1 hour. */
  readonly maxStaleMs?: number;
  /** Pause between refresh attempts while a stale credential is served. Default 10 s. */
  readonly retryAfterMs?: number;
  readonly log?: SecretsManagerStoreLogger;
  /** Clock, for tests. */
  readonly now?: () => number;
}

/** Secrets Manager could not be read (and no usable cached credential exists). */
export class SecretStoreUnavailableError extends Error {
  constructor(
    readonly secretName: string,
    options?: { cause?: unknown },
  ) {
    const cause = options?.cause;
    const what = cause instanceof Error ? cause.name : 'unknown error';
    super(`cannot read credential '${secretName}' from Secrets Manager (${what})`, options);
    this.name = 'SecretStoreUnavailableError';
  }
}

interface Entry {
  credential: TargetCredential;
  versionId: string | undefined;
  stage: typeof STAGE_CURRENT | typeof STAGE_PENDING;
  /** Time the entry is read again (its TTL, or the retry pause after a failed refresh). */
  refreshAt: number;
  /** Time past which it is never served (TTL + maxStale). */
  staleUntil: number;
}

export class SecretsManagerStore implements SecretStore {
  private readonly client: SecretsManagerClient;
  private readonly ttlMs: number;
  private readonly pendingTtlMs: number;
  private readonly maxStaleMs: number;
  private readonly retryAfterMs: number;
  private readonly log: SecretsManagerStoreLogger | undefined;
  private readonly now: () => number;
  private readonly cache = new Map<string, Entry>();
  /** The version a target refused, per name, until a read replaces it. */
  private readonly refused = new Map<string, string | undefined>();
  private readonly inflight = new Map<string, Promise<TargetCredential>>();

  constructor(options: SecretsManagerStoreOptions) {
    this.client = options.client;
    this.ttlMs = options.ttlMs ?? DEFAULT_SECRET_TTL_MS;
    this.pendingTtlMs = Math.min(options.pendingTtlMs ?? DEFAULT_PENDING_TTL_MS, this.ttlMs);
    this.maxStaleMs = options.maxStaleMs ?? DEFAULT_MAX_STALE_MS;
    this.retryAfterMs = options.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  async getCredential(name: string): Promise<TargetCredential> {
    const cached = this.cache.get(name);
    if (cached && this.now() < cached.refreshAt) return cached.credential;
    let pending = this.inflight.get(name);
    if (!pending) {
      pending = this.load(name).finally(() => this.inflight.delete(name));
      this.inflight.set(name, pending);
    }
    return pending;
  }

  /**
   * Forgets the cached credential of `name` after the target refused it: the next read goes to Secrets
   * Manager, and falls back to the AWSPENDING version when AWSCURRENT is still the refused one.
   */
  invalidate(name: string): void {
    const cached = this.cache.get(name);
    this.refused.set(name, cached?.versionId);
    this.cache.delete(name);
  }

  private async load(name: string): Promise<TargetCredential> {
    const previous = this.cache.get(name);
    let current: Fetched;
    try {
      current = await this.fetch(name, STAGE_CURRENT);
    } catch (err) {
      if (err instanceof SecretNotFoundError || err instanceof SecretInvalidError) {
        this.cache.delete(name);
        throw err;
      }
      if (previous && this.now() < previous.staleUntil) {
        // Serve what we have; try again after a pause rather than at every login.
        previous.refreshAt = this.now() + this.retryAfterMs;
        this.log?.warn('secrets: Secrets Manager cannot be read; using the cached credential', { secret: name, error: errorName(err), staleForMs: this.now() - (previous.staleUntil - this.maxStaleMs) });
        return previous.credential;
      }
      throw new SecretStoreUnavailableError(name, { cause: err });
    }

    if (this.refused.has(name) && this.refused.get(name) === current.versionId) {
      // AWSCURRENT is the version the target refused: a rotation may be between setSecret and finishSecret.
      let pending: Fetched | undefined;
      try {
        pending = await this.fetch(name, STAGE_PENDING);
      } catch (err) {
        if (!(err instanceof SecretNotFoundError)) this.log?.warn('secrets: the AWSPENDING version cannot be read', { secret: name, error: errorName(err) });
      }
      if (pending && pending.versionId !== current.versionId) {
        this.refused.delete(name);
        return this.keep(name, pending, STAGE_PENDING);
      }
    }
    this.refused.delete(name);
    return this.keep(name, current, STAGE_CURRENT);
  }

  private keep(name: string, f: Fetched, stage: Entry['stage']): TargetCredential {
    const ttl = stage === STAGE_PENDING ? this.pendingTtlMs : this.ttlMs;
    const at = this.now();
    this.cache.set(name, { credential: f.credential, versionId: f.versionId, stage, refreshAt: at + ttl, staleUntil: at + ttl + this.maxStaleMs });
    return f.credential;
  }

  private async fetch(name: string, stage: string): Promise<Fetched> {
    let out: GetSecretValueCommandOutput;
    try {
      out = await this.client.send(new GetSecretValueCommand({ SecretId: name, VersionStage: stage }));
    } catch (err) {
      if (err instanceof ResourceNotFoundException || (err as Error).name === 'ResourceNotFoundException') throw new SecretNotFoundError(stage === STAGE_CURRENT ? name : `${name} (${stage})`);
      throw err;
    }
    if (typeof out.SecretString !== 'string') throw new SecretInvalidError(name, 'expected a JSON SecretString (the secret holds binary data or nothing)');
    let parsed: unknown;
    try {
      parsed = JSON.parse(out.SecretString);
    } catch {
      // The parser's message can quote the value: say only what is wrong.
      throw new SecretInvalidError(name, 'the SecretString is not valid JSON');
    }
    return { credential: toTargetCredential(name, parsed), versionId: out.VersionId };
  }
}

interface Fetched {
  credential: TargetCredential;
  versionId: string | undefined;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}
