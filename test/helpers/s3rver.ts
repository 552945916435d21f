/**
 * An S3 API on 127.0.0.1 for tests: s3rver (objects in a temp dir) with the real AWS SDK v3 client
 * pointed at it, path-style addressing, so the SDK's serialisation, signing and error parsing are all
 * exercised.
 *
 * What s3rver does not do: Object Lock, versioning, and conditional PUTs (it accepts `If-None-Match: *`
 * and overwrites anyway). Tests of create-only writes assert the header the SDK sends, or emulate
 * S3's answer at the SDK boundary.
 *
 * s3rver ships no type declarations; it is loaded with `createRequire` and typed here by hand. It
 * checks SigV4 signatures against its built-in account, so clients use its fixed key pair.
 */
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { TEST_REGION } from './dynalite.ts';

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
  httpServer?: Server;
}
type S3rverConstructor = new (options: {
  address: string;
  port: number;
  silent: boolean;
  directory: string;
  configureBuckets?: { name: string }[];
}) => S3rverInstance;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor;

/** s3rver's built-in account. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface LocalS3 {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** A client for this server (path-style, us-east-1); closed by `close()`. */
  readonly client: S3Client;
  /** A new client for this server (e.g. to add middleware to it); closed by `close()`. */
  newClient(): S3Client;
  createBucket(name: string): Promise<void>;
  /** Stops the server and removes its directory. */
  close(): Promise<void>;
}

export async function startS3rver(opts: { buckets?: string[] } = {}): Promise<LocalS3> {
  const directory = mkdtempSync(join(tmpdir(), 'warden-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: (opts.buckets ?? []).map((name) => ({ name })),
  });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const clients: S3Client[] = [];
  const newClient = (): S3Client => {
    const c = new S3Client({ endpoint, region: TEST_REGION, credentials: S3RVER_CREDENTIALS, forcePathStyle: true, maxAttempts: 1 });
    clients.push(c);
    return c;
  };
  const client = newClient();
  return {
    endpoint,
    client,
    newClient,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async close() {
      for (const c of clients) c.destroy();
      // Keep-alive sockets of the SDK would otherwise hold the server open.
      server.httpServer?.closeAllConnections();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
