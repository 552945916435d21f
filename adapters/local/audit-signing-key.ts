/**
 * The Ed25519 key that signs audit seals: created once under `${stateDir}/audit/` (private key 0600,
 * public key alongside for `warden audit verify`), and the loader of a public key for verification.
 */
import { mkdir, open as fsOpen, readFile, link, unlink, writeFile, chmod } from 'node:fs/promises';
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { syncDir } from './audit-journal.ts';
import { DIR_MODE, FILE_MODE } from './audit-layout.ts';

const noop = (): void => {};

export class AuditKeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditKeyError';
  }
}

export interface AuditSigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  keyId: string;
}

export function auditKeyPaths(stateDir: string): { privateKeyPath: string; publicKeyPath: string } {
  return {
    privateKeyPath: join(stateDir, 'audit', 'audit-signing-key.pem'),
    publicKeyPath: join(stateDir, 'audit', 'audit-signing-key.pub.pem'),
  };
}

/** 'ed25519:' + first 16 hex chars of sha256 over the SPKI DER public key. */
export function auditKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return `ed25519:${createHash('sha256').update(der).digest('hex').slice(0, 16)}`;
}

/**
 * Loads the seal signing key from `${stateDir}/audit/audit-signing-key.pem` (0600), creating an
 * Ed25519 key pair on first use; the public key is kept alongside (audit-signing-key.pub.pem)
 * for `warden audit verify`.
 */
export async function loadOrCreateAuditSigningKey(stateDir: string): Promise<AuditSigningKey> {
  const { privateKeyPath, publicKeyPath } = auditKeyPaths(stateDir);
  await mkdir(join(stateDir, 'audit'), { recursive: true, mode: DIR_MODE });
  let pem: string;
  try {
    pem = await readFile(privateKeyPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditKeyError(`cannot read ${privateKeyPath}: ${(err as Error).message}`, { cause: err });
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    const fresh = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    // Write a temp file, then link(): atomic and never clobbers a key another process just made.
    const tmp = `${privateKeyPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await fsOpen(tmp, 'wx', FILE_MODE);
      try {
        await fh.writeFile(fresh);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, privateKeyPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      await syncDir(join(stateDir, 'audit'));
    } catch (e) {
      throw new AuditKeyError(`cannot create ${privateKeyPath}: ${(e as Error).message}`, { cause: e });
    } finally {
      await unlink(tmp).catch(noop);
    }
    pem = await readFile(privateKeyPath, 'utf8');
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new AuditKeyError(`${privateKeyPath} is not a valid private key`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${privateKeyPath} is not an Ed25519 key`);
  const publicKey = createPublicKey(privateKey);
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' }) as string;
  let existing: string | null = null;
  try {
    existing = await readFile(publicKeyPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new AuditKeyError(`cannot read ${publicKeyPath}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (existing === null) {
    await writeFile(publicKeyPath, publicPem, { mode: 0o644 });
  } else if (existing.trim() !== publicPem.trim()) {
    // Verification uses this file; a silent overwrite would hide a swapped key.
    throw new AuditKeyError(`${publicKeyPath} does not match ${privateKeyPath}; move one of them away`);
  }
  await chmod(privateKeyPath, FILE_MODE).catch(noop);
  return { privateKey, publicKey, keyId: auditKeyId(publicKey) };
}

/** Reads a PEM public key (e.g. auditKeyPaths(stateDir).publicKeyPath); null if the file is missing. */
export async function loadAuditPublicKey(path: string): Promise<{ publicKey: KeyObject; keyId: string } | null> {
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AuditKeyError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(pem);
  } catch (err) {
    throw new AuditKeyError(`${path} is not a valid public key`, { cause: err });
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new AuditKeyError(`${path} is not an Ed25519 public key`);
  return { publicKey, keyId: auditKeyId(publicKey) };
}
