/**
 * A tiny raw PostgreSQL wire-protocol client for adversarial tests: it sends exactly the bytes it is
 * given and reads framed server messages (type byte + body) with timeouts, so a test can see what a
 * server (Warden) answers to malformed, truncated or unusual input that no real driver would send.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';

export interface ServerMsg {
  /** The type character, e.g. 'R', 'E', 'Z'. */
  type: string;
  body: Buffer;
}

/** Fields of an ErrorResponse / NoticeResponse by their one-letter codes: C = SQLSTATE, M = message, S = severity. */
export type ErrorFields = Record<string, string>;

export function decodeErrorFields(body: Buffer): ErrorFields {
  const out: ErrorFields = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    out[code] = body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return out;
}

export class RawTimeoutError extends Error {
  constructor(what: string) {
    super(`timed out waiting for ${what}`);
    this.name = 'RawTimeoutError';
  }
}

export class RawClosedError extends Error {
  constructor(what: string) {
    super(`connection closed while waiting for ${what}`);
    this.name = 'RawClosedError';
  }
}

/** The outcome of a login attempt through `login()`. */
export interface LoginResult {
  ok: boolean;
  /** The ErrorResponse that refused the login, when one came. */
  error?: ErrorFields;
  /** BackendKeyData: process id and secret key the server handed out. */
  backendKey?: { processId: number; secretKey: number };
  parameters: Map<string, string>;
  /** Every message received during the login. */
  messages: ServerMsg[];
}

export interface QueryResult {
  /** Text values of every DataRow (null for SQL NULL). */
  rows: (string | null)[][];
  error?: ErrorFields;
  /** Transaction status from ReadyForQuery, when it came. */
  status?: string;
  messages: ServerMsg[];
}

export interface LoginOptions {
  user: string;
  database?: string;
  password?: string;
  /** Send SSLRequest first and upgrade to TLS when the server answers 'S' (certificate not checked). */
  ssl?: boolean;
  /** Extra startup parameters (options, application_name, replication...). */
  params?: Record<string, string>;
  timeoutMs?: number;
}

export class RawClient {
  private sock: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private closedFlag = false;
  private wake: (() => void) | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    this.notify();
  };
  private readonly onClose = (): void => {
    this.closedFlag = true;
    this.notify();
  };

  private constructor(sock: net.Socket) {
    this.sock = sock;
    this.listen(sock);
  }

  static connect(port: number, host = '127.0.0.1', timeoutMs = 5000): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new RawTimeoutError('the TCP connection'));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.setNoDelay(true);
        resolve(new RawClient(s));
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** The socket in use (a TLSSocket after `upgradeTls()`). */
  get socket(): net.Socket {
    return this.sock;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get encrypted(): boolean {
    return this.sock instanceof tls.TLSSocket;
  }

  /** Bytes received but not read yet. */
  get buffered(): number {
    return this.buf.length;
  }

  write(data: Buffer | string): void {
    if (!this.sock.destroyed) this.sock.write(data);
  }

  /** Half-closes (FIN) after writing `data`. */
  end(data?: Buffer): void {
    if (this.sock.destroyed) return;
    if (data) this.sock.end(data);
    else this.sock.end();
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** Exactly n bytes, or rejects on close / timeout. */
  async readBytes(n: number, timeoutMs = 5000, what = `${n} byte(s)`): Promise<Buffer> {
    await this.waitFor(() => this.buf.length >= n, timeoutMs, what);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** The next framed server message. */
  async next(timeoutMs = 5000): Promise<ServerMsg> {
    await this.waitFor(() => this.buf.length >= 5 && this.buf.length >= 1 + this.buf.readInt32BE(1), timeoutMs, 'a server message');
    const len = this.buf.readInt32BE(1);
    const msg = { type: String.fromCharCode(this.buf[0]!), body: Buffer.from(this.buf.subarray(5, 1 + len)) };
    this.buf = this.buf.subarray(1 + len);
    return msg;
  }

  /** Messages until (and including) the first one `stop` accepts; rejects on close or timeout. */
  async until(stop: (m: ServerMsg) => boolean, timeoutMs = 5000): Promise<ServerMsg[]> {
    const deadline = Date.now() + timeoutMs;
    const out: ServerMsg[] = [];
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      out.push(m);
      if (stop(m)) return out;
    }
  }

  /** Every message until the server closes the connection (or the timeout; then `timedOut`). */
  async drain(timeoutMs = 5000): Promise<{ messages: ServerMsg[]; closed: boolean; rest: Buffer }> {
    const messages: ServerMsg[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        messages.push(await this.next(Math.max(1, deadline - Date.now())));
      } catch (err) {
        if (err instanceof RawClosedError) return { messages, closed: true, rest: this.buf };
        if (err instanceof RawTimeoutError) return { messages, closed: this.closedFlag, rest: this.buf };
        throw err;
      }
    }
  }

  /** Resolves true once the server closed the connection, false if it is still open after timeoutMs. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    try {
      await this.waitFor(() => false, timeoutMs, 'close');
      return true;
    } catch (err) {
      if (err instanceof RawClosedError) return true;
      if (err instanceof RawTimeoutError) return false;
      throw err;
    }
  }

  /** SSLRequest; returns the server's one-byte answer ('S' or 'N'). */
  async sslRequest(timeoutMs = 5000): Promise<string> {
    this.write(serialize.requestSsl());
    return (await this.readBytes(1, timeoutMs, 'the SSLRequest answer')).toString('latin1');
  }

  /** GSSENCRequest; returns the server's one-byte answer. */
  async gssEncRequest(timeoutMs = 5000): Promise<string> {
    this.write(gssEncRequest());
    return (await this.readBytes(1, timeoutMs, 'the GSSENCRequest answer')).toString('latin1');
  }

  /** TLS handshake over the current socket (after an 'S' answer). No certificate checks. */
  upgradeTls(opts: tls.ConnectionOptions = {}, timeoutMs = 5000): Promise<void> {
    if (this.buf.length > 0) throw new Error('unread bytes before the TLS handshake');
    const raw = this.sock;
    raw.off('data', this.onData);
    raw.off('close', this.onClose);
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: raw, rejectUnauthorized: false, ...opts });
      const timer = setTimeout(() => {
        t.destroy();
        reject(new RawTimeoutError('the TLS handshake'));
      }, timeoutMs);
      t.once('secureConnect', () => {
        clearTimeout(timer);
        t.removeAllListeners('error');
        this.sock = t;
        this.listen(t);
        resolve();
      });
      t.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** StartupMessage (protocol 3.0) with the given parameters. */
  startup(params: Record<string, string>): void {
    this.write(serialize.startup(params));
  }

  password(password: string): void {
    this.write(serialize.password(password));
  }

  /**
   * The whole login: optional SSLRequest + TLS, startup, the password when asked, then messages up to
   * ReadyForQuery (ok) or an ErrorResponse (refused).
   */
  async login(o: LoginOptions): Promise<LoginResult> {
    const timeoutMs = o.timeoutMs ?? 10_000;
    if (o.ssl) {
      const answer = await this.sslRequest(timeoutMs);
      if (answer === 'S') await this.upgradeTls({}, timeoutMs);
    }
    this.startup({ user: o.user, ...(o.database ? { database: o.database } : {}), ...o.params });
    const messages: ServerMsg[] = [];
    const parameters = new Map<string, string>();
    let backendKey: LoginResult['backendKey'];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      messages.push(m);
      if (m.type === 'E') return { ok: false, error: decodeErrorFields(m.body), parameters, messages };
      if (m.type === 'R') {
        const code = m.body.readInt32BE(0);
        if (code === 3) this.password(o.password ?? '');
        else if (code !== 0) throw new Error(`unexpected authentication request ${code}`);
      } else if (m.type === 'K') {
        backendKey = { processId: m.body.readInt32BE(0), secretKey: m.body.readInt32BE(4) };
      } else if (m.type === 'S') {
        const [k, v] = m.body.toString('utf8').split('\0');
        parameters.set(k!, v ?? '');
      } else if (m.type === 'Z') {
        return { ok: true, parameters, messages, ...(backendKey ? { backendKey } : {}) };
      }
    }
  }

  /** A simple-protocol Query; collects rows until ReadyForQuery (or the connection's end after a FATAL). */
  async query(sql: string, timeoutMs = 10_000): Promise<QueryResult> {
    this.write(serialize.query(sql));
    return this.readResult(timeoutMs);
  }

  /** Reads DataRows / ErrorResponse until ReadyForQuery (or a FATAL error followed by close). */
  async readResult(timeoutMs = 10_000): Promise<QueryResult> {
    const messages: ServerMsg[] = [];
    const rows: (string | null)[][] = [];
    let error: ErrorFields | undefined;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let m: ServerMsg;
      try {
        m = await this.next(Math.max(1, deadline - Date.now()));
      } catch (err) {
        if (err instanceof RawClosedError && error) return { rows, error, messages };
        throw err;
      }
      messages.push(m);
      if (m.type === 'D') rows.push(decodeDataRow(m.body));
      else if (m.type === 'E') error ??= decodeErrorFields(m.body);
      else if (m.type === 'Z') return { rows, ...(error ? { error } : {}), status: m.body.toString('latin1', 0, 1), messages };
    }
  }

  private listen(s: net.Socket): void {
    s.on('data', this.onData);
    s.on('close', this.onClose);
    s.on('error', () => undefined);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async waitFor(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (ready()) return;
      if (this.closedFlag) throw new RawClosedError(what);
      const left = deadline - Date.now();
      if (left <= 0) throw new RawTimeoutError(what);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.wake = undefined;
          resolve();
        }, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

/** A compact view of a server message: its type, then what identifies it (an error's detail with `withDetail`). */
export function describeMsg(m: ServerMsg, withDetail = false): string {
  switch (m.type) {
    case 'C':
      return `C ${m.body.toString('utf8', 0, m.body.length - 1)}`;
    case 'E': {
      const f = decodeErrorFields(m.body);
      return withDetail ? `E ${f.C} ${f.M} | ${f.D}` : `E ${f.C} ${f.M}`;
    }
    case 'Z':
      return `Z ${m.body.toString('latin1', 0, 1)}`;
    default:
      return m.type;
  }
}

export function decodeDataRow(body: Buffer): (string | null)[] {
  const n = body.readInt16BE(0);
  const out: (string | null)[] = [];
  let i = 2;
  for (let k = 0; k < n; k++) {
    const len = body.readInt32BE(i);
    i += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.toString('utf8', i, i + len));
      i += len;
    }
  }
  return out;
}

/** An untyped startup-phase packet: length, then a 32-bit code (protocol version or request code), then `rest`. */
export function startupPacket(code: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(8 + rest.length);
  b.writeInt32BE(8 + rest.length, 0);
  b.writeInt32BE(code, 4);
  rest.copy(b, 8);
  return b;
}

/** A typed message with a correct length field. */
export function typedMessage(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(5 + body.length);
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

export const GSSENC_REQUEST_CODE = 80877104;
export const SSL_REQUEST_CODE = 80877103;
export const CANCEL_REQUEST_CODE = 80877102;

export const gssEncRequest = (): Buffer => startupPacket(GSSENC_REQUEST_CODE);

export function cancelRequest(processId: number, secretKey: number): Buffer {
  return serialize.cancel(processId, secretKey);
}

/** Text that must never reach a client: internal exception names, stack frames, source paths. */
export const INTERNAL_LEAK = /TypeError|RangeError|ReferenceError|SyntaxError|AssertionError|ERR_[A-Z_]{4,}|\bat [\w.<>]+ \(|\.ts\b|\.m?js\b|node_modules|node:internal|\/work\/|\/tmp\/|\/home\//;
