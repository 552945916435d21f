import type { AuditEventBody, SessionEndFields, SessionId, SessionStartFields } from './events.ts';

/** The audit trail could not be (or may not have been) written: the caller must fail closed. */
export class AuditWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditWriteError';
  }
}

export interface AuditSink {
  /**
   * Starts a session's chain and writes session.start (durable unless `opts.durable` is false;
   * `SessionAudit.ready` settles when it is). Throws AuditWriteError synchronously if the sink
   * is failed/closed or the session id is already open.
   */
  openSession(sessionId: SessionId, start: SessionStartFields, opts?: { durable?: boolean }): SessionAudit;
  /** Forces everything pending to disk. Rejects (AuditWriteError) if the sink failed. */
  flush(): Promise<void>;
  /** Flushes, stops timers, releases files. Later appends reject. */
  close(): Promise<void>;
}

export interface SessionAudit {
  readonly sessionId: SessionId;
  /** Settles when session.start is written per openSession's `durable`. Never unhandled. */
  readonly ready: Promise<void>;
  /**
   * Appends an event; resolves once it is durable when durable=true, or once it is accepted
   * into the buffer (durability within the configured window) when false. Rejects
   * (AuditWriteError) if the sink failed or is closed, the session ended, or the buffer is
   * over its limit: the caller then fails closed.
   */
  append(body: AuditEventBody, opts: { durable: boolean }): Promise<void>;
  /** Writes session.end and the seal, durable. */
  end(fields: SessionEndFields): Promise<void>;
}
