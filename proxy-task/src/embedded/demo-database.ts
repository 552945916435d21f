/**
 * The `demo` database behind `npm start`: fake customers, cards, orders, tickets and API keys for
 * policy and masking demos. See demo-seed.sql for what is in it and why it is obviously fake.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { PostgresServer } from './postgres-server.ts';

export const DEMO_SEED_FILE = fileURLToPath(new URL('./demo-seed.sql', import.meta.url));
export const DEMO_TABLES = ['customers', 'payment_cards', 'orders', 'support_tickets', 'api_keys'] as const;

export class DemoSeedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DemoSeedError';
  }
}

/**
 * Idempotent: ensures the owner role (LOGIN, password reset to ownerPassword) and the database, then
 * seeds only if the tables are missing. The seed runs as the owner so it owns the tables.
 */
export async function seedDemoDatabase(
  server: PostgresServer,
  opts: { database: 'demo'; ownerRole: string; ownerPassword: string },
): Promise<void> {
  const { database, ownerRole, ownerPassword } = opts;
  if (ownerRole === server.superuser) {
    throw new DemoSeedError(`the demo owner must not be the superuser ${server.superuser}: agents would own the cluster`);
  }
  await server.createRole(ownerRole, ownerPassword, { login: true });
  await server.createDatabase(database, ownerRole);

  const present = await server.psql(`SELECT to_regclass('public.customers') IS NOT NULL`, { database });
  if (present.trim() === 't') return;

  let sql: string;
  try {
    sql = await readFile(DEMO_SEED_FILE, 'utf8');
  } catch (e) {
    throw new DemoSeedError(`cannot read the demo seed ${DEMO_SEED_FILE}`, { cause: e });
  }
  try {
    await server.psql(sql, { database, user: ownerRole });
  } catch (e) {
    throw new DemoSeedError(`seeding database ${database} failed: ${(e as Error).message}`, { cause: e });
  }
}
