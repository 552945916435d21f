/**
 * Local SecretStore: a JSON file `{ "<name>": { "username": "...", "password": "..." } }` that only the
 * owner can read. Re-read when it changes, so an operator can rotate a credential without a restart.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { SecretNotFoundError, toTargetCredential, type SecretStore, type TargetCredential } from '../../core/secrets/secret-store.ts';

export class LocalSecretsFile implements SecretStore {
  private cache: { mtimeMs: number; data: Record<string, unknown> } | undefined;

  constructor(readonly path: string) {}

  async getCredential(name: string): Promise<TargetCredential> {
    const data = this.load();
    if (!Object.hasOwn(data, name)) throw new SecretNotFoundError(name);
    return toTargetCredential(name, data[name]);
  }

  /** Adds or replaces a credential (used to create the demo credential). */
  put(name: string, credential: TargetCredential): void {
    const data = existsSync(this.path) ? this.load() : {};
    data[name] = { username: credential.username, password: credential.password };
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    writeFileSync(this.path, JSON.stringify(data, null, 2) + '\n', { mode: 0o600 });
    chmodSync(this.path, 0o600);
    this.cache = undefined;
  }

  has(name: string): boolean {
    return existsSync(this.path) && Object.hasOwn(this.load(), name);
  }

  private load(): Record<string, unknown> {
    const st = statSync(this.path, { throwIfNoEntry: false });
    if (!st) throw new SecretNotFoundError('(secrets file missing)');
    if (this.cache && this.cache.mtimeMs === st.mtimeMs) return this.cache.data;
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.path, 'utf8'));
    } catch (err) {
      // The parser's message can quote file content: do not pass it on.
      throw new Error(`secrets file ${this.path} is not valid JSON`, { cause: err instanceof SyntaxError ? undefined : err });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`secrets file ${this.path} must hold a JSON object`);
    this.cache = { mtimeMs: st.mtimeMs, data: parsed as Record<string, unknown> };
    return this.cache.data;
  }
}
