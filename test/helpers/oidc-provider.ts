/**
 * A real third-party OIDC issuer for tests: `oidc-provider` with the client-credentials grant and JWT
 * access tokens (RS256), served on 127.0.0.1. For a client-credentials token, `sub` is the client id.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';

// oidc-provider ships no type declarations; describe only what is used here.
type ProviderCtor = new (issuer: string, config: Record<string, unknown>) => { callback(): RequestListener };
const OIDC_PROVIDER_MODULE: string = 'oidc-provider';

export interface TestOidcProvider {
  issuer: string;
  audience: string;
  /** The public signing key, as published in the issuer's JWKS. */
  publicJwk: JWK;
  /** Obtains an access token with the client-credentials grant, as an agent would. */
  token(clientId: string): Promise<string>;
  close(): Promise<void>;
}

export async function startOidcProvider(opts: { audience: string; clients: string[] }): Promise<TestOidcProvider> {
  const { default: Provider } = (await import(OIDC_PROVIDER_MODULE)) as { default: ProviderCtor };
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  let handler: RequestListener = (_req, res) => res.end();
  const server: Server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const secret = (id: string) => `${id}-secret-0123456789abcdef0123456789abcdef`;
  const provider = new Provider(issuer, {
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'op-rsa-1', alg: 'RS256', use: 'sig' }] },
    scopes: ['openid', 'db'],
    clients: opts.clients.map((id) => ({ client_id: id, client_secret: secret(id), grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'db' })),
    ttl: { ClientCredentials: 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => opts.audience,
        getResourceServerInfo: () => ({ scope: 'db', audience: opts.audience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      },
    },
  });
  handler = provider.callback();
  return {
    issuer,
    audience: opts.audience,
    publicJwk: { ...(await exportJWK(publicKey)), kid: 'op-rsa-1', alg: 'RS256' },
    token: async (clientId) => {
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${clientId}:${secret(clientId)}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'db' }),
      });
      const body = (await res.json()) as { access_token?: string };
      if (res.status !== 200 || !body.access_token) throw new Error(`token request failed: ${res.status} ${JSON.stringify(body)}`);
      return body.access_token;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
