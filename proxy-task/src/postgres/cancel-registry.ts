/**
 * Warden gives each client its own BackendKeyData and keeps the mapping to the target's backend, so a
 * CancelRequest (psql's Ctrl-C, a driver's cancel) reaches the right server process without the client
 * ever learning the target's process id or key.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { UpstreamTls } from './upstream-connection.ts';

export interface CancelTarget {
  host: string;
  port: number;
  tls: UpstreamTls;
  backendPid: number;
  backendSecret: number;
  /** Handles the cancel in Warden first (a statement held for approval); true: nothing to forward. */
  intercept?: () => boolean;
}

interface Entry extends CancelTarget {
  secret: Buffer;
}

export class CancelRegistry {
  private readonly entries = new Map<number, Entry>();

  /** Registers a session; returns the process id and secret key to send to the client. */
  register(target: CancelTarget): { processId: number; secretKey: number } {
    let processId: number;
    do processId = randomBytes(4).readInt32BE(0) & 0x7fffffff;
    while (processId === 0 || this.entries.has(processId));
    const secret = randomBytes(4);
    this.entries.set(processId, { ...target, secret });
    return { processId, secretKey: secret.readInt32BE(0) };
  }

  /** Lets the session answer its cancels first (see CancelTarget.intercept). */
  intercept(processId: number, fn: () => boolean): void {
    const e = this.entries.get(processId);
    if (e) e.intercept = fn;
  }

  unregister(processId: number): void {
    this.entries.delete(processId);
  }

  /** The target backend to cancel, when the key matches (compared in constant time). */
  resolve(processId: number, secretKey: number): CancelTarget | undefined {
    const e = this.entries.get(processId);
    const given = Buffer.alloc(4);
    given.writeInt32BE(secretKey, 0);
    const expected = e?.secret ?? Buffer.alloc(4);
    const ok = timingSafeEqual(given, expected);
    return e && ok ? e : undefined;
  }

  get size(): number {
    return this.entries.size;
  }
}
