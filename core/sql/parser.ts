/**
 * Owns the libpg-query WASM module: load it once, then parse synchronously.
 * Offsets in everything returned here are UTF-8 byte offsets into the input.
 */
import { fingerprintSync, loadModule, parsePlPgSQLSync, parseSync, scanSync } from 'libpg-query';
import type { ParseResult, ScanToken } from 'libpg-query';

let ready = false;
let loading: Promise<void> | undefined;

/** Loads the parser; safe to call many times and concurrently. Call once at start-up. */
export function initSqlParser(): Promise<void> {
  if (ready) return Promise.resolve();
  loading ??= loadModule().then(
    () => { ready = true; },
    (err: unknown) => { loading = undefined; throw err; }, // let a later call retry
  );
  return loading;
}

export function isSqlParserReady(): boolean {
  return ready;
}

function assertReady(): void {
  if (!ready) throw new Error('SQL parser not initialised: await initSqlParser() once at start-up before classifying SQL');
}

/** Raw parse tree of `sql`; throws on a syntax error (and on '', which libpg-query refuses). */
export function parseSql(sql: string): ParseResult {
  assertReady();
  return parseSync(sql);
}

/** PL/pgSQL tree of a CREATE FUNCTION / DO statement; throws when the body does not compile. */
export function parsePlpgsql(stmtText: string): unknown {
  assertReady();
  return parsePlPgSQLSync(stmtText);
}

/** Lexer tokens (comments included) of `sql`. */
export function scanSql(sql: string): ScanToken[] {
  assertReady();
  return scanSync(sql).tokens;
}

/** libpg-query's fingerprint: equal for texts that differ only in literals, comments and spacing. */
export function fingerprintSql(sql: string): string {
  assertReady();
  try {
    return fingerprintSync(sql);
  } catch {
    return 'unparsed';
  }
}
