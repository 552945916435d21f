/**
 * Pairs statements forwarded to the server with the server's answers, so each statement's audit event
 * can be closed with its outcome, row count and duration.
 *
 * The server answers in order. Each forwarded statement opens a slot; CommandComplete, EmptyQueryResponse,
 * PortalSuspended and ErrorResponse close the oldest open slot. Each Query and each Sync is a sync point
 * that ReadyForQuery ends: slots of a sync point still open then were skipped by the server after an
 * error (the server discards the rest of a Query, or everything up to Sync, once one message failed).
 */
import { rowsFromCommandTag } from './backend-messages.ts';

export type StatementOutcome = 'ok' | 'error' | 'denied' | 'cancelled';

export interface StatementResult {
  statementId: number;
  outcome: StatementOutcome;
  command?: string;
  rows?: number;
  sqlstate?: string;
  error?: string;
  durationMs: number;
}

interface Slot {
  /** 0 for the stand-in of a refused statement (see openStandIn). */
  statementId: number;
  syncPoint: number;
  started: bigint;
  rows: number;
  /** A stand-in's: the ErrorResponse the client gets in place of the stand-in's error. */
  refusal?: Buffer;
}

const QUERY_CANCELED = '57014';

export class StatementTracker {
  private slots: Slot[] = [];
  private head = 0;
  private syncPointsSent = 0;
  private syncPointsAnswered = 0;

  constructor(private readonly onResult: (r: StatementResult) => void) {}

  /** Sync points (Query or Sync) forwarded so far; an extended-protocol message belongs to the next one. */
  get syncPointsForwarded(): number {
    return this.syncPointsSent;
  }

  /** Sync points answered with ReadyForQuery so far. */
  get syncPointsCompleted(): number {
    return this.syncPointsAnswered;
  }

  /** Sync points (Query or Sync) forwarded and not yet answered with ReadyForQuery. */
  get outstanding(): number {
    return this.syncPointsSent - this.syncPointsAnswered;
  }

  /** A simple Query is a sync point of its own; call before opening its statements' slots. */
  beginQuery(): void {
    this.syncPointsSent++;
  }

  /** A Sync message of the extended protocol. */
  sync(): void {
    this.syncPointsSent++;
  }

  /**
   * Opens a slot for a statement. In a simple Query its slots belong to the Query's sync point (call after
   * beginQuery); in the extended protocol an Execute belongs to the next Sync.
   */
  open(statementId: number, extended: boolean): void {
    this.slots.push({
      statementId,
      syncPoint: extended ? this.syncPointsSent + 1 : this.syncPointsSent,
      started: process.hrtime.bigint(),
      rows: 0,
    });
  }

  /**
   * Opens the slot of a stand-in: a statement that cannot succeed, sent in place of a refused one so that
   * the server fails exactly where the refused statement would have run (aborting the transaction or the
   * pipeline as a real error does). Its error is the client's refusal; see headIsStandIn.
   */
  openStandIn(extended: boolean, refusal: Buffer): void {
    this.open(0, extended);
    this.slots[this.slots.length - 1]!.refusal = refusal;
  }

  /** The statement whose answers the server is sending now (0 when none, or a stand-in). */
  get currentStatementId(): number {
    return this.slots[this.head]?.statementId ?? 0;
  }

  /** True when the next error of the current sync point may be the stand-in's own. */
  headIsStandIn(): boolean {
    const s = this.slots[this.head];
    return s !== undefined && s.statementId === 0 && s.syncPoint === this.syncPointsAnswered + 1;
  }

  /** The stand-in failed as intended: its slot closes without a result; returns the refusal to send instead. */
  standInAnswered(): Buffer | undefined {
    if (!this.headIsStandIn()) return undefined;
    return this.slots[this.head++]!.refusal;
  }

  dataRow(): void {
    const s = this.slots[this.head];
    if (s) s.rows++;
  }

  commandComplete(tag: string): void {
    const s = this.shift();
    if (s) this.emit(s, { outcome: 'ok', command: tag, rows: rowsFromCommandTag(tag) ?? s.rows });
  }

  portalSuspended(): void {
    const s = this.shift();
    if (s) this.emit(s, { outcome: 'ok', command: 'portal suspended', rows: s.rows });
  }

  emptyQuery(): void {
    const s = this.shift();
    if (s) this.emit(s, { outcome: 'ok', command: 'EMPTY', rows: 0 });
  }

  error(fields: Record<string, string>): void {
    const current = this.syncPointsAnswered + 1;
    const s = this.slots[this.head];
    // An error of a Parse/Bind before any Execute of this sync point has no slot of its own, and no other
    // error closes a stand-in.
    if (!s || s.syncPoint !== current || s.statementId === 0) return;
    this.shift();
    this.emit(s, {
      outcome: fields.C === QUERY_CANCELED ? 'cancelled' : 'error',
      sqlstate: fields.C,
      error: fields.M,
      rows: s.rows,
    });
  }

  readyForQuery(): void {
    this.syncPointsAnswered++;
    const answered = this.syncPointsAnswered;
    for (let s = this.slots[this.head]; s && s.syncPoint <= answered; s = this.slots[this.head]) {
      this.shift();
      this.emit(s, { outcome: 'error', error: 'not executed: an earlier message of the same batch failed' });
    }
    if (this.head > 1024 && this.head * 2 > this.slots.length) {
      this.slots = this.slots.slice(this.head);
      this.head = 0;
    }
  }

  /** Closes every open slot (the connection ended). */
  abandon(reason: string): void {
    for (let s = this.shift(); s; s = this.shift()) this.emit(s, { outcome: 'error', error: reason });
  }

  private shift(): Slot | undefined {
    const s = this.slots[this.head];
    if (s) this.head++;
    return s;
  }

  private emit(s: Slot, r: Omit<StatementResult, 'statementId' | 'durationMs'>): void {
    if (s.statementId === 0) return; // a stand-in: its statement's outcome was recorded when it was refused
    const durationMs = Number(process.hrtime.bigint() - s.started) / 1e6;
    this.onResult({ statementId: s.statementId, durationMs, ...r });
  }
}
