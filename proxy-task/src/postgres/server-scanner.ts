/**
 * Finds message boundaries in the byte stream a PostgreSQL server sends, without copying it.
 *
 * The relay forwards server chunks to the client unchanged; this scanner only walks the headers so the
 * session can see what happened (CommandComplete tags, errors, ReadyForQuery...). Bodies are assembled
 * only for the message types the caller asks to see; a DataRow of 1 GB costs nothing but its header.
 * The one exception: a message the caller asks to drop (the server's answer to a statement Warden put in
 * place of a refused one) is cut out and replaced, so the client sees Warden's refusal in its place.
 */
import { ProtocolFramingError } from './client-framer.ts';

/**
 * Called for every complete message; bodies only for the inspected types (and for dropped messages).
 * For a message the scanner dropped, the bytes returned take its place in the stream.
 */
export type ServerMessageHandler = (type: number, body: Buffer | undefined) => Buffer | undefined | void;

/** Bodies larger than this are never assembled for inspection (such a message is then reported without a body). */
const MAX_INSPECTED_BODY = 1024 * 1024;

export class ServerScanner {
  private header = Buffer.alloc(5);
  private headerHave = 0;
  private type = 0;
  private remaining = 0;
  private inspecting = false;
  private dropping = false;
  private parts: Buffer[] = [];

  /**
   * @param inspect type bytes whose bodies are passed to the handler (others, and bodies over 1 MiB, get `undefined`).
   * @param drop asked when a message starts, with its type byte: true cuts the message out of the stream
   *   (its body is then always assembled) and puts what the handler returns in its place.
   */
  constructor(
    private readonly inspect: ReadonlySet<number>,
    private readonly onMessage: ServerMessageHandler,
    private readonly maxMessageBytes = 1024 * 1024 * 1024,
    private readonly drop?: (type: number) => boolean,
  ) {}

  /**
   * Walks a chunk; messages it completes are reported in order. Returns `undefined` when the chunk is to be
   * forwarded as it is, or the pieces to forward instead when a message was cut out of it.
   */
  scan(chunk: Buffer): Buffer[] | undefined {
    let i = 0;
    const n = chunk.length;
    let out: Buffer[] | undefined = this.dropping ? [] : undefined;
    let keepFrom = this.dropping ? n : 0;
    while (i < n) {
      if (this.remaining === 0 && this.headerHave < 5) {
        if (this.headerHave === 0 && this.drop !== undefined && this.drop(chunk[i]!)) {
          out ??= [];
          if (i > keepFrom) out.push(chunk.subarray(keepFrom, i));
          keepFrom = n;
          this.dropping = true;
        }
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
          if (this.headerHave < 5) break;
          this.type = this.header[0]!;
          this.startBody(this.header.readInt32BE(1));
        }
        if (this.remaining === 0) ({ out, keepFrom } = this.finish(out, keepFrom, i));
        continue;
      }
      const take = Math.min(this.remaining, n - i);
      if (this.inspecting) this.parts.push(chunk.subarray(i, i + take));
      this.remaining -= take;
      i += take;
      if (this.remaining === 0) ({ out, keepFrom } = this.finish(out, keepFrom, i));
    }
    if (out && keepFrom < n) out.push(chunk.subarray(keepFrom));
    return out;
  }

  private startBody(len: number): void {
    if (len < 4 || len > this.maxMessageBytes) throw new ProtocolFramingError(`invalid server message length ${len}`);
    this.remaining = len - 4;
    this.inspecting = this.dropping || (this.inspect.has(this.type) && this.remaining <= MAX_INSPECTED_BODY);
    this.headerHave = 5;
  }

  private finish(out: Buffer[] | undefined, keepFrom: number, end: number): { out: Buffer[] | undefined; keepFrom: number } {
    const body = this.inspecting ? (this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts)) : undefined;
    this.parts = [];
    this.headerHave = 0;
    this.inspecting = false;
    const replacement = this.onMessage(this.type, body);
    if (!this.dropping) return { out, keepFrom };
    this.dropping = false;
    const pieces = out ?? [];
    if (replacement && replacement.length > 0) pieces.push(replacement);
    return { out: pieces, keepFrom: end };
  }
}

/** A server message as bytes again (type, length, body): to put back a message that was cut out for a look. */
export function encodeServerMessage(type: number, body: Buffer): Buffer {
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = type;
  b.writeInt32BE(body.length + 4, 1);
  body.copy(b, 5);
  return b;
}
