/**
 * The client side of PostgreSQL password authentication, used when Warden logs in to a target with the
 * credential only it holds: SCRAM-SHA-256 (RFC 5802 / RFC 7677), MD5 and cleartext, as the server asks.
 * @see https://www.postgresql.org/docs/current/sasl-authentication.html
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export class UpstreamAuthError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UpstreamAuthError';
  }
}

export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user).digest('hex');
  return 'md5' + createHash('md5').update(inner).update(salt).digest('hex');
}

const hmac = (key: Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** One SCRAM-SHA-256 exchange without channel binding. */
export class ScramClient {
  private readonly clientNonce = randomBytes(18).toString('base64');
  private readonly clientFirstBare = `n=*,r=${this.clientNonce}`;
  private serverSignature: Buffer | undefined;

  constructor(private readonly password: string) {}

  /** The client-first-message (gs2 header `n,,`: no channel binding). */
  clientFirst(): string {
    return `n,,${this.clientFirstBare}`;
  }

  /** Computes the client-final-message from the server-first-message. */
  clientFinal(serverFirst: string): string {
    const attrs = parseAttributes(serverFirst);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !salt || !Number.isInteger(iterations)) throw new UpstreamAuthError('malformed SCRAM server-first-message');
    if (!nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length) {
      throw new UpstreamAuthError('SCRAM server nonce does not extend the client nonce');
    }
    if (iterations < 1 || iterations > 10_000_000) throw new UpstreamAuthError(`unreasonable SCRAM iteration count ${iterations}`);
    // PostgreSQL applies SASLprep to the password when it is valid UTF-8 and falls back to the raw bytes
    // otherwise; credentials Warden holds are machine-generated ASCII, for which SASLprep is the identity.
    const salted = pbkdf2Sync(this.password.normalize('NFKC'), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(32);
    for (let k = 0; k < 32; k++) proof[k] = clientKey[k]! ^ signature[k]!;
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks the server-final-message: the server must prove it knows the verifier too. */
  verifyServerFinal(serverFinal: string): void {
    const v = parseAttributes(serverFinal).get('v');
    if (!v || !this.serverSignature) throw new UpstreamAuthError('malformed SCRAM server-final-message');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !timingSafeEqual(got, this.serverSignature)) {
      throw new UpstreamAuthError('SCRAM server signature does not match');
    }
  }
}

function parseAttributes(msg: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) m.set(part[0]!, part.slice(2));
  }
  return m;
}
