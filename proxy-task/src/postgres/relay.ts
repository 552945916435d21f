/**
 * The relay phase of a PostgreSQL session: every client message is framed, inspected and, for
 * statements, classified, decided and audited before it is forwarded; server messages are forwarded
 * unchanged while a scanner pairs them with the statements they answer. A refused statement is replaced
 * by a stand-in that fails at the server (stand-in.ts), and the stand-in's error by the refusal.
 *
 * Backpressure: when the client socket cannot take more, the upstream socket is paused, and the other
 * way round; while a statement waits for its audit record to become durable, the client is paused.
 * Nothing is buffered without bound.
 */
import type { Socket } from 'node:net';
import type { SessionAudit } from '../../../core/audit/ports.ts';
import type { SessionEndReason } from '../../../core/audit/events.ts';
import type { Principal } from '../../../core/identity/principal.ts';
import { refusalAmong, type Decision, type StatementDecider, type TargetRef } from '../../../core/policy/decision.ts';
import { classifySql, type SqlClassification, type StatementClass } from '../../../core/sql/classify.ts';
import { executeOfPrepared } from '../../../core/sql/prepared-execute.ts';
import type { Logger } from '../log.ts';
import { ClientFramer, type FramedMessage } from './client-framer.ts';
import { ClientMessage, ServerMessage, SqlState } from './protocol-codes.ts';
import { cstring, decodeBind, decodeExecutePortal, decodeFields, decodeKindAndName, decodeParse, errorResponse, readyForQuery } from './backend-messages.ts';
import { encodeServerMessage, ServerScanner } from './server-scanner.ts';
import { StandIn } from './stand-in.ts';
import type { MaskingCatalog } from './masking/masking-catalog.ts';
import { bareNames, copyRefusal, maskedCopyRow, maskedCStrings, maskedFields, maskingRefusal, planCopyOut, type CopyOutPlan } from './masking/masked-messages.ts';
import type { ResultMasker } from './masking/result-masker.ts';
import type { MaskingConfinement } from '../../../core/masking/confinement.ts';
import type { HeldStatements, HoldResult } from './held-statements.ts';
import type { NoticeFields } from './backend-messages.ts';
import type { MaskingSummary } from '../../../core/masking/vocabulary.ts';
import type { ForensicVault, VaultCell, VaultRecordWriter } from '../../../core/masking/forensic-vault.ts';
import { decodeRowDescription } from './masking/result-messages.ts';
import { PreparedStatements, type Prepared } from './prepared-statements.ts';
import { unsafeParameterStatus } from './lexical-settings.ts';
import { StatementTracker, type StatementResult } from './statement-tracker.ts';
import { FUNCTION_CALL_STATEMENT, refusalFields, statementEndEvent, statementEvent, UNKNOWN_STATEMENT } from './statement-events.ts';

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
  /** Result masking for this session (absent: results are relayed as the server sends them). */
  masking?: SessionMasking;
  /** The agent's group that lets it see this masked target unmasked: recorded with every statement. */
  unmaskedBy?: string;
  /** Statements held for approval (absent: held statements are refused, naming who would approve). */
  held?: HeldStatements;
  log: Logger;
  onEnd: (reason: SessionEndReason, stats: RelayStats) => void;
}

export interface SessionMasking {
  masker: ResultMasker;
  catalog: MaskingCatalog;
  /** Where the originals of masked cells go, one sealed record per statement. */
  vault: ForensicVault;
  /** Who the records are about. */
  meta: { sessionId: string; target: string; principal: { issuer: string; subject: string } };
  /** Strict masking: statements that would take a ruled column out of masking's sight are refused. */
  confinement?: MaskingConfinement;
}

export interface RelayStats {
  statements: number;
  bytesFromClient: number;
  bytesToClient: number;
}

/**
 * What to do with a client message once inspected: forward it (undefined), or forward `send` instead
 * (null: nothing), after `wait` settles when given (an audit record that must be durable first).
 */
type Step =
  | undefined
  | {
      wait?: Promise<void>;
      send?: Buffer | null;
      /** Once `wait` settles: what to do instead (a held statement's outcome decides). */
      then?: () => Step;
      /** `wait` is a human's decision: the client is not paused meanwhile, so a disconnect is seen. */
      held?: boolean;
    };

/** A statement as the audit trail records it and the decider judged it. */
interface Judged {
  text: string;
  params: (string | null)[] | undefined;
  statement: StatementClass | undefined;
  decision: Decision;
}

interface Portal {
  /** The statement bound, as it stood when the Bind was sent (a later Parse of the name changes nothing). */
  prepared: Prepared | undefined;
  params: (string | null)[] | undefined;
}

const INSPECTED = new Set<number>([
  ServerMessage.commandComplete,
  ServerMessage.errorResponse,
  ServerMessage.readyForQuery,
  ServerMessage.emptyQueryResponse,
  ServerMessage.portalSuspended,
  ServerMessage.parameterStatus,
  0x56, // V FunctionCallResponse
]);

/** With masking on, row descriptions, notices and describe answers are looked at too. */
const INSPECTED_MASKING = new Set<number>([...INSPECTED, ServerMessage.rowDescription, ServerMessage.noticeResponse, ServerMessage.notificationResponse]);

/** One session's relay: decides, records and forwards the client's messages, and watches the server's answers. */
export class PostgresRelay {
  private readonly stats: RelayStats = { statements: 0, bytesFromClient: 0, bytesToClient: 0 };
  private readonly tracker: StatementTracker;
  private readonly scanner: ServerScanner;
  private readonly prepared = new PreparedStatements();
  private readonly portals = new Map<string, Portal>();
  private out: Buffer[] = [];
  private busy = false;
  private holds = new Set<string>();
  private ended = false;
  private terminating = false;
  /** After a refused extended-protocol message, everything up to the next Sync is discarded (as the server would). */
  private discardUntilSync = false;
  private readonly standIn = new StandIn();
  /**
   * With masking on: every Execute is preceded by a Describe of its portal, so the rows it returns come
   * right after a RowDescription that says where each column comes from and in which format. Describes the
   * client did not send are Warden's own, and so are their answers (cut out of the stream). In order of
   * sending: what each Describe's answer is for.
   */
  private describes: { own: boolean; portal: boolean; syncPoint: number }[] = [];
  /** Sync points that are simple Queries (their RowDescriptions describe their own results). */
  private readonly querySyncPoints = new Set<number>();
  /** The portal the client's previous message described, if that message was a Describe of a portal. */
  private describedPortal: string | undefined;
  /** Vault records being sealed; the session's end waits for them (their statement ends come after). */
  private readonly sealing = new Set<Promise<unknown>>();
  /** The forensic-vault record of the statement whose results are being masked. */
  private vaultRecord: { statementId: number; writer: VaultRecordWriter } | undefined;
  /** COPY ... TO STDOUT statements on a masked target, by statement id, and the one streaming now. */
  private readonly copyPlans = new Map<number, CopyOutPlan>();
  private copyOut: (CopyOutPlan & { headerPending: boolean }) | undefined;
  /** Statements classified as DDL (CREATE TABLE AS and CREATE MATERIALIZED VIEW end with a SELECT tag). */
  private readonly ddlStatements = new Set<number>();
  /** After DDL on a masked target, the next statement waits until the column rules are traced again. */
  private catalogRefresh: Promise<void> | undefined;

  constructor(private readonly o: RelayOptions) {
    this.tracker = new StatementTracker((r) => this.statementEnded(r));
    const m = o.masking;
    m?.masker.onMasked((cell) => this.vaultCell(cell));
    this.scanner = new ServerScanner(
      m ? INSPECTED_MASKING : INSPECTED,
      (type, body) => this.serverMessage(type, body),
      undefined,
      m
        ? (type) =>
            type === ServerMessage.errorResponse ||
            type === ServerMessage.noticeResponse ||
            type === ServerMessage.notificationResponse ||
            (type === ServerMessage.copyData && this.copyOut !== undefined) ||
            type === ServerMessage.parameterStatus ||
            (type === ServerMessage.dataRow && m.masker.active) ||
            ((type === ServerMessage.rowDescription || type === ServerMessage.noData) && this.nextDescribeIsOwn())
        : (type) => type === ServerMessage.errorResponse && this.tracker.headIsStandIn(),
    );
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
    if (this.catalogRefresh) return; // resumed when the refresh settles
    this.busy = true;
    try {
      for (let m = this.o.framer.next(); m; m = this.o.framer.next()) {
        if (this.runStep(this.clientMessage(m), m.raw)) return; // resumed when the step's wait settles
      }
    } catch (err) {
      this.protocolError(err);
      return;
    }
    this.flushOut();
    this.busy = false;
  }

  /** Inspects one client message and says what to forward. */
  private clientMessage(m: FramedMessage): Step {
    if (this.discardUntilSync) {
      if (m.type === ClientMessage.sync) this.discardUntilSync = false;
      else if (m.type !== ClientMessage.terminate) return DISCARD;
    }
    const describedPortal = this.describedPortal;
    this.describedPortal = undefined;
    switch (m.type) {
      case ClientMessage.query:
        return this.query(cstring(m.body, 0)[0]);
      case ClientMessage.describe: {
        if (!this.o.masking) return undefined;
        const { kind, name } = decodeKindAndName(m.body);
        this.describes.push({ own: false, portal: kind === 'P', syncPoint: this.tracker.syncPointsForwarded + 1 });
        if (kind === 'P') this.describedPortal = name;
        return undefined;
      }
      case ClientMessage.parse:
        return this.parse(decodeParse(m.body));
      case ClientMessage.bind: {
        let portal: Portal;
        try {
          const b = decodeBind(m.body);
          portal = { prepared: this.prepared.lookup(b.statement), params: b.params };
          this.portals.set(b.portal, portal);
        } catch {
          // A malformed Bind is the server's to refuse; we still forward it and record no parameters.
          this.portals.set(cstring(m.body, 0)[0], { prepared: undefined, params: undefined });
        }
        return undefined;
      }
      case ClientMessage.execute: {
        const portal = decodeExecutePortal(m.body);
        const step = this.execute(portal);
        if (!this.o.masking || describedPortal === portal || (step && step.send === null)) return step;
        if (step?.send) return step; // refused: the stand-in goes instead
        // Warden's own Describe of the portal first: its RowDescription plans the masking of these rows.
        this.describes.push({ own: true, portal: true, syncPoint: this.tracker.syncPointsForwarded + 1 });
        const send = Buffer.concat([describePortalMessage(portal), m.raw]);
        return step ? { ...step, send } : { send };
      }
      case ClientMessage.sync:
        this.tracker.sync();
        return undefined;
      case ClientMessage.close: {
        const { kind, name } = decodeKindAndName(m.body);
        if (kind === 'S') this.prepared.closeSent(name, this.tracker.syncPointsForwarded + 1);
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

  /** Decides one statement, judging `EXECUTE name` as the statement prepared under that name. */
  private decideOne(s: StatementClass): { statement: StatementClass; decision: Decision; copyOut?: CopyOutPlan } {
    let statement = s;
    if (s.command === 'EXECUTE' && s.preparedName !== undefined) {
      const prepared = this.prepared.lookup(s.preparedName)?.statement;
      if (prepared) statement = executeOfPrepared(s, prepared);
    }
    const decision = this.o.decider.decideStatement(this.o.principal, this.o.target, statement);
    const confinement = this.o.masking?.confinement;
    if (confinement && decision.effect !== 'deny') {
      const procedural = statement.operation === 'procedural' || statement.risks.includes('do_block') || statement.risks.includes('dynamic_sql');
      const breach = confinement.check(s.text, bareNames(statement.tables), procedural);
      if (breach) {
        return {
          statement,
          decision: maskingRefusal(`masked column ${breach.column} ${breach.use}; on target "${this.o.target.name}" a masked column may only be selected as it is, or compared with = / IN / IS NULL`),
        };
      }
    }
    if (this.o.masking && decision.effect === 'allow' && statement.operation === 'copy_out') {
      const plan = planCopyOut(this.o.masking!.catalog, statement);
      if (typeof plan === 'string') return { statement, decision: copyRefusal(plan) };
      return { statement, decision, copyOut: plan };
    }
    return { statement, decision };
  }

  /** Notes what a statement of an allowed simple Query does to the prepared statements, once the server confirms it. */
  private notePrepared(statementId: number, s: StatementClass, decision: Decision): void {
    const syncPoint = this.tracker.syncPointsForwarded;
    if (s.command === 'PREPARE' && s.preparedName !== undefined) {
      const inner = s.nested[0];
      this.prepared.sqlSent(statementId, s.preparedName, { text: s.text, statement: inner, readOnly: inner?.readOnly ?? false, decision }, syncPoint);
    } else if (s.command === 'DEALLOCATE') this.prepared.sqlSent(statementId, s.preparedName, undefined, syncPoint);
    else if (s.command === 'DISCARD ALL') this.prepared.sqlSent(statementId, undefined, undefined, syncPoint);
  }

  private query(text: string): Step {
    const classification = classifySql(text);
    const judged: { statement: StatementClass; decision: Decision; copyOut?: CopyOutPlan }[] = classification.statements.map((s) => this.decideOne(s));
    const refused = refusalAmong(judged, (j) => j.decision);
    if (refused?.decision.effect === 'approval' && this.o.held) {
      const k = judged.indexOf(refused);
      if (judged.filter((j) => j.decision.effect === 'approval').length > 1) {
        const one = { ...refused.decision, effect: 'deny' as const, reason: 'only one statement at a time can wait for approval: send each held statement on its own' };
        return this.refuse('simple', this.judgedItems(classification, judged, k, one), one);
      }
      let outcome: HoldResult | undefined;
      const wait = this.o.held
        .hold({ text: classification.statements[k]!.text, params: undefined, statement: refused.statement, decision: refused.decision, statementId: this.stats.statements + 1 + k })
        .then((r) => void (outcome = r));
      return {
        wait,
        held: true,
        then: () => {
          if (outcome!.kind === 'refuse') return this.refuse('simple', this.judgedItems(classification, judged, k, outcome!.decision), outcome!.decision, undefined, outcome!.answer);
          judged[k] = { ...refused, decision: outcome!.decision };
          return this.runQuery(classification, judged);
        },
      };
    }
    if (refused) return this.refuse('simple', this.judgedItems(classification, judged, -1, refused.decision), refused.decision);
    return this.runQuery(classification, judged);
  }

  /** The statements of a Query as the trail records them; statement `k` with `decision` in place of its own. */
  private judgedItems(classification: SqlClassification, judged: readonly { statement: StatementClass; decision: Decision }[], k: number, decision: Decision): Judged[] {
    return judged.map((j, i): Judged => ({ text: classification.statements[i]!.text, params: undefined, statement: j.statement, decision: i === k ? decision : j.decision }));
  }

  private runQuery(classification: SqlClassification, judged: readonly { statement: StatementClass; decision: Decision; copyOut?: CopyOutPlan }[]): Step {
    this.tracker.beginQuery();
    if (this.o.masking) this.querySyncPoints.add(this.tracker.syncPointsForwarded);
    let durable: Promise<void>[] | undefined;
    judged.forEach((j, k) => {
      const s = classification.statements[k]!;
      const id = ++this.stats.statements;
      this.tracker.open(id, false);
      this.notePrepared(id, s, j.decision);
      if (j.copyOut) this.copyPlans.set(id, j.copyOut);
      const p = this.record(id, 'simple', s.text, undefined, j.statement, j.decision, !s.readOnly);
      if (p) (durable ??= []).push(p);
    });
    if (!durable) return undefined;
    return { wait: durable.length === 1 ? durable[0] : Promise.all(durable).then(() => undefined) };
  }

  private parse(p: { name: string; text: string }): Step {
    const classification = classifySql(p.text);
    const judged = classification.statements.map((s) => this.decideOne(s));
    const refused = refusalAmong(judged, (j) => j.decision);
    if (refused?.decision.effect === 'approval' && this.o.held) {
      // Held at Parse: the approver sees the text; parameters come later with Bind and are not part of it.
      let outcome: HoldResult | undefined;
      const wait = this.o.held
        .hold({ text: p.text, params: undefined, statement: refused.statement, decision: refused.decision, statementId: this.stats.statements + 1 })
        .then((r) => void (outcome = r));
      return {
        wait,
        held: true,
        then: () => {
          if (outcome!.kind === 'refuse') {
            return this.refuse('extended', [{ text: p.text, params: undefined, statement: refused.statement, decision: outcome!.decision }], outcome!.decision, p.name, outcome!.answer);
          }
          this.prepared.parseSent(p.name, { text: p.text, statement: refused.statement, readOnly: classification.readOnly, decision: outcome!.decision }, this.tracker.syncPointsForwarded + 1);
          return undefined;
        },
      };
    }
    if (refused) {
      return this.refuse('extended', [{ text: p.text, params: undefined, statement: refused.statement, decision: refused.decision }], refused.decision, p.name);
    }
    const first = judged[0];
    this.prepared.parseSent(p.name, { text: p.text, statement: first?.statement, readOnly: classification.readOnly, decision: first?.decision ?? EMPTY_STATEMENT }, this.tracker.syncPointsForwarded + 1);
    return undefined;
  }

  /**
   * Refuses statements: records them (durably) with their decisions and a 'denied' outcome, and sends
   * the server a stand-in that fails where they would have run, whose error the client gets as the
   * refusal. In the extended protocol the rest of the pipeline up to Sync is then discarded.
   *
   * @param parseName for a refused Parse, the statement name it used.
   */
  private refuse(protocol: 'simple' | 'extended', items: readonly Judged[], refused: Decision, parseName?: string, answer?: NoticeFields): Step {
    const records: Promise<void>[] = [];
    for (const j of items) {
      const id = ++this.stats.statements;
      records.push(this.o.audit.append(statementEvent(id, protocol, j.text, j.params, j.statement, j.decision), { durable: true }));
      const own = j.decision.effect !== 'allow';
      records.push(
        this.o.audit.append(
          statementEndEvent({
            statementId: id,
            outcome: own ? 'denied' : 'error',
            durationMs: 0,
            ...(own
              ? { sqlstate: answer?.code ?? SqlState.insufficientPrivilege, error: (j.decision === refused && answer ? answer : refusalFields(j.decision)).message }
              : { error: 'not executed: another statement of the same Query was refused' }),
          }),
          { durable: true },
        ),
      );
    }
    const refusal = errorResponse(answer ?? refusalFields(refused));
    let send: Buffer;
    if (protocol === 'simple') {
      this.tracker.beginQuery();
      this.tracker.openStandIn(false, refusal);
      send = this.standIn.query();
    } else {
      this.tracker.openStandIn(true, refusal);
      this.discardUntilSync = true;
      send = this.standIn.parse(parseName);
    }
    return { wait: Promise.all(records).then(() => undefined), send };
  }

  private execute(portalName: string): Step {
    const portal = this.portals.get(portalName);
    const prepared = portal?.prepared;
    if (!prepared || prepared.decision.effect !== 'allow') {
      // Only an Execute of a statement Warden never saw allowed gets here; the server would refuse it too.
      const decision = prepared?.decision ?? this.o.decider.decideStatement(this.o.principal, this.o.target, UNKNOWN_STATEMENT);
      if (decision.effect !== 'allow') {
        return this.refuse('extended', [{ text: prepared?.text ?? '', params: portal?.params, statement: prepared?.statement ?? UNKNOWN_STATEMENT, decision }], decision);
      }
    }
    const id = ++this.stats.statements;
    this.tracker.open(id, true);
    if (this.o.masking && prepared?.statement?.operation === 'copy_out') {
      const plan = planCopyOut(this.o.masking.catalog, prepared.statement);
      if (typeof plan !== 'string') this.copyPlans.set(id, plan); // a refusable COPY was refused at its Parse
    }
    const p = this.record(id, 'extended', prepared?.text ?? '', portal?.params, prepared?.statement, prepared?.decision ?? EMPTY_STATEMENT, !(prepared?.readOnly ?? false));
    return p && { wait: p };
  }

  /** A fast-path FunctionCall names a function by OID, opaque to the parser: decided as an unknown statement. */
  private functionCall(oid: number): Step {
    const text = `FunctionCall oid=${oid}`;
    const decision = this.o.decider.decideStatement(this.o.principal, this.o.target, FUNCTION_CALL_STATEMENT);
    if (decision.effect !== 'allow') return this.refuse('simple', [{ text, params: undefined, statement: FUNCTION_CALL_STATEMENT, decision }], decision);
    this.tracker.beginQuery();
    const id = ++this.stats.statements;
    this.tracker.open(id, false);
    const p = this.record(id, 'simple', text, undefined, FUNCTION_CALL_STATEMENT, decision, true);
    return p && { wait: p };
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
    if (this.o.masking && classification && (classification.operation === 'ddl' || classification.nested.some((n) => n.operation === 'ddl'))) this.ddlStatements.add(statementId);
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

  /** Carries out a client message's step; true when it waits (the pump resumes when it settles). */
  private runStep(step: Step, raw: Buffer): boolean {
    if (!step) {
      this.forward(raw);
      return false;
    }
    const send = step.send === undefined ? raw : step.send;
    if (!step.wait) {
      if (step.then) return this.runStep(step.then(), raw);
      if (send) this.forward(send);
      return false;
    }
    this.flushOut();
    const reason = step.held ? 'held' : 'audit';
    if (!step.held) this.hold(reason);
    step.wait.then(
      () => {
        if (!step.held) this.release(reason);
        if (this.ended) return;
        try {
          if (step.then ? this.runStep(step.then(), raw) : (send && this.forward(send), false)) return;
        } catch (err) {
          this.protocolError(err);
          return;
        }
        this.busy = false;
        this.pump();
      },
      (err: unknown) => this.failClosed(err),
    );
    return true;
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
    let pieces: Buffer[] | undefined;
    try {
      pieces = this.scanner.scan(chunk);
    } catch (err) {
      this.o.log.error('target sent a malformed message stream', { err });
      this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.protocolViolation, message: 'the target sent an invalid message' }));
      this.finish('error');
      return;
    }
    const data = pieces ? (pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces)) : chunk;
    if (data.length === 0) return;
    this.stats.bytesToClient += data.length;
    if (!this.o.client.write(data)) {
      this.o.upstream.pause();
      this.o.client.once('drain', () => this.o.upstream.resume());
    }
  }

  private serverMessage(type: number, body: Buffer | undefined): Buffer | undefined {
    switch (type) {
      case ServerMessage.dataRow:
        this.tracker.dataRow();
        return body && this.o.masking?.masker.active ? this.o.masking.masker.maskRow(body) : undefined;
      case ServerMessage.rowDescription:
        return this.rowDescription(body);
      case ServerMessage.copyOutResponse: {
        const plan = this.copyPlans.get(this.tracker.currentStatementId);
        if (plan) this.copyOut = { ...plan, headerPending: plan.shape.header };
        return undefined;
      }
      case ServerMessage.copyData:
        return body && this.copyOut ? this.copyRow(body) : undefined;
      case ServerMessage.copyDone:
        this.copyOut = undefined;
        return undefined;
      case ServerMessage.noData:
        return this.noData();
      case ServerMessage.noticeResponse:
        return body && this.o.masking ? maskedFields(this.o.masking!.masker, type, body) : undefined;
      case ServerMessage.commandComplete:
        this.o.masking?.masker.endResult();
        this.copyPlans.delete(this.tracker.currentStatementId);
        this.copyOut = undefined;
        this.tracker.commandComplete(body ? cstring(body, 0)[0] : '');
        return;
      case ServerMessage.errorResponse: {
        const fields = body ? decodeFields(body) : {};
        this.o.masking?.masker.endResult();
        // Cut out by the scanner: the stand-in's own error becomes the refusal; any other error (an earlier
        // message of the same pipeline failed, so the stand-in never ran) is put back, its text masked when
        // masking is on (an error may quote a value: a unique violation's key, an invalid input).
        if (this.tracker.headIsStandIn() && this.standIn.isOwnError(fields.M)) return this.tracker.standInAnswered();
        this.tracker.error(fields);
        if (this.o.masking && body) return maskedFields(this.o.masking!.masker, type, body);
        return body ? encodeServerMessage(type, body) : undefined;
      }
      case ServerMessage.emptyQueryResponse:
        this.tracker.emptyQuery();
        return;
      case ServerMessage.portalSuspended:
        this.o.masking?.masker.endResult();
        this.tracker.portalSuspended();
        return;
      case 0x56:
        this.tracker.commandComplete('FUNCTION CALL');
        return;
      case ServerMessage.readyForQuery:
        this.tracker.readyForQuery();
        this.prepared.syncAnswered(this.tracker.syncPointsCompleted);
        if (this.o.masking) this.maskingSyncAnswered();
        return;
      case ServerMessage.parseComplete:
        this.prepared.parseComplete();
        return;
      case ServerMessage.closeComplete:
        this.prepared.closeComplete();
        return;
      case ServerMessage.parameterStatus: {
        const unsafe = body && unsafeParameterStatus(body);
        if (unsafe) this.endUnsafe(unsafe);
        // A setting's value can carry data too (set_config('application_name', email, false)).
        return body && this.o.masking ? maskedCStrings(this.o.masking!.masker, type, body, 0, [1]) : undefined;
      }
      case ServerMessage.notificationResponse:
        // NOTIFY payloads are whatever a query put there: Int32 pid, channel, payload.
        return body && this.o.masking ? maskedCStrings(this.o.masking!.masker, type, body, 4, [0, 1]) : undefined;
    }
  }

  private statementEnded(r: StatementResult): void {
    if (r.outcome === 'ok') this.prepared.statementSucceeded(r.statementId);
    const m = this.o.masking;
    const masking = m ? m.masker.takeSummary() : this.o.unmaskedBy ? UNMASKED : undefined;
    const record = this.vaultRecord?.statementId === r.statementId ? this.vaultRecord : undefined;
    if (record) {
      // The originals are sealed (and durable) before the statement's end names their record.
      this.vaultRecord = undefined;
      const sealed = record.writer.close().then(
        (ref) => this.o.audit.append(statementEndEvent(r, masking, { id: ref.id, cells: ref.cells, sha256: ref.sha256 }), { durable: false }).catch((err: unknown) => this.failClosed(err)),
        (err: unknown) => this.failClosed(err),
      );
      this.sealing.add(sealed);
      void sealed.finally(() => this.sealing.delete(sealed));
    } else {
      this.o.audit.append(statementEndEvent(r, masking), { durable: false }).catch((err: unknown) => this.failClosed(err));
    }
    const ddl = this.ddlStatements.delete(r.statementId);
    if (m && r.outcome === 'ok' && (ddl || (r.command !== undefined && DDL_TAG.test(r.command)))) this.refreshCatalog(m.catalog);
  }

  // ---- masking ------------------------------------------------------------------------------------

  /** A masked cell's original goes to the vault record of the statement the server is answering. */
  private vaultCell(cell: VaultCell): void {
    const m = this.o.masking!;
    const statementId = this.tracker.currentStatementId;
    if (this.vaultRecord?.statementId !== statementId) {
      // A record left open belongs to a statement that ended without a result of its own: seal it.
      this.vaultRecord?.writer.close().catch((err: unknown) => this.failClosed(err));
      this.vaultRecord = { statementId, writer: m.vault.open({ ...m.meta, statementId, createdAt: new Date().toISOString() }) };
    }
    this.vaultRecord.writer.add(cell);
  }

  /** True when the next RowDescription / NoData answers a Describe Warden sent itself (so is cut out). */
  private nextDescribeIsOwn(): boolean {
    if (this.querySyncPoints.has(this.tracker.syncPointsCompleted + 1)) return false;
    return this.describes[0]?.own === true;
  }

  private rowDescription(body: Buffer | undefined): Buffer | undefined {
    const masker = this.o.masking?.masker;
    if (!masker || !body) return undefined;
    const inQuery = this.querySyncPoints.has(this.tracker.syncPointsCompleted + 1);
    const answers = inQuery ? undefined : this.describes.shift();
    // A statement's description (Describe S) does not know the result formats yet: only a portal's does.
    if (inQuery || answers?.portal) masker.describe(decodeRowDescription(body));
    return answers?.own ? EMPTY : undefined;
  }

  private noData(): Buffer | undefined {
    if (!this.o.masking || this.querySyncPoints.has(this.tracker.syncPointsCompleted + 1)) return undefined;
    const answers = this.describes.shift();
    if (answers?.portal) this.o.masking.masker.endResult();
    return answers?.own ? EMPTY : undefined;
  }

  /** A sync point was answered: Describes of it that got no answer were skipped after an error. */
  private maskingSyncAnswered(): void {
    const done = this.tracker.syncPointsCompleted;
    this.querySyncPoints.delete(done);
    if (this.describes.length > 0) this.describes = this.describes.filter((d) => d.syncPoint > done);
    this.o.masking?.masker.endResult();
    this.copyOut = undefined;
    if (this.tracker.outstanding === 0) this.copyPlans.clear();
  }

  /** One row of COPY TO output, masked (a header line is passed as it is). */
  private copyRow(body: Buffer): Buffer {
    const plan = this.copyOut!;
    if (plan.headerPending) {
      plan.headerPending = false;
      return encodeServerMessage(ServerMessage.copyData, body);
    }
    return maskedCopyRow(this.o.masking!.masker, plan, body);
  }

  /** After DDL the rules are traced again before this session's next statement (a table may have a new OID). */
  private refreshCatalog(catalog: MaskingCatalog): void {
    const p = catalog.refresh().then(
      () => {
        if (this.catalogRefresh === p) this.catalogRefresh = undefined;
        this.pump();
      },
      (err: unknown) => {
        this.o.log.error('masking: column rules could not be traced again after DDL; ending the session (fail closed)', { err });
        this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.cannotConnectNow, message: 'masking is unavailable after a schema change; reconnect' }));
        this.finish('error');
      },
    );
    this.catalogRefresh = p;
  }

  // ---- endings ------------------------------------------------------------------------------------

  private protocolError(err: unknown): void {
    this.o.log.warn('closing connection after a protocol error', { err });
    const message = err instanceof Error && err.name === 'ProtocolFramingError' ? err.message : 'invalid message from the client';
    this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.protocolViolation, message }));
    this.finish('protocol_error');
  }

  /** The server now reads SQL text differently from the parser: nothing more may be decided (fail closed). */
  private endUnsafe(why: string): void {
    if (this.ended) return;
    this.o.log.warn('ending the session: the server reads SQL text differently now', { why });
    this.o.client.write(errorResponse({ severity: 'FATAL', code: SqlState.insufficientPrivilege, message: `session ended by Warden: ${why}, so statements could not be read reliably` }));
    this.finish('error');
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

  /** A CancelRequest for this session: true when it withdrew a statement held for approval (nothing to forward). */
  cancelHeld(): boolean {
    return this.o.held?.cancel() ?? false;
  }

  private finish(reason: SessionEndReason): void {
    if (this.ended) return;
    this.ended = true;
    const withdrawn = this.o.held?.close();
    if (withdrawn) this.sealing.add(withdrawn.catch(() => undefined)); // the session's trail records the withdrawal before it ends
    this.out = [];
    this.tracker.abandon('connection closed before the server answered');
    // Originals already masked are sealed even when the statement never ended.
    if (this.vaultRecord) this.sealing.add(this.vaultRecord.writer.close().catch((err: unknown) => this.o.log.error('masking: a vault record could not be sealed', { err })));
    this.vaultRecord = undefined;
    this.o.client.end();
    this.o.upstream.end();
    // Give both sides a moment to flush their last bytes, then make sure nothing lingers.
    setTimeout(() => {
      this.o.client.destroy();
      this.o.upstream.destroy();
    }, 2000).unref();
    const stats = { ...this.stats };
    if (this.sealing.size === 0) this.o.onEnd(reason, stats);
    else void Promise.allSettled([...this.sealing]).then(() => this.o.onEnd(reason, stats));
  }
}

const DISCARD: Step = Object.freeze({ send: null });
const EMPTY = Buffer.alloc(0);
const UNMASKED: MaskingSummary = Object.freeze({ columns: [], detectors: [], unmasked: true });

/** Command tags after which a masked target's column rules are traced again. */
const DDL_TAG = /^(CREATE|ALTER|DROP|SELECT INTO|IMPORT FOREIGN SCHEMA)\b/;

function describePortalMessage(portal: string): Buffer {
  const name = Buffer.from(`P${portal}\0`, 'utf8');
  const b = Buffer.allocUnsafe(5 + name.length);
  b[0] = ClientMessage.describe;
  b.writeInt32BE(4 + name.length, 1);
  name.copy(b, 5);
  return b;
}

/** The decision recorded for an empty statement (nothing to decide: the server answers EmptyQueryResponse). */
const EMPTY_STATEMENT: Decision = Object.freeze({ effect: 'allow', policies: Object.freeze(['builtin.empty-statement']) });
