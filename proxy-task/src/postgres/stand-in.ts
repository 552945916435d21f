/**
 * The stand-in of a refused statement. Warden does not answer a refusal on its own: it sends the server,
 * in the refused message's place, a statement that fails to parse, and gives the client its refusal in
 * place of the server's syntax error. The server thereby fails exactly where the refused statement would
 * have run: an open transaction block is aborted (a later COMMIT rolls back, as after a real permission
 * error), an extended-protocol pipeline skips to its Sync, and the transaction status in ReadyForQuery is
 * the server's own. A syntax error needs no privilege, no catalog lookup and no search_path, so nothing
 * the client has set up can make the stand-in succeed.
 *
 * Rejected alternatives: answering the refusal locally (the server's transaction would go on and COMMIT
 * would commit the work before the refused statement); `DO $$ ... RAISE $$` (needs PL/pgSQL and runs code).
 */
import { randomBytes } from 'node:crypto';

export class StandIn {
  /** Unguessable per session, so no error the client provokes itself can pass for the stand-in's. */
  readonly marker = `warden_refused_${randomBytes(12).toString('hex')}`;
  private readonly text = `/* Warden: statement refused by policy and not executed */ ${this.marker}`;

  /** A simple Query that fails at the parser. */
  query(): Buffer {
    return message('Q', [cstr(this.text)]);
  }

  /**
   * A Parse that fails at the parser. Named like the refused Parse, so the server forgets a previous
   * unnamed statement just as a failing Parse of the client's would make it.
   */
  parse(statementName: string = this.marker): Buffer {
    return message('P', [cstr(statementName), cstr(this.text), Buffer.from([0, 0])]);
  }

  /** True when a server error message is the stand-in's own syntax error. */
  isOwnError(message: string | undefined): boolean {
    return message !== undefined && message.includes(this.marker);
  }
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, 'utf8');
}

function message(type: string, parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(body.length + 4, 1);
  body.copy(b, 5);
  return b;
}
