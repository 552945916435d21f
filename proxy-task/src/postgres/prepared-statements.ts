/**
 * The prepared statements of one session as the server holds them, so that an Execute (and SQL
 * `EXECUTE name`) is recorded and judged as the statement that really runs.
 *
 * Definitions and removals take effect only when the server confirms them: a Parse at its ParseComplete,
 * a Close at its CloseComplete, SQL PREPARE / DEALLOCATE / DISCARD ALL at their CommandComplete. Until
 * then they are pending, in the order sent; a lookup sees the confirmed state with the pending changes
 * applied (what the server will hold if they succeed: if one fails, the server skips the rest of its
 * pipeline anyway). Pending changes of a sync point the server has answered without confirming them
 * failed or were skipped, and are dropped. A named Parse of a name the server already holds fails there,
 * and so changes nothing here either.
 */
import type { Decision } from '../../../core/policy/decision.ts';
import type { StatementClass } from '../../../core/sql/classify.ts';

export interface Prepared {
  readonly text: string;
  /** What an Execute of it runs (the first statement; a Parse of several fails at the server). */
  readonly statement: StatementClass | undefined;
  readonly readOnly: boolean;
  readonly decision: Decision;
}

type Change =
  | { kind: 'parse'; name: string; prepared: Prepared; syncPoint: number }
  | { kind: 'close'; name: string; syncPoint: number }
  | { kind: 'sql'; statementId: number; name: string | undefined; prepared: Prepared | undefined; syncPoint: number };

export class PreparedStatements {
  private readonly confirmed = new Map<string, Prepared>();
  private pending: Change[] = [];

  /** What the name will stand for once everything sent so far has run. */
  lookup(name: string): Prepared | undefined {
    let p = this.confirmed.get(name);
    for (const c of this.pending) {
      if (c.kind === 'sql' && c.name === undefined) p = undefined; // DEALLOCATE ALL / DISCARD ALL
      else if (c.name !== name) continue;
      else if (c.kind === 'close') p = undefined;
      else if (c.prepared) p = c.name === '' ? c.prepared : (p ?? c.prepared); // redefining a named one fails at the server
      else p = undefined; // DEALLOCATE name
    }
    return p;
  }

  /** A Parse was forwarded; it belongs to the sync point its Sync will close. */
  parseSent(name: string, prepared: Prepared, syncPoint: number): void {
    this.pending.push({ kind: 'parse', name, prepared, syncPoint });
  }

  closeSent(name: string, syncPoint: number): void {
    this.pending.push({ kind: 'close', name, syncPoint });
  }

  /**
   * SQL PREPARE (prepared given), DEALLOCATE name (prepared undefined) or DEALLOCATE ALL / DISCARD ALL
   * (name undefined) was forwarded as statement `statementId`.
   */
  sqlSent(statementId: number, name: string | undefined, prepared: Prepared | undefined, syncPoint: number): void {
    this.pending.push({ kind: 'sql', statementId, name, prepared, syncPoint });
  }

  parseComplete(): void {
    const c = this.takeFirst('parse');
    if (c?.kind === 'parse' && (c.name === '' || !this.confirmed.has(c.name))) this.confirmed.set(c.name, c.prepared);
  }

  closeComplete(): void {
    const c = this.takeFirst('close');
    if (c?.kind === 'close') this.confirmed.delete(c.name);
  }

  /** A statement of a simple Query completed without error. */
  statementSucceeded(statementId: number): void {
    const i = this.pending.findIndex((c) => c.kind === 'sql' && c.statementId === statementId);
    if (i < 0) return;
    const c = this.pending.splice(i, 1)[0]!;
    if (c.kind !== 'sql') return;
    if (c.name === undefined) this.confirmed.clear();
    else if (c.prepared) {
      if (!this.confirmed.has(c.name)) this.confirmed.set(c.name, c.prepared);
    } else this.confirmed.delete(c.name);
  }

  /** The server answered a sync point: what it did not confirm there did not happen. */
  syncAnswered(syncPoint: number): void {
    if (this.pending.length > 0) this.pending = this.pending.filter((c) => c.syncPoint > syncPoint);
  }

  private takeFirst(kind: 'parse' | 'close'): Change | undefined {
    const i = this.pending.findIndex((c) => c.kind === kind);
    return i < 0 ? undefined : this.pending.splice(i, 1)[0];
  }
}
