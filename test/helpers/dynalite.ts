/**
 * A DynamoDB API on 127.0.0.1 for tests: dynalite (in memory) with the real AWS SDK v3 client pointed at
 * it, dummy credentials, so the SDK's serialisation, signing and error parsing are all exercised.
 *
 * dynalite ships no type declarations; it is loaded with `createRequire` and typed here by hand.
 */
import { createRequire } from 'node:module';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';

type DynaliteFactory = (options?: { createTableMs?: number; deleteTableMs?: number; updateTableMs?: number; path?: string }) => Server;
const dynalite = createRequire(import.meta.url)('dynalite') as DynaliteFactory;

export interface LocalDynamoDb {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  /** A client for this server (us-east-1, dummy credentials); closed by `close()`. */
  readonly client: DynamoDBClient;
  /** A new client for this server, e.g. for a handler that builds its own. */
  newClient(): DynamoDBClient;
  /** Creates a table with a string partition key (default `id`), and a sort key if given; waits until it is ACTIVE. */
  createTable(name: string, partitionKey?: string, sortKey?: { name: string; type: 'S' | 'N' }): Promise<void>;
  close(): Promise<void>;
}

export const TEST_REGION = 'us-east-1';
export const TEST_CREDENTIALS = { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' } as const;

export async function startDynalite(): Promise<LocalDynamoDb> {
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clients: DynamoDBClient[] = [];
  const newClient = (): DynamoDBClient => {
    const c = new DynamoDBClient({ endpoint, region: TEST_REGION, credentials: TEST_CREDENTIALS, maxAttempts: 1 });
    clients.push(c);
    return c;
  };
  const client = newClient();
  return {
    endpoint,
    client,
    newClient,
    async createTable(name, partitionKey = 'id', sortKey) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          AttributeDefinitions: [{ AttributeName: partitionKey, AttributeType: 'S' }, ...(sortKey ? [{ AttributeName: sortKey.name, AttributeType: sortKey.type }] : [])],
          KeySchema: [{ AttributeName: partitionKey, KeyType: 'HASH' }, ...(sortKey ? [{ AttributeName: sortKey.name, KeyType: 'RANGE' as const }] : [])],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      for (let i = 0; i < 100; i++) {
        const d = await client.send(new DescribeTableCommand({ TableName: name }));
        if (d.Table?.TableStatus === 'ACTIVE') return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`table ${name} did not become ACTIVE`);
    },
    async close() {
      for (const c of clients) c.destroy();
      // Keep-alive sockets of the SDK would otherwise hold the server open.
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
