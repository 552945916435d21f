import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, jwtVerify } from 'jose';
import type { CryptoKey, JWK } from 'jose';

// Development OIDC issuer for the embedded default: one persistent ES256 key,
// tokens minted locally (CLI `warden token`), JWKS + discovery served over http.

export const DEV_ISSUER_ALG = 'ES256';
export const DEFAULT_TOKEN_TTL_SECONDS = 15 * 60;
export const MAX_TOKEN_TTL_SECONDS = 30 * 24 * 3600;

const RESERVED_CLAIMS = new Set(['iss', 'aud', 'sub', 'iat', 'nbf', 'exp', 'jti', 'groups']);

export class DevIssuerKeyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DevIssuerKeyError';
  }
}

export class DevIssuerInputError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DevIssuerInputError';
  }
}

export class DurationFormatError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DurationFormatError';
  }
}

export interface IssueTokenOptions {
  sub: string;
  groups?: string[];
  /** Default 900 (15 minutes). */
  ttlSeconds?: number;
  /** Additional claims; may not override iss, aud, sub, iat, nbf, exp, jti or groups. */
  extraClaims?: Record<string, unknown>;
}

export interface DevIssuerServer {
  /** Where the server actually listens (may differ from the configured issuer URL). */
  url: string;
  close(): Promise<void>;
}

export class DevIssuer {
  readonly issuerUrl: string;
  readonly audience: string;
  readonly kid: string;
  /** Path of the persisted private key. */
  readonly keyFile: string;
  private readonly privateKey: CryptoKey;
  private readonly publicJwk: JWK;

  private constructor(issuerUrl: string, audience: string, kid: string, keyFile: string, privateKey: CryptoKey, publicJwk: JWK) {
    this.issuerUrl = issuerUrl;
    this.audience = audience;
    this.kid = kid;
    this.keyFile = keyFile;
    this.privateKey = privateKey;
    this.publicJwk = publicJwk;
  }

  /**
   * Loads the signing key from `${stateDir}/dev-issuer/signing-key.jwk.json`, creating it
   * once if absent. issuerUrl comes from config (not a listening socket) so the CLI can
   * mint tokens without the server running.
   */
  static async loadOrCreate(stateDir: string, opts: { issuerUrl: string; audience: string }): Promise<DevIssuer> {
    const issuerUrl = checkIssuerUrl(opts.issuerUrl);
    if (typeof opts.audience !== 'string' || opts.audience === '') {
      throw new DevIssuerInputError('dev issuer audience must be a non-empty string');
    }
    const dir = join(stateDir, 'dev-issuer');
    const keyFile = join(dir, 'signing-key.jwk.json');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);

    let text: string;
    try {
      text = await readFile(keyFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new DevIssuerKeyError(`cannot read ${keyFile}`, { cause: e });
      await createKeyFile(keyFile);
      text = await readFile(keyFile, 'utf8');
    }
    const st = await stat(keyFile);
    if ((st.mode & 0o077) !== 0) await chmod(keyFile, 0o600);

    const { privateKey, publicJwk, kid } = await parseKeyFile(keyFile, text);
    return new DevIssuer(issuerUrl, opts.audience, kid, keyFile, privateKey, publicJwk);
  }

  async issueToken(opts: IssueTokenOptions): Promise<string> {
    const { sub, groups, ttlSeconds = DEFAULT_TOKEN_TTL_SECONDS, extraClaims = {} } = opts;
    if (typeof sub !== 'string' || sub === '') throw new DevIssuerInputError('sub must be a non-empty string');
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_TOKEN_TTL_SECONDS) {
      throw new DevIssuerInputError(`ttlSeconds must be a whole number between 1 and ${MAX_TOKEN_TTL_SECONDS}`);
    }
    if (groups !== undefined && (!Array.isArray(groups) || groups.some((g) => typeof g !== 'string' || g === ''))) {
      throw new DevIssuerInputError('groups must be a list of non-empty strings');
    }
    for (const k of Object.keys(extraClaims)) {
      if (RESERVED_CLAIMS.has(k)) throw new DevIssuerInputError(`extraClaims may not set the reserved claim "${k}"`);
    }
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ ...extraClaims, groups: groups ? [...groups] : [] })
      .setProtectedHeader({ alg: DEV_ISSUER_ALG, kid: this.kid, typ: 'at+jwt' })
      .setIssuer(this.issuerUrl)
      .setAudience(this.audience)
      .setSubject(sub)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + ttlSeconds)
      .setJti(randomUUID())
      .sign(this.privateKey);
  }

  /** Public key set only. */
  jwks(): { keys: JWK[] } {
    return { keys: [{ ...this.publicJwk }] };
  }

  discoveryDocument(): Record<string, unknown> {
    return {
      issuer: this.issuerUrl,
      jwks_uri: `${this.issuerUrl.replace(/\/+$/, '')}/.well-known/jwks.json`,
      id_token_signing_alg_values_supported: [DEV_ISSUER_ALG],
      subject_types_supported: ['public'],
      response_types_supported: [],
    };
  }

  /** Serves discovery and JWKS (GET/HEAD only); everything else is 404. */
  async listen(host: string, port: number): Promise<DevIssuerServer> {
    const prefix = new URL(this.issuerUrl).pathname.replace(/\/+$/, '');
    const routes = new Map<string, () => unknown>();
    for (const base of new Set(['', prefix])) {
      routes.set(`${base}/.well-known/openid-configuration`, () => this.discoveryDocument());
      routes.set(`${base}/.well-known/jwks.json`, () => this.jwks());
    }
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const route = req.method === 'GET' || req.method === 'HEAD' ? routes.get(path) : undefined;
      const status = route ? 200 : 404;
      const body = JSON.stringify(route ? route() : { error: 'not_found' });
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return {
      url: `http://${h}:${addr.port}`,
      close: () =>
        new Promise<void>((resolve, reject) => {
          server.close((err) => (err ? reject(err) : resolve()));
          // Keep-alive sockets (e.g. from fetch) would otherwise hold close() open.
          server.closeAllConnections();
        }),
    };
  }
}

function checkIssuerUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new DevIssuerInputError(`dev issuer URL ${JSON.stringify(raw)} is not a valid URL`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
    throw new DevIssuerInputError(`dev issuer URL ${JSON.stringify(raw)} must be http(s) without query or fragment`);
  }
  return raw;
}

async function createKeyFile(keyFile: string): Promise<void> {
  const { privateKey } = await generateKeyPair(DEV_ISSUER_ALG, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const body = `${JSON.stringify({ ...jwk, alg: DEV_ISSUER_ALG, use: 'sig' }, null, 2)}\n`;
  // Write privately to a temp name, then link(): fails with EEXIST if another process
  // created the key meanwhile, so the key is generated exactly once.
  const tmp = `${keyFile}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
  try {
    await link(tmp, keyFile);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new DevIssuerKeyError(`cannot create ${keyFile}`, { cause: e });
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

async function parseKeyFile(keyFile: string, text: string): Promise<{ privateKey: CryptoKey; publicJwk: JWK; kid: string }> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch (e) {
    throw new DevIssuerKeyError(`${keyFile} is not valid JSON; delete it to generate a new key`, { cause: e });
  }
  const { kty, crv, x, y, d } = jwk;
  if (kty !== 'EC' || crv !== 'P-256' || typeof x !== 'string' || typeof y !== 'string' || typeof d !== 'string') {
    throw new DevIssuerKeyError(`${keyFile} is not a P-256 private JWK; delete it to generate a new key`);
  }
  const pub: JWK = { kty, crv, x, y };
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  const publicJwk: JWK = { ...pub, kid, alg: DEV_ISSUER_ALG, use: 'sig' };
  let privateKey: CryptoKey;
  try {
    privateKey = (await importJWK({ kty, crv, x, y, d }, DEV_ISSUER_ALG)) as CryptoKey;
    // Self-check that d belongs to x/y: a mismatched file would mint unverifiable tokens.
    const probe = await new SignJWT({}).setProtectedHeader({ alg: DEV_ISSUER_ALG }).sign(privateKey);
    await jwtVerify(probe, await importJWK(pub, DEV_ISSUER_ALG));
  } catch (e) {
    throw new DevIssuerKeyError(`${keyFile} holds an unusable key; delete it to generate a new key`, { cause: e });
  }
  return { privateKey, publicJwk, kid };
}

/** Parses '900', '900s', '15m', '1h', '1d' into seconds. */
export function parseDuration(input: string): number {
  const m = typeof input === 'string' ? /^(\d+)\s*([smhd]?)$/i.exec(input.trim()) : null;
  const bad = () =>
    new DurationFormatError(
      `invalid duration ${JSON.stringify(input)}: use a positive whole number with an optional unit s, m, h or d (e.g. 900, 900s, 15m, 1h)`,
    );
  if (!m) throw bad();
  const unit = (m[2] || 's').toLowerCase();
  const mult = unit === 'd' ? 86400 : unit === 'h' ? 3600 : unit === 'm' ? 60 : 1;
  const seconds = Number(m[1]) * mult;
  if (!Number.isSafeInteger(seconds) || seconds <= 0) throw bad();
  return seconds;
}
