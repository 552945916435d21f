/**
 * Who signs a session's seal: an AWS KMS asymmetric key on AWS, the local Ed25519 key elsewhere.
 *
 * Both sign the same bytes, core's `sealPayload(sessionId, eventCount, lastHash)`. The KMS key is
 * ECC_NIST_P256 with ECDSA_SHA_256 and MessageType RAW: KMS hashes the payload itself (it is far below
 * the 4096-byte RAW limit) and returns a DER-encoded signature, which node:crypto verifies with the
 * key's public half (GetPublicKey) and SHA-256. The private half never leaves KMS; verifying needs no
 * call to KMS once the public key is fetched.
 *
 * core's verifyChain passes no digest to crypto.verify; for an EC key that means SHA-256 (OpenSSL's
 * default), so the KMS public key works there too. verifySeal names the digest explicitly.
 *
 * @see https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html
 * @see https://docs.aws.amazon.com/kms/latest/developerguide/asymmetric-key-specs.html#key-spec-ecc
 */
import { createPublicKey, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { GetPublicKeyCommand, SignCommand } from '@aws-sdk/client-kms';
import type { GetPublicKeyCommandOutput, SignCommandOutput } from '@aws-sdk/client-kms';
import { sealPayload } from '../../core/audit/hash-chain.ts';

export interface AuditSealSigner {
  /** Recorded in the seal (`keyId`); names the key a verifier needs. */
  readonly keyId: string;
  /** Signs core's sealPayload. */
  sign(payload: Buffer): Promise<Buffer>;
}

export class AuditSealError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditSealError';
  }
}

export const KMS_SEAL_KEY_SPEC = 'ECC_NIST_P256';
export const KMS_SEAL_SIGNING_ALGORITHM = 'ECDSA_SHA_256';
const DEFAULT_KMS_TIMEOUT_MS = 5000;

/** The part of KMSClient the signer uses (a test fakes exactly this, as no KMS emulator exists). */
export interface KmsSealClient {
  send(command: SignCommand, options?: { abortSignal?: AbortSignal }): Promise<SignCommandOutput>;
  send(command: GetPublicKeyCommand, options?: { abortSignal?: AbortSignal }): Promise<GetPublicKeyCommandOutput>;
}

/** The local Ed25519 key (adapters/local/audit-signing-key.ts), for the embedded setup and tests. */
export class Ed25519AuditSealSigner implements AuditSealSigner {
  readonly keyId: string;
  private readonly privateKey: KeyObject;

  constructor(key: { privateKey: KeyObject; keyId: string }) {
    if (key.privateKey.type !== 'private' || key.privateKey.asymmetricKeyType !== 'ed25519') {
      throw new AuditSealError('the seal key must be an Ed25519 private key');
    }
    this.privateKey = key.privateKey;
    this.keyId = key.keyId;
  }

  async sign(payload: Buffer): Promise<Buffer> {
    return cryptoSign(null, payload, this.privateKey);
  }
}

export class KmsAuditSealSigner implements AuditSealSigner {
  /**
   * Checks the key (spec, usage, algorithm) once and takes its ARN from KMS as the key id, so seals
   * name the key even when `keyId` is an alias.
   */
  static async create(kms: KmsSealClient, keyId: string, opts: { timeoutMs?: number } = {}): Promise<KmsAuditSealSigner> {
    const { keyArn } = await fetchSealPublicKey(kms, keyId, opts.timeoutMs);
    return new KmsAuditSealSigner(kms, keyArn, opts);
  }

  private readonly timeoutMs: number;

  /** Prefer `create`; this skips the key check and records `keyId` as given. */
  constructor(
    private readonly kms: KmsSealClient,
    readonly keyId: string,
    opts: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS;
  }

  async sign(payload: Buffer): Promise<Buffer> {
    let out: SignCommandOutput;
    try {
      out = await this.kms.send(
        new SignCommand({ KeyId: this.keyId, Message: payload, MessageType: 'RAW', SigningAlgorithm: KMS_SEAL_SIGNING_ALGORITHM }),
        { abortSignal: AbortSignal.timeout(this.timeoutMs) },
      );
    } catch (err) {
      throw new AuditSealError(`KMS Sign with ${this.keyId} failed: ${(err as Error).message}`, { cause: err });
    }
    if (!out.Signature || out.Signature.length === 0) throw new AuditSealError(`KMS Sign with ${this.keyId} returned no signature`);
    return Buffer.from(out.Signature);
  }
}

/** The public key of a KMS seal key, checked to be the kind the signer uses. */
export async function loadKmsSealPublicKey(kms: KmsSealClient, keyId: string, timeoutMs?: number): Promise<KeyObject> {
  return (await fetchSealPublicKey(kms, keyId, timeoutMs)).publicKey;
}

async function fetchSealPublicKey(kms: KmsSealClient, keyId: string, timeoutMs = DEFAULT_KMS_TIMEOUT_MS): Promise<{ publicKey: KeyObject; keyArn: string }> {
  let out: GetPublicKeyCommandOutput;
  try {
    out = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }), { abortSignal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new AuditSealError(`KMS GetPublicKey for ${keyId} failed: ${(err as Error).message}`, { cause: err });
  }
  if (out.KeySpec !== KMS_SEAL_KEY_SPEC) throw new AuditSealError(`KMS key ${keyId} is ${out.KeySpec ?? 'of unknown spec'}, expected ${KMS_SEAL_KEY_SPEC}`);
  if (out.KeyUsage !== 'SIGN_VERIFY') throw new AuditSealError(`KMS key ${keyId} has usage ${out.KeyUsage ?? 'unknown'}, expected SIGN_VERIFY`);
  if (!out.SigningAlgorithms?.includes(KMS_SEAL_SIGNING_ALGORITHM)) throw new AuditSealError(`KMS key ${keyId} cannot sign with ${KMS_SEAL_SIGNING_ALGORITHM}`);
  if (!out.PublicKey) throw new AuditSealError(`KMS GetPublicKey for ${keyId} returned no key`);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(out.PublicKey), format: 'der', type: 'spki' });
  } catch (err) {
    throw new AuditSealError(`KMS key ${keyId}: unreadable public key`, { cause: err });
  }
  return { publicKey, keyArn: out.KeyId ?? keyId };
}

/** What a seal binds (the seal event's fields, or a recording's seal.json). */
export interface SealToVerify {
  sessionId: string;
  eventCount: number;
  lastHash: string;
  /** base64 */
  signature: string;
}

/**
 * Verifies a seal's signature with the signer's public key: ECDSA P-256 / SHA-256 (DER) for a KMS key,
 * Ed25519 for the local one. Any other key type, or a malformed signature, is a failure, not an error.
 */
export function verifySeal(seal: SealToVerify, publicKey: KeyObject): boolean {
  const digest = publicKey.asymmetricKeyType === 'ec' ? 'sha256' : publicKey.asymmetricKeyType === 'ed25519' ? null : undefined;
  if (digest === undefined) return false;
  try {
    return cryptoVerify(digest, sealPayload(seal.sessionId, seal.eventCount, seal.lastHash), publicKey, Buffer.from(seal.signature, 'base64'));
  } catch {
    return false;
  }
}
