/**
 * Finds message boundaries in the byte stream a PostgreSQL server sends, without copying it.
 *
 * The relay forwards server chunks to the client unchanged; this scanner only walks the headers so the
 * session can see what happened (CommandComplete tags, errors, ReadyForQuery...). Bodies are assembled
 * only for the message types the caller asks to see; a DataRow of 1 GB costs nothing but its header.
 */
import { ProtocolFramingError } from './client-framer.ts';

export type ServerMessageHandler = (type: number, body: Buffer | undefined) => void;

/** Bodies larger than this are never assembled for inspection (such a message is then reported without a body). */
const MAX_INSPECTED_BODY = 1024 * 1024;

export class ServerScanner {
  private header = Buffer.alloc(5);
  private headerHave = 0;
  private type = 0;
  private remaining = 0;
  private inspecting = false;
  private parts: Buffer[] = [];

  /** @param inspect type bytes whose bodies are passed to the handler (others, and bodies over 1 MiB, get `undefined`). */
  constructor(
    private readonly inspect: ReadonlySet<number>,
    private readonly onMessage: ServerMessageHandler,
    private readonly maxMessageBytes = 1024 * 1024 * 1024,
  ) {}

  /** Walks a chunk; messages it completes are reported in order. */
  scan(chunk: Buffer): void {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.remaining === 0 && this.headerHave < 5) {
        // Fast path: a whole header inside this chunk.
        if (this.headerHave === 0 && n - i >= 5) {
          this.type = chunk[i]!;
          this.startBody(chunk.readInt32BE(i + 1));
          i += 5;
        } else {
          const take = Math.min(5 - this.headerHave, n - i);
          chunk.copy(this.header, this.headerHave, i, i + take);
          this.headerHave += take;
          i += take;
          if (this.headerHave < 5) return;
          this.type = this.header[0]!;
          this.startBody(this.header.readInt32BE(1));
        }
        if (this.remaining === 0) this.finish();
        continue;
      }
      const take = Math.min(this.remaining, n - i);
      if (this.inspecting) this.parts.push(chunk.subarray(i, i + take));
      this.remaining -= take;
      i += take;
      if (this.remaining === 0) this.finish();
    }
  }

  private startBody(len: number): void {
    if (len < 4 || len > this.maxMessageBytes) throw new ProtocolFramingError(`invalid server message length ${len}`);
    this.remaining = len - 4;
    this.inspecting = this.inspect.has(this.type) && this.remaining <= MAX_INSPECTED_BODY;
    this.headerHave = 5;
  }

  private finish(): void {
    const body = this.inspecting ? (this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts)) : undefined;
    this.parts = [];
    this.headerHave = 0;
    this.inspecting = false;
    this.onMessage(this.type, body);
  }
}
