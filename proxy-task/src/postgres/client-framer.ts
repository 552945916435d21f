/**
 * Frames the byte stream a PostgreSQL client sends into whole messages.
 *
 * pg-protocol's Parser only decodes server messages and trusts length fields, so the proxy has its own
 * framer for the other direction: startup-phase messages carry no type byte, and a hostile length field
 * (below 4, or above the configured maximum) must stop the connection instead of making us buffer.
 * It never errors on an incomplete buffer; it keeps the rest for the next chunk.
 */

export class ProtocolFramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolFramingError';
  }
}

export interface FramedMessage {
  /** Type byte, or 0 for an untyped startup-phase message. */
  readonly type: number;
  /** The whole message as received (type byte and length included), ready to forward unchanged. */
  readonly raw: Buffer;
  /** The body after the length field. */
  readonly body: Buffer;
}

/** Startup packets are small; PostgreSQL itself caps them at 10000 bytes (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10_000;

export class ClientFramer {
  // Chunks are kept as received and joined only once a whole message is there, so a large message
  // arriving in many small chunks costs one copy, not one per chunk.
  private chunks: Buffer[] = [];
  private total = 0;
  /** While true the next message has no type byte (StartupMessage, SSLRequest, CancelRequest...). */
  untyped = true;

  constructor(private readonly maxMessageBytes: number) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Bytes received but not yet returned as a message. */
  get pending(): number {
    return this.total;
  }

  /** The next complete message, or undefined when more bytes are needed. Throws ProtocolFramingError on a bad length. */
  next(): FramedMessage | undefined {
    if (this.untyped) {
      if (this.total < 4) return undefined;
      const len = this.head(4).readInt32BE(0);
      if (len < 8 || len > MAX_STARTUP_PACKET) throw new ProtocolFramingError(`invalid startup packet length ${len}`);
      if (this.total < len) return undefined;
      const raw = this.take(len);
      return { type: 0, raw, body: raw.subarray(4) };
    }
    if (this.total < 5) return undefined;
    const h = this.head(5);
    const type = h[0]!;
    const len = h.readInt32BE(1);
    if (len < 4) throw new ProtocolFramingError(`invalid message length ${len}`);
    if (len + 1 > this.maxMessageBytes) {
      throw new ProtocolFramingError(`message of ${len + 1} bytes exceeds the limit of ${this.maxMessageBytes} bytes`);
    }
    if (this.total < len + 1) return undefined;
    const raw = this.take(len + 1);
    return { type, raw, body: raw.subarray(5) };
  }

  /** Hands over the bytes not yet framed (for a caller that takes the stream over). */
  takeRemaining(): Buffer[] {
    const out = this.chunks;
    this.chunks = [];
    this.total = 0;
    return out;
  }

  /** Makes the first chunk at least n bytes long (n <= total) and returns it. */
  private head(n: number): Buffer {
    let first = this.chunks[0]!;
    if (first.length >= n) return first;
    let have = 0;
    let k = 0;
    while (have < n) have += this.chunks[k++]!.length;
    first = Buffer.concat(this.chunks.slice(0, k), have);
    this.chunks.splice(0, k, first);
    return first;
  }

  private take(n: number): Buffer {
    const first = this.head(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.total -= n;
    return out;
  }
}
