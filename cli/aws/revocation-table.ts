/**
 * The revocation list of an AWS deployment for `warden revoke|unrevoke|revocations list --aws`: the
 * DynamoDB table that every proxy task reads with a full Scan (layout and polling in
 * adapters/aws/dynamodb-revocation-list.ts). Writes go through that module's putRevocation and
 * deleteRevocation, so a second revoke keeps the first entry.
 */
import { DynamoDBDocumentClient, GetCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { deleteRevocation, putRevocation } from '../../adapters/aws/dynamodb-revocation-list.ts';
import type { RevokedIdentity } from '../../core/identity/revocation.ts';
import { parseRevocationDocument, revocationKey } from '../../core/identity/revocation-document.ts';
import { AwsCliClients } from './clients.ts';

/** An item the proxy tasks cannot read: while it is in the table their polls fail, and after the tolerance every login is refused. */
export interface InvalidRevocationItem {
  readonly identity: unknown;
  readonly problem: string;
}

export interface RevocationTable {
  readonly tableName: string;
  /** `existing` is the entry that was kept when the identity was revoked already. */
  revoke(entry: RevokedIdentity): Promise<{ changed: boolean; existing: RevokedIdentity | undefined }>;
  unrevoke(issuer: string, subject: string): Promise<{ changed: boolean; existing: undefined }>;
  /** Every item, as the proxy tasks read them (strongly consistent), in the order revoked. */
  list(): Promise<{ revoked: RevokedIdentity[]; invalid: InvalidRevocationItem[] }>;
  close(): void;
}

export function revocationTable(tableName: string, clients: AwsCliClients = new AwsCliClients()): RevocationTable {
  const doc = (): DynamoDBDocumentClient => DynamoDBDocumentClient.from(clients.dynamodb);
  return {
    tableName,
    async revoke(entry) {
      if (await putRevocation(clients.dynamodb, tableName, entry)) return { changed: true, existing: undefined };
      const out = await doc().send(new GetCommand({ TableName: tableName, Key: { identity: revocationKey(entry.issuer, entry.subject) }, ConsistentRead: true }));
      const existing = out.Item ? readItem(out.Item) : undefined;
      return { changed: false, existing: existing && 'entry' in existing ? existing.entry : undefined };
    },
    async unrevoke(issuer, subject) {
      return { changed: await deleteRevocation(clients.dynamodb, tableName, issuer, subject), existing: undefined };
    },
    async list() {
      const revoked: RevokedIdentity[] = [];
      const invalid: InvalidRevocationItem[] = [];
      let startKey: Record<string, unknown> | undefined;
      do {
        const page = await doc().send(new ScanCommand({ TableName: tableName, ConsistentRead: true, ExclusiveStartKey: startKey }));
        for (const item of page.Items ?? []) {
          const r = readItem(item);
          if ('entry' in r) revoked.push(r.entry);
          else invalid.push({ identity: item.identity, problem: r.problem });
        }
        startKey = page.LastEvaluatedKey;
      } while (startKey);
      revoked.sort((a, b) => a.revokedAt.localeCompare(b.revokedAt));
      return { revoked, invalid };
    },
    close: () => clients.destroy(),
  };
}

/**
 * An item as the proxy tasks read it (the same checks as dynamodb-revocation-list.ts, which keeps them
 * private): a valid entry whose partition key is `<issuer>|<subject>`.
 */
function readItem(item: Record<string, unknown>): { entry: RevokedIdentity } | { problem: string } {
  const { identity, issuer, subject, revokedAt, reason, revokedBy } = item;
  let entry: RevokedIdentity;
  try {
    entry = parseRevocationDocument({ revoked: [{ issuer, subject, revokedAt, ...(reason !== undefined ? { reason } : {}), ...(revokedBy !== undefined ? { revokedBy } : {}) }] }).revoked[0]!;
  } catch (err) {
    return { problem: (err as Error).message.replace(/^revoked\.0\./, '') };
  }
  if (identity !== revocationKey(entry.issuer, entry.subject)) return { problem: 'the identity does not match its issuer and subject' };
  return { entry };
}
