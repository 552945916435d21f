/**
 * The PostgreSQL listener: accepts connections and runs one session each. One peer can never take the
 * process down: every connection's failure stays inside its own handler.
 */
import net from 'node:net';
import type { LiveSession, SessionContext } from './client-session.ts';
import { handleConnection } from './client-session.ts';

export interface ListeningAddress {
  host: string;
  port: number;
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export class PostgresListener {
  private server: net.Server | undefined;
  private readonly sessions = new Set<LiveSession>();
  private readonly sockets = new Set<net.Socket>();
  private readonly ending = new Set<Promise<unknown>>();
  private stopWatchingRevocations: (() => void) | undefined;

  constructor(private readonly ctx: SessionContext) {}

  get activeSessions(): number {
    return this.sessions.size;
  }

  async listen(host: string, port: number): Promise<ListeningAddress> {
    const ctx: SessionContext = {
      ...this.ctx,
      onSessionStart: (s) => {
        this.sessions.add(s);
        return () => this.sessions.delete(s);
      },
      trackEnd: (p) => {
        this.ending.add(p);
        void p.finally(() => this.ending.delete(p));
      },
    };
    const server = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      handleConnection(socket, ctx).catch((err: unknown) => {
        ctx.log.error('unhandled connection error', { err });
        socket.destroy();
      });
    });
    server.on('error', (err) => ctx.log.error('listener error', { err }));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    // A revocation ends the identity's live sessions; an unreadable list ends none (only new logins are refused).
    this.stopWatchingRevocations = ctx.revocations.onChange(() => this.endRevokedSessions());
    const addr = server.address() as net.AddressInfo;
    return { host: addr.address, port: addr.port };
  }

  /** Ends every live session whose identity the revocation list now names. */
  endRevokedSessions(): number {
    let ended = 0;
    for (const s of [...this.sessions]) {
      if (this.ctx.revocations.check(s.principal.issuer, s.principal.subject) !== 'revoked') continue;
      s.revoke();
      ended++;
    }
    if (ended > 0) this.ctx.log.info('sessions of revoked identities ended', { sessions: ended });
    return ended;
  }

  /** Stops accepting; live sessions get `graceMs` to finish, then are ended with an admin-shutdown error. */
  async close(graceMs = 0): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    this.stopWatchingRevocations?.();
    this.stopWatchingRevocations = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    const deadline = Date.now() + graceMs;
    while (this.sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of [...this.sessions]) s.shutdown('terminating connection due to administrator command');
    for (const sock of this.sockets) if (!sock.destroyed) setTimeout(() => sock.destroy(), 500).unref();
    await closed;
    // Every session's trail is sealed before the audit sink may close.
    await Promise.allSettled([...this.ending]);
  }
}
