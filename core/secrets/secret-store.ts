/** The SecretStore port: where Warden, and only Warden, reads target credentials. */

export interface TargetCredential {
  readonly username: string;
  readonly password: string;
}

export interface SecretStore {
  /** The credential stored under `name`; throws SecretNotFoundError when there is none. */
  getCredential(name: string): Promise<TargetCredential>;
  /**
   * Forgets a cached credential after the target refused it (a rotation may have replaced it); the next
   * getCredential reads it again. Absent on stores that do not cache.
   */
  invalidate?(name: string): void;
}

export class SecretNotFoundError extends Error {
  constructor(readonly secretName: string) {
    super(`no credential named '${secretName}' in the secret store`);
    this.name = 'SecretNotFoundError';
  }
}

export class SecretInvalidError extends Error {
  constructor(readonly secretName: string, reason: string) {
    // Never include the value: only the name and what is wrong with its shape.
    super(`credential '${secretName}' is invalid: ${reason}`);
    this.name = 'SecretInvalidError';
  }
}

/** Checks the shape of a stored credential without ever echoing it. */
export function toTargetCredential(name: string, value: unknown): TargetCredential {
  if (typeof value !== 'object' || value === null) throw new SecretInvalidError(name, 'expected an object with username and password');
  const { username, password } = value as Record<string, unknown>;
  if (typeof username !== 'string' || username.length === 0) throw new SecretInvalidError(name, 'username must be a non-empty string');
  if (typeof password !== 'string') throw new SecretInvalidError(name, 'password must be a string');
  return { username, password };
}
