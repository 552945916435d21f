/**
 * Masking of one target, shared by its sessions: the policy from the configuration, the traced column
 * rules (a catalog connection of its own, with the target credential) and the keyed-hash key.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import pg from 'pg';
import type { PostgresTarget } from '../../../../core/config/schema.ts';
import { MaskingConfinement } from '../../../../core/masking/confinement.ts';
import { maskingPolicyOf } from '../../../../core/masking/masking-policy.ts';
import type { MaskingPolicy } from '../../../../core/masking/vocabulary.ts';
import type { SecretStore } from '../../../../core/secrets/secret-store.ts';
import { MaskingCatalog } from './masking-catalog.ts';

export interface TargetMasking {
  readonly policy: MaskingPolicy;
  readonly catalog: MaskingCatalog;
  /** The keyed-hash strategy's key for this target (equal values give equal pseudonyms within the target). */
  readonly hashKey: Uint8Array;
  /** Strict masking's check of each statement; undefined when `masking.strict` is off. */
  readonly confinement: MaskingConfinement | undefined;
  close(): Promise<void>;
}

/** Column rules are traced again when older than this (and after any DDL through Warden). */
export const CATALOG_MAX_AGE_MS = 60_000;

/** A target's keyed-hash key from the local masking key (`.warden/masking.key`). */
export function localHashKey(maskingKey: Uint8Array, targetName: string): Uint8Array {
  return createHmac('sha256', maskingKey).update(`warden-masking:${targetName}`).digest();
}

/** `hashKey`: the target's keyed-hash key (localHashKey, or a KMS HMAC key's MAC of the same message on AWS). */
export function createTargetMasking(target: PostgresTarget, secrets: SecretStore, hashKey: Uint8Array, ca: Buffer | undefined): TargetMasking {
  if (!target.masking) throw new Error(`target ${target.name} has no masking configuration`);
  const policy = maskingPolicyOf(target.masking);
  let client: pg.Client | undefined;
  let connecting: Promise<pg.Client> | undefined;
  const connect = async (): Promise<pg.Client> => {
    const credential = await secrets.getCredential(target.credential);
    const c = new pg.Client({
      host: target.host,
      port: target.port,
      database: target.database ?? target.name,
      user: credential.username,
      password: credential.password,
      application_name: 'warden-masking-catalog',
      connectionTimeoutMillis: 10_000,
      ...(target.tls.mode === 'disable'
        ? {}
        : { ssl: target.tls.mode === 'require' ? { rejectUnauthorized: false } : { rejectUnauthorized: true, ...(ca ? { ca } : {}), ...(target.tls.serverName ? { servername: target.tls.serverName } : {}) } }),
    });
    c.on('error', () => {
      if (client === c) client = undefined; // reconnect on next use
    });
    await c.connect();
    client = c;
    return c;
  };
  const catalog = new MaskingCatalog(policy.columns, async (sql, params) => {
    const c = client ?? (await (connecting ??= connect().finally(() => (connecting = undefined))));
    return c.query(sql, params);
  });
  return {
    policy,
    catalog,
    hashKey,
    confinement: target.masking.strict ? new MaskingConfinement(policy.columns) : undefined,
    close: async () => {
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}

/** The local masking key (32 random bytes, created once, 0600): per-target hash keys derive from it. */
export function loadOrCreateMaskingKey(path: string): Buffer {
  if (existsSync(path)) {
    const key = readFileSync(path);
    if (key.length !== 32) throw new Error(`${path}: a masking key is 32 bytes, found ${key.length}`);
    return key;
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  writeFileSync(path, key, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
  return key;
}
