/**
 * A fake KMS behind the real SDK client; see fake-aws-json.ts for why a fake and where it sits. There is
 * no local KMS emulator here. It holds symmetric keys (GenerateDataKey, Decrypt) and ECC_NIST_P256
 * signing keys (Sign, GetPublicKey), and answers in process (`client`) or over HTTP (`listen`).
 *
 * What it keeps of KMS: data keys are wrapped (AES-256-GCM) under a key that never leaves the fake; the
 * encryption context is bound to the wrapped key, so Decrypt with a different context fails with
 * InvalidCiphertextException, as does an altered blob; Decrypt with a KeyId other than the blob's is
 * IncorrectKeyException; a signing key signs a RAW message of at most 4096 bytes with ECDSA_SHA_256 (SHA-256,
 * DER-encoded signature) and its private half never leaves the fake; a key used for the other kind of
 * operation is InvalidKeyUsageException; and each caller (the access key id its client signs with,
 * standing for an IAM role) may use only the operations it is granted, else AccessDeniedException.
 *
 * @see https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html
 * @see https://docs.aws.amazon.com/kms/latest/APIReference/API_GetPublicKey.html
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, generateKeyPairSync, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { KMSClient } from '@aws-sdk/client-kms';
import { AwsFault, awsJsonRequestHandler, serveAwsJson, type AwsJsonServer } from './fake-aws-json.ts';

export type KmsOperation = 'GenerateDataKey' | 'Decrypt' | 'Sign' | 'GetPublicKey' | 'GenerateMac';

export interface KmsCall {
  operation: string;
  caller: string | undefined;
  keyId: string | undefined;
  encryptionContext: Record<string, string> | undefined;
}

const BLOB_MAGIC = Buffer.from('FKMS');
/** Sign's limit for MessageType RAW. */
const MAX_RAW_MESSAGE_BYTES = 4096;

interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export class FakeKms {
  readonly keyArn: string;
  readonly calls: KmsCall[] = [];
  private readonly keys = new Map<string, Buffer>();
  private readonly signingKeys = new Map<string, SigningKey>();
  private readonly grants = new Map<string, Set<KmsOperation>>();
  private readonly macKeys = new Map<string, Buffer>();

  constructor(keyArn = 'arn:aws:kms:us-east-1:111122223333:key/0f2b7c1e-vault-key') {
    this.keyArn = keyArn;
    this.addKey(keyArn);
  }

  addKey(arn: string): void {
    this.keys.set(arn, randomBytes(32));
  }

  /** An asymmetric ECC_NIST_P256 key with usage SIGN_VERIFY (the audit seal's key). */
  addSigningKey(arn: string): void {
    this.signingKeys.set(arn, generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  }

  /** An HMAC_256 key with usage GENERATE_VERIFY_MAC (the masking key). */
  addMacKey(arn: string): void {
    this.macKeys.set(arn, randomBytes(32));
  }

  /** What GenerateMac answers for `message` with the HMAC key `arn` (to check what a caller derived). */
  mac(arn: string, message: Buffer): Buffer {
    const key = this.macKeys.get(arn);
    if (!key) throw new Error(`no HMAC key ${arn}`);
    return createHmac('sha256', key).update(message).digest();
  }

  private generateMac(input: Record<string, unknown>): unknown {
    const key = typeof input.KeyId === 'string' ? this.macKeys.get(input.KeyId) : undefined;
    if (!key) throw new AwsFault('NotFoundException', `Key '${String(input.KeyId)}' does not exist`);
    if (input.MacAlgorithm !== 'HMAC_SHA_256') throw new AwsFault('InvalidKeyUsageException', `${String(input.MacAlgorithm)} is not valid for ${String(input.KeyId)}`);
    const message = Buffer.from(String(input.Message ?? ''), 'base64');
    return { KeyId: input.KeyId, MacAlgorithm: 'HMAC_SHA_256', Mac: createHmac('sha256', key).update(message).digest().toString('base64') };
  }

  /** Lets `role` (an access key id) call exactly `operations`, on every key of this fake. */
  grant(role: string, operations: KmsOperation[]): void {
    this.grants.set(role, new Set(operations));
  }

  /** A client that signs as `role`, which may call `operations` (on every key of this fake). */
  client(role: string, operations: KmsOperation[]): KMSClient {
    this.grant(role, operations);
    return new KMSClient({
      region: 'us-east-1',
      credentials: { accessKeyId: role, secretAccessKey: 'test-secret' },
      maxAttempts: 1,
      requestHandler: awsJsonRequestHandler((call) => this.operate(call.operation, call.input, call.accessKeyId)) as never,
    });
  }

  /** This fake over HTTP on 127.0.0.1 (callers need a `grant`). */
  listen(): Promise<AwsJsonServer> {
    return serveAwsJson((call) => this.operate(call.operation, call.input, call.accessKeyId));
  }

  private operate(operation: string, input: Record<string, unknown>, caller: string | undefined): unknown {
    const context = input.EncryptionContext as Record<string, string> | undefined;
    this.calls.push({ operation, caller, keyId: typeof input.KeyId === 'string' ? input.KeyId : undefined, encryptionContext: context });
    if (operation !== 'GenerateDataKey' && operation !== 'Decrypt' && operation !== 'Sign' && operation !== 'GetPublicKey' && operation !== 'GenerateMac') {
      throw new AwsFault('UnsupportedOperationException', `${operation} is not faked`);
    }
    if (!caller || !this.grants.get(caller)?.has(operation)) {
      throw new AwsFault(
        'AccessDeniedException',
        `User: arn:aws:sts::111122223333:assumed-role/${caller}/session is not authorized to perform: kms:${operation} on this resource because no identity-based policy allows the kms:${operation} action`,
      );
    }
    switch (operation) {
      case 'GenerateDataKey':
        return this.generateDataKey(input, context);
      case 'Decrypt':
        return this.decrypt(input, context);
      case 'Sign':
        return this.sign(input);
      case 'GetPublicKey':
        return this.getPublicKey(input);
      case 'GenerateMac':
        return this.generateMac(input);
    }
  }

  private resolve(keyId: unknown): string {
    if (typeof keyId === 'string' && this.signingKeys.has(keyId)) {
      throw new AwsFault('InvalidKeyUsageException', `${keyId} key usage is SIGN_VERIFY which is not valid for this operation.`);
    }
    if (typeof keyId !== 'string' || !this.keys.has(keyId)) throw new AwsFault('NotFoundException', `Key '${String(keyId)}' does not exist`);
    return keyId;
  }

  private resolveSigning(keyId: unknown): [string, SigningKey] {
    if (typeof keyId === 'string' && this.keys.has(keyId)) {
      throw new AwsFault('InvalidKeyUsageException', `${keyId} key usage is ENCRYPT_DECRYPT which is not valid for this operation.`);
    }
    const key = typeof keyId === 'string' ? this.signingKeys.get(keyId) : undefined;
    if (!key) throw new AwsFault('NotFoundException', `Key '${String(keyId)}' does not exist`);
    return [keyId as string, key];
  }

  private sign(input: Record<string, unknown>): unknown {
    const [arn, key] = this.resolveSigning(input.KeyId);
    if (input.SigningAlgorithm !== 'ECDSA_SHA_256') throw new AwsFault('InvalidKeyUsageException', `${String(input.SigningAlgorithm)} is not valid for ${arn}`);
    // DIGEST (a message hashed by the caller) is not faked: the proxy sends RAW.
    if ((input.MessageType ?? 'RAW') !== 'RAW') throw new AwsFault('ValidationException', 'only MessageType RAW is faked');
    const message = Buffer.from(String(input.Message ?? ''), 'base64');
    if (message.length === 0 || message.length > MAX_RAW_MESSAGE_BYTES) {
      throw new AwsFault('ValidationException', `1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length between 1 and ${MAX_RAW_MESSAGE_BYTES}`);
    }
    // KMS hashes a RAW message with SHA-256 and returns a DER-encoded ECDSA signature.
    return { KeyId: arn, Signature: cryptoSign('sha256', message, key.privateKey).toString('base64'), SigningAlgorithm: 'ECDSA_SHA_256' };
  }

  private getPublicKey(input: Record<string, unknown>): unknown {
    const [arn, key] = this.resolveSigning(input.KeyId);
    return {
      KeyId: arn,
      PublicKey: key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      KeySpec: 'ECC_NIST_P256',
      KeyUsage: 'SIGN_VERIFY',
      SigningAlgorithms: ['ECDSA_SHA_256'],
    };
  }

  private generateDataKey(input: Record<string, unknown>, context: Record<string, string> | undefined): unknown {
    const arn = this.resolve(input.KeyId);
    if (input.KeySpec !== 'AES_256') throw new AwsFault('ValidationException', 'only KeySpec AES_256 is faked');
    const plaintext = randomBytes(32);
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.keys.get(arn)!, iv);
    c.setAAD(contextAad(context));
    const wrapped = Buffer.concat([c.update(plaintext), c.final()]);
    const keyRef = Buffer.from(arn, 'utf8');
    const blob = Buffer.concat([BLOB_MAGIC, Buffer.from([keyRef.length]), keyRef, iv, wrapped, c.getAuthTag()]);
    return { KeyId: arn, Plaintext: plaintext.toString('base64'), CiphertextBlob: blob.toString('base64') };
  }

  private decrypt(input: Record<string, unknown>, context: Record<string, string> | undefined): unknown {
    const blob = Buffer.from(String(input.CiphertextBlob), 'base64');
    const invalid = (): AwsFault => new AwsFault('InvalidCiphertextException', '');
    if (blob.length < BLOB_MAGIC.length + 1 || !blob.subarray(0, 4).equals(BLOB_MAGIC)) throw invalid();
    const n = blob[4]!;
    const arn = blob.subarray(5, 5 + n).toString('utf8');
    if (!this.keys.has(arn)) throw invalid();
    if (typeof input.KeyId === 'string' && input.KeyId !== arn) {
      throw new AwsFault('IncorrectKeyException', 'The key ID in the request does not identify a KMS key that can perform this operation.');
    }
    const rest = blob.subarray(5 + n);
    if (rest.length !== 12 + 32 + 16) throw invalid();
    try {
      const d = createDecipheriv('aes-256-gcm', this.keys.get(arn)!, rest.subarray(0, 12));
      d.setAAD(contextAad(context));
      d.setAuthTag(rest.subarray(44));
      const plaintext = Buffer.concat([d.update(rest.subarray(12, 44)), d.final()]);
      return { KeyId: arn, Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    } catch {
      throw invalid();
    }
  }
}

/** The context as KMS binds it: order does not matter, every pair does. */
function contextAad(context: Record<string, string> | undefined): Buffer {
  const pairs = Object.entries(context ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(JSON.stringify(pairs)).digest();
}
