/**
 * The local forensic vault's key: 32 random bytes in `<stateDir>/vault.key` (0600), created on first use,
 * and read back (raw or hex) by an operator who keeps it elsewhere. Every record's data key is wrapped
 * under it; records carry its id (the first 8 bytes of its SHA-256) so a wrong key is named as such.
 */
import { createHash, createSecretKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { chmod, link, mkdir, open as fsOpen, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { VaultKeyError } from '../../core/masking/forensic-vault.ts';
import { syncDir } from './audit-journal.ts';

export const VAULT_KEY_BYTES = 32;
export const KEY_ID_BYTES = 8;
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const noop = (): void => {};

export interface VaultKey {
  /** The 32-byte AES key, as a KeyObject so it does not end up in logs or JSON by accident. */
  readonly secret: KeyObject;
  /** Hex of the first 8 bytes of SHA-256(key): stored in every record. */
  readonly keyId: string;
  readonly path: string;
}

export function vaultKeyPath(stateDir: string): string {
  return join(stateDir, 'vault.key');
}

/** Folder of the records: `<stateDir>/vault`. */
export function vaultDir(stateDir: string): string {
  return join(stateDir, 'vault');
}

export function vaultKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest().subarray(0, KEY_ID_BYTES).toString('hex');
}

/**
 * Reads a vault key file: 32 raw bytes (as Warden writes it) or 64 hex characters (as an operator may
 * keep it elsewhere). Refuses a file other users can read: it opens every record.
 */
export async function loadVaultKey(path: string): Promise<VaultKey> {
  let fh: FileHandle;
  try {
    fh = await fsOpen(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new VaultKeyError(code === 'ENOENT' ? `no vault key at ${path}` : `cannot read the vault key ${path}: ${(err as Error).message}`, { cause: err });
  }
  let raw: Buffer;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new VaultKeyError(`the vault key ${path} is not a regular file`);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new VaultKeyError(`the vault key ${path} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    if (st.size > 1024) throw new VaultKeyError(`the vault key ${path} is not a vault key (${st.size} bytes)`);
    raw = await fh.readFile();
  } catch (err) {
    if (err instanceof VaultKeyError) throw err;
    throw new VaultKeyError(`cannot read the vault key ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fh.close().catch(noop);
  }
  let key: Buffer;
  if (raw.length === VAULT_KEY_BYTES) key = raw;
  else {
    const text = raw.toString('latin1').trim();
    if (!/^[0-9a-fA-F]{64}$/.test(text)) {
      throw new VaultKeyError(`the vault key ${path} is not a vault key: expected 32 bytes or 64 hex characters`);
    }
    key = Buffer.from(text, 'hex');
  }
  const keyId = vaultKeyId(key);
  const secret = createSecretKey(key);
  key.fill(0);
  raw.fill(0);
  return { secret, keyId, path };
}

/** `<stateDir>/vault.key`, created (32 random bytes, 0600) on first use; a wider mode is tightened to 0600. */
export async function loadOrCreateVaultKey(stateDir: string): Promise<VaultKey> {
  const path = vaultKeyPath(stateDir);
  await mkdir(stateDir, { recursive: true, mode: DIR_MODE });
  try {
    await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new VaultKeyError(`cannot read the vault key ${path}: ${(err as Error).message}`, { cause: err });
    // Temp file + link(): atomic, and never clobbers a key another process has just created.
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await fsOpen(tmp, 'wx', FILE_MODE);
      try {
        const key = randomBytes(VAULT_KEY_BYTES);
        await fh.writeFile(key);
        key.fill(0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, path).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      await syncDir(stateDir);
    } catch (e) {
      throw new VaultKeyError(`cannot create the vault key ${path}: ${(e as Error).message}`, { cause: e });
    } finally {
      await unlink(tmp).catch(noop);
    }
  }
  // Warden's own key file: tighten a loosened mode (like the audit signing key) rather than refuse.
  await chmod(path, FILE_MODE).catch(noop);
  return loadVaultKey(path);
}

