/**
 * The relay phase of a PostgreSQL session: every client message is framed, inspected and, for
 * statements, classified, decided and audited before it is forwarded; server messages are forwarded
 * unchanged while a scanner pairs them with the statements they answer.
 *
 * Backpressure: when the client socket cannot take more, the upstream socket is paused, and the other
 * way round; while a statement waits for its audit record to become durable, the client is paused.
 * Nothing is buffered without bound.
 */
import type { Socket } from 'node:net';
import type { SessionAudit } from '../../../core/audit/ports.ts';
import type { SessionEndReason } from '../../../core/audit/events.ts';
import type { Principal } from '../../../core/identity/principal.ts';
import type { Decision, StatementDecider, TargetRef } from '../../../core/policy/decision.ts';
import { classifySql, type SqlClassification, type StatementClass } from '../../../core/sql/classify.ts';
import type { Logger } from '../log.ts';
import { ClientFramer, type FramedMessage } from './client-framer.ts';
import { ClientMessage, ServerMessage, SqlState } from './protocol-codes.ts';
import { cstring, decodeBind, decodeExecutePortal, decodeFields, decodeKindAndName, decodeParse, errorResponse, readyForQuery } from './backend-messages.ts';
import { ServerScanner } from './server-scanner.ts';
import { StatementTracker, type StatementResult } from './statement-tracker.ts';
import { FUNCTION_CALL_CLASS, FUNCTION_CALL_STATEMENT, refusalFields, statementEndEvent, statementEvent, UNKNOWN_STATEMENT } from './statement-events.ts';

export interface RelayOptions {
  client: Socket;
  upstream: Socket;
  /** The client framer from the startup phase, with any bytes already received. */
  framer: ClientFramer;
  /** Server bytes received after the login's ReadyForQuery. */
  upstreamRest: Buffer[];
  audit: SessionAudit;
  principal: Principal;
  target: TargetRef;
  decider: StatementDecider;
  /** Statements that may change anything are durable in the audit trail before they are forwarded. */
  durableBeforeForward: boolean;
  log: Logger;
  onEnd: (reason: SessionEndReason, stats: RelayStats) => void;
}

export interface RelayStats {
  statements: number;
  bytesFromClient: number;
  bytesToClient: number;
}

interface Prepared {
  text: string;
  classification: SqlClassification;
  decision: Decision;
}

interface Portal {
  statement: string;
  params: (string | null)[] | undefined;
}

const INSPECTED = new Set<number>([
  ServerMessage.commandComplete,
  ServerMessage.errorResponse,
  ServerMessage.readyForQuery,
  ServerMessage.emptyQueryResponse,
  ServerMessage.portalSuspended,
  0x56, // V FunctionCallResponse
]);

/** Functions of the FunctionCall message are opaque to the parser: the riskiest class. */
export class PostgresRelay {
  private readonly stats: RelayStats = { statements: 0, bytesFromClient: 0, bytesToClient: 0 };
  private readonly tracker: StatementTracker;
  private readonly scanner: ServerScanner;
  private readonly prepared = new Map<string, Prepared>();
  private readonly portals = new Map<string, Portal>();
  private out: Buffer[] = [];
  private busy = false;
  private holds = new Set<string>();
  private ended = false;
  private terminating = false;
  private idleWaiters: (() => void)[] = [];
  private txStatus = 'I';

  constructor(private readonly o: RelayOptions) {
    this.tracker = new StatementTracker((r) => this.statementEnded(r));
    this.scanner = new ServerScanner(INSPECTED, (type, body) => this.serverMessage(type, body));
  }

  start(): void {
    const { client, upstream } = this.o;
    client.on('data', (chunk: Buffer) => {
      this.stats.bytesFromClient += chunk.length;
      this.o.framer.push(chunk);
      this.pump();
    });
    client.on('end', () => this.finish(this.terminating ? 'client_terminate' : 'client_disconnect'));
    client.on('close', () => this.finish(this.terminating ? 'client_terminate' : 'client_disconnect'));
    client.on('error', (err) => {
      this.o.log.debug('client socket error', { err });
      this.finish('client_disconnect');
    });
    upstream.on('data', (chunk: Buffer) => this.fromUpstream(chunk));
    upstream.on('end', () => this.finish(this.terminating ? 'client_terminate' : 'upstream_closed'));
    upstream.on('close', () => this.finish(this.terminating ? 'client_terminate' : 'upstream_closed'));
    upstream.on('error', (err) => {
      this.o.log.warn('target connection error', { err });
      this.finish('upstream_closed');
    });
    for (const chunk of this.o.upstreamRest) this.fromUpstream(chunk);
    client.resume();
    upstream.resume();
    this.pump();
  }

  /** Ends the session from outside (shutdown, revocation). */
  shutdown(message: string): void {
    if (this.ended) return;
    this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.adminShutdown, message }));
    this.finish('shutdown');
  }

  // ---- client -> server -------------------------------------------------------------------------

  private pump(): void {
    if (this.busy || this.ended) return;
    this.busy = true;
    try {
      for (let m = this.o.framer.next(); m; m = this.o.framer.next()) {
        const wait = this.clientMessage(m);
        if (wait) {
          this.flushOut();
          this.hold('audit');
          const msg = m;
          wait.then(
            () => {
              this.release('audit');
              this.forward(msg.raw);
              this.busy = false;
              this.pump();
            },
            (err: unknown) => {
              if (err !== QUERY_REFUSED) return this.failClosed(err);
              this.release('audit');
              this.busy = false;
              this.pump();
            },
          );
          return;
        }
        this.forward(m.raw);
      }
    } catch (err) {
      this.protocolError(err);
      return;
    }
    this.flushOut();
    this.busy = false;
  }

  /** Inspects one client message; returns a promise when it may only be forwarded once that settles. */
  private clientMessage(m: FramedMessage): Promise<void> | undefined {
    switch (m.type) {
      case ClientMessage.query:
        return this.query(cstring(m.body, 0)[0]);
      case ClientMessage.parse: {
        const p = decodeParse(m.body);
        const classification = classifySql(p.text);
        const decision = this.decide(classification);
        if (decision.effect !== 'allow') throw new StatementRefusedError(decision);
        this.prepared.set(p.name, { text: p.text, classification, decision });
        return undefined;
      }
      case ClientMessage.bind: {
        let portal: Portal;
        try {
          const b = decodeBind(m.body);
          portal = { statement: b.statement, params: b.params };
          this.portals.set(b.portal, portal);
        } catch {
          // A malformed Bind is the server's to refuse; we still forward it and record no parameters.
          this.portals.set(cstring(m.body, 0)[0], { statement: '', params: undefined });
        }
        return undefined;
      }
      case ClientMessage.execute:
        return this.execute(decodeExecutePortal(m.body));
      case ClientMessage.sync:
        this.tracker.sync();
        return undefined;
      case ClientMessage.close: {
        const { kind, name } = decodeKindAndName(m.body);
        if (kind === 'S') this.prepared.delete(name);
        else this.portals.delete(name);
        return undefined;
      }
      case ClientMessage.functionCall:
        return this.functionCall(m.body.readUInt32BE(0));
      case ClientMessage.terminate:
        this.terminating = true;
        return undefined;
      default:
        return undefined;
    }
  }

  private decide(c: SqlClassification): Decision {
    let last: Decision | undefined;
    for (const s of c.statements) {
      const d = this.o.decider.decideStatement(this.o.principal, this.o.target, s);
      if (d.effect !== 'allow') return d;
      last = d;
    }
    return last ?? this.o.decider.decideStatement(this.o.principal, this.o.target, UNKNOWN_STATEMENT);
  }

  private query(text: string): Promise<void> | undefined {
    const classification = classifySql(text);
    const decisions = classification.statements.map((s) => this.o.decider.decideStatement(this.o.principal, this.o.target, s));
    const refused = decisions.find((d) => d.effect !== 'allow');
    if (refused) return this.refuseQuery(classification, decisions, refused);
    this.tracker.beginQuery();
    let durable: Promise<void>[] | undefined;
    classification.statements.forEach((s, k) => {
      const id = ++this.stats.statements;
      this.tracker.open(id, false);
      const p = this.record(id, 'simple', s.text, undefined, s, decisions[k]!, !s.readOnly);
      if (p) (durable ??= []).push(p);
    });
    return durable && (durable.length === 1 ? durable[0] : Promise.all(durable).then(() => undefined));
  }

  /**
   * Answers a refused Query itself: nothing of it is forwarded. The answer waits until the server has
   * answered everything sent before, so the client sees replies in order. Returns a promise that
   * rejects with QueryRefused so the pump drops the message instead of forwarding it.
   */
  private refuseQuery(c: SqlClassification, decisions: Decision[], refused: Decision): Promise<void> {
    const ids: number[] = [];
    const records = c.statements.map((s, k) => {
      const id = ++this.stats.statements;
      ids.push(id);
      return this.o.audit.append(
        statementEvent(id, 'simple', s.text, undefined, s, decisions[k]!),
        { durable: true },
      );
    });
    return Promise.all([...records, this.whenIdle()]).then(() => {
      for (const id of ids) this.statementEnded({ statementId: id, outcome: 'denied', durationMs: 0, sqlstate: SqlState.insufficientPrivilege, error: refused.reason ?? 'denied by policy' });
      this.o.client.write(
        Buffer.concat([
          errorResponse(refusalFields(refused)),
          readyForQuery(this.txStatus as 'I' | 'T' | 'E'),
        ]),
      );
      throw QUERY_REFUSED;
    });
  }

  private whenIdle(): Promise<void> {
    if (this.tracker.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private execute(portalName: string): Promise<void> | undefined {
    const portal = this.portals.get(portalName);
    const prepared = portal ? this.prepared.get(portal.statement) : undefined;
    const id = ++this.stats.statements;
    this.tracker.open(id, true);
    const statement = prepared?.classification.statements[0];
    return this.record(
      id,
      'extended',
      prepared?.text ?? '',
      portal?.params,
      statement,
      prepared?.decision ?? this.o.decider.decideStatement(this.o.principal, this.o.target, UNKNOWN_STATEMENT),
      !(prepared?.classification.readOnly ?? false),
    );
  }

  private functionCall(oid: number): Promise<void> | undefined {
    this.tracker.beginQuery();
    const id = ++this.stats.statements;
    this.tracker.open(id, false);
    return this.record(id, 'simple', `FunctionCall oid=${oid}`, undefined, FUNCTION_CALL_STATEMENT, this.decide(FUNCTION_CALL_CLASS), true);
  }

  /** Appends the statement event; returns a promise to wait for when it must be durable first. */
  private record(
    statementId: number,
    protocol: 'simple' | 'extended',
    text: string,
    params: (string | null)[] | undefined,
    classification: StatementClass | undefined,
    decision: Decision,
    mayWrite: boolean,
  ): Promise<void> | undefined {
    const durable = mayWrite && this.o.durableBeforeForward;
    const p = this.o.audit.append(
      statementEvent(statementId, protocol, text, params, classification, decision),
      { durable },
    );
    if (durable) return p;
    p.catch((err: unknown) => this.failClosed(err));
    return undefined;
  }

  private forward(raw: Buffer): void {
    this.out.push(raw);
  }

  private flushOut(): void {
    if (this.out.length === 0 || this.ended) return;
    const data = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out);
    this.out = [];
    if (!this.o.upstream.write(data)) {
      this.hold('upstream');
      this.o.upstream.once('drain', () => this.release('upstream'));
    }
    if (this.terminating) this.o.upstream.end();
  }

  private hold(reason: string): void {
    if (this.holds.size === 0) this.o.client.pause();
    this.holds.add(reason);
  }

  private release(reason: string): void {
    this.holds.delete(reason);
    if (this.holds.size === 0 && !this.ended) this.o.client.resume();
  }

  // ---- server -> client -------------------------------------------------------------------------

  private fromUpstream(chunk: Buffer): void {
    if (this.ended) return;
    try {
      this.scanner.scan(chunk);
    } catch (err) {
      this.o.log.error('target sent a malformed message stream', { err });
      this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.protocolViolation, message: 'the target sent an invalid message' }));
      this.finish('error');
      return;
    }
    this.stats.bytesToClient += chunk.length;
    if (!this.o.client.write(chunk)) {
      this.o.upstream.pause();
      this.o.client.once('drain', () => this.o.upstream.resume());
    }
  }

  private serverMessage(type: number, body: Buffer | undefined): void {
    switch (type) {
      case ServerMessage.dataRow:
        this.tracker.dataRow();
        return;
      case ServerMessage.commandComplete:
        this.tracker.commandComplete(body ? cstring(body, 0)[0] : '');
        return;
      case ServerMessage.errorResponse:
        this.tracker.error(body ? decodeFields(body) : {});
        return;
      case ServerMessage.emptyQueryResponse:
        this.tracker.emptyQuery();
        return;
      case ServerMessage.portalSuspended:
        this.tracker.portalSuspended();
        return;
      case 0x56:
        this.tracker.commandComplete('FUNCTION CALL');
        return;
      case ServerMessage.readyForQuery:
        this.tracker.readyForQuery();
        if (body && body.length) this.txStatus = String.fromCharCode(body[0]!);
        if (this.tracker.outstanding === 0 && this.idleWaiters.length) for (const w of this.idleWaiters.splice(0)) w();
        return;
    }
  }

  private statementEnded(r: StatementResult): void {
    this.o.audit.append(statementEndEvent(r), { durable: false }).catch((err: unknown) => this.failClosed(err));
  }

  // ---- endings ------------------------------------------------------------------------------------

  private protocolError(err: unknown): void {
    if (err instanceof StatementRefusedError) {
      // Extended-protocol refusals end the session until they are answered in place (fail closed).
      this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.insufficientPrivilege, message: `denied by policy: ${err.decision.reason ?? 'not permitted'}` }));
      this.finish('error');
      return;
    }
    this.o.log.warn('closing connection after a protocol error', { err });
    const message = err instanceof Error && err.name === 'ProtocolFramingError' ? err.message : 'invalid message from the client';
    this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.protocolViolation, message }));
    this.finish('protocol_error');
  }

  /** The audit trail could not record a statement: nothing more is forwarded and the session ends. */
  private failClosed(err: unknown): void {
    if (this.ended) return;
    this.o.log.error('audit write failed; ending the session (fail closed)', { err });
    this.o.client.write(
      errorResponse({ severity: 'FATAL', code: SqlState.cannotConnectNow, message: 'the audit trail is unavailable; the statement was not executed' }),
    );
    this.finish('error');
  }

  private finish(reason: SessionEndReason): void {
    if (this.ended) return;
    this.ended = true;
    this.out = [];
    this.tracker.abandon('connection closed before the server answered');
    this.o.client.end();
    this.o.upstream.end();
    // Give both sides a moment to flush their last bytes, then make sure nothing lingers.
    setTimeout(() => {
      this.o.client.destroy();
      this.o.upstream.destroy();
    }, 2000).unref();
    this.o.onEnd(reason, { ...this.stats });
  }
}

const QUERY_REFUSED = Symbol('query refused');

class StatementRefusedError extends Error {
  constructor(readonly decision: Decision) {
    super('statement refused by policy');
    this.name = 'StatementRefusedError';
  }
}
