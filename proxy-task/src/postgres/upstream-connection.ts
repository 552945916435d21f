/**
 * Opens the connection from Warden to a target PostgreSQL server and logs in with the target credential.
 * Returns once the server said ReadyForQuery, with what the client must be told (ParameterStatus...).
 */
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import { ClientFramer, type FramedMessage } from './client-framer.ts';
import { AuthCode, ServerMessage } from './protocol-codes.ts';
import { cstring, decodeFields } from './backend-messages.ts';
import { md5PasswordResponse, ScramClient, UpstreamAuthError } from './upstream-auth.ts';

export interface UpstreamTls {
  mode: 'disable' | 'require' | 'verify-full';
  ca?: string | Buffer;
  serverName?: string;
}

export interface UpstreamLogin {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  tls: UpstreamTls;
  /** Startup parameters passed through from the client (application_name, options, DateStyle...). */
  parameters: ReadonlyMap<string, string>;
  timeoutMs: number;
}

export interface UpstreamSession {
  socket: net.Socket;
  tls: boolean;
  backendPid: number;
  backendSecret: number;
  /** Raw ParameterStatus and NoticeResponse messages sent during login, to replay to the client. */
  replay: Buffer[];
  transactionStatus: string;
  /** Bytes the server sent after ReadyForQuery in the same chunk (normally none). */
  rest: Buffer[];
}

/** The server refused the login or the connection failed. `fields` holds the server's ErrorResponse. */
export class UpstreamConnectError extends Error {
  constructor(
    message: string,
    readonly fields?: Record<string, string>,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamConnectError';
  }
}

const MAX_LOGIN_MESSAGE = 1024 * 1024;

export async function connectUpstream(login: UpstreamLogin): Promise<UpstreamSession> {
  let socket: net.Socket = await openSocket(login.host, login.port, login.timeoutMs);
  let secure = false;
  try {
    if (login.tls.mode !== 'disable') {
      socket = await negotiateTls(socket, login);
      secure = true;
    }
    socket.setNoDelay(true);
    return await authenticate(socket, secure, login);
  } catch (err) {
    socket.destroy();
    throw err instanceof UpstreamConnectError ? err : new UpstreamConnectError(describe(err), undefined, { cause: err });
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function openSocket(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UpstreamConnectError(`connection to ${host}:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamConnectError(`connection to ${host}:${port} failed: ${err.message}`, undefined, { cause: err }));
    });
  });
}

/** SSLRequest, then a TLS handshake when the server answers `S`. */
export async function negotiateTls(socket: net.Socket, login: Pick<UpstreamLogin, 'host' | 'tls' | 'timeoutMs'>): Promise<net.Socket> {
  socket.write(serialize.requestSsl());
  const answer = await readBytes(socket, 1, login.timeoutMs);
  if (answer[0] !== 0x53) throw new UpstreamConnectError('the target does not accept TLS but the target configuration requires it');
  const verify = login.tls.mode === 'verify-full';
  const servername = login.tls.serverName ?? (net.isIP(login.host) ? undefined : login.host);
  return new Promise((resolve, reject) => {
    const t = tls.connect({
      socket,
      servername,
      ca: login.tls.ca,
      rejectUnauthorized: verify,
      // verify-full checks the host name against the certificate; `require` only encrypts, like libpq.
      checkServerIdentity: verify ? (_h, cert) => tls.checkServerIdentity(login.tls.serverName ?? login.host, cert) : () => undefined,
    });
    t.once('secureConnect', () => {
      t.removeAllListeners('error');
      resolve(t);
    });
    t.once('error', (err) => reject(new UpstreamConnectError(`TLS to the target failed: ${err.message}`, undefined, { cause: err })));
  });
}

function readBytes(socket: net.Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new UpstreamConnectError('the target did not answer in time')), timeoutMs);
    const onData = (chunk: Buffer): void => {
      cleanup();
      if (chunk.length > n) {
        // Bytes after the SSLRequest answer would be unencrypted injection (CVE-2021-23222).
        reject(new UpstreamConnectError('the target sent unexpected data after its TLS answer'));
        return;
      }
      resolve(chunk);
    };
    const onEnd = (): void => fail(new UpstreamConnectError('the target closed the connection'));
    const fail = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', fail);
      socket.off('end', onEnd);
      socket.pause();
    };
    socket.on('data', onData);
    socket.once('error', fail);
    socket.once('end', onEnd);
    socket.resume();
  });
}

function authenticate(socket: net.Socket, secure: boolean, login: UpstreamLogin): Promise<UpstreamSession> {
  return new Promise((resolve, reject) => {
    const framer = new ClientFramer(MAX_LOGIN_MESSAGE);
    framer.untyped = false;
    const replay: Buffer[] = [];
    let pid = 0;
    let secret = 0;
    let scram: ScramClient | undefined;
    let settled = false;

    const timer = setTimeout(() => finish(new UpstreamConnectError('the target did not finish the login in time')), login.timeoutMs);
    const finish = (err: Error | undefined, value?: UpstreamSession): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.pause();
      if (err) reject(err);
      else resolve(value!);
    };
    const onError = (err: Error): void => finish(new UpstreamConnectError(`connection to the target failed: ${err.message}`, undefined, { cause: err }));
    const onClose = (): void => finish(new UpstreamConnectError('the target closed the connection during login'));

    const handle = (m: FramedMessage): UpstreamSession | undefined => {
      switch (m.type) {
        case ServerMessage.authentication:
          onAuth(m.body);
          return undefined;
        case ServerMessage.parameterStatus:
        case ServerMessage.noticeResponse:
          replay.push(Buffer.from(m.raw));
          return undefined;
        case ServerMessage.backendKeyData:
          pid = m.body.readInt32BE(0);
          secret = m.body.readInt32BE(4);
          return undefined;
        case ServerMessage.negotiateProtocolVersion:
          return undefined;
        case ServerMessage.errorResponse: {
          const f = decodeFields(m.body);
          throw new UpstreamConnectError(`the target refused the login: ${f.C ?? ''} ${f.M ?? ''}`.trim(), f);
        }
        case ServerMessage.readyForQuery:
          return { socket, tls: secure, backendPid: pid, backendSecret: secret, replay, transactionStatus: String.fromCharCode(m.body[0] ?? 73), rest: [] };
        default:
          throw new UpstreamConnectError(`unexpected message '${String.fromCharCode(m.type)}' from the target during login`);
      }
    };

    const onAuth = (body: Buffer): void => {
      const code = body.readInt32BE(0);
      switch (code) {
        case AuthCode.ok:
          return;
        case AuthCode.cleartextPassword:
          socket.write(serialize.password(login.password));
          return;
        case AuthCode.md5Password:
          socket.write(serialize.password(md5PasswordResponse(login.user, login.password, body.subarray(4, 8))));
          return;
        case AuthCode.sasl: {
          const mechanisms: string[] = [];
          for (let i = 4; i < body.length && body[i] !== 0; ) {
            const [mech, next] = cstring(body, i);
            mechanisms.push(mech);
            i = next;
          }
          if (!mechanisms.includes('SCRAM-SHA-256')) throw new UpstreamAuthError(`the target offers no supported SASL mechanism (${mechanisms.join(', ')})`);
          scram = new ScramClient(login.password);
          socket.write(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
          return;
        }
        case AuthCode.saslContinue:
          if (!scram) throw new UpstreamAuthError('SASL continue before SASL start');
          socket.write(serialize.sendSCRAMClientFinalMessage(scram.clientFinal(body.toString('utf8', 4))));
          return;
        case AuthCode.saslFinal:
          if (!scram) throw new UpstreamAuthError('SASL final before SASL start');
          scram.verifyServerFinal(body.toString('utf8', 4));
          return;
        default:
          throw new UpstreamAuthError(`the target asks for an unsupported authentication method (${code})`);
      }
    };

    const onData = (chunk: Buffer): void => {
      try {
        framer.push(chunk);
        for (let m = framer.next(); m; m = framer.next()) {
          const done = handle(m);
          if (done) {
            // Anything after ReadyForQuery belongs to the relay (should not happen before the first query).
            done.rest.push(...framer.takeRemaining());
            finish(undefined, done);
            return;
          }
        }
      } catch (err) {
        finish(err instanceof UpstreamConnectError ? err : new UpstreamConnectError(describe(err), undefined, { cause: err }));
      }
    };

    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    // UTF8 unless the client asked for another encoding (its value replaces the default in place).
    const params: Record<string, string> = { user: login.user, database: login.database, client_encoding: 'UTF8' };
    for (const [k, v] of login.parameters) params[k] = v;
    socket.write(startupMessage(params));
    socket.resume();
  });
}

/**
 * A StartupMessage (protocol 3.0) with exactly these parameters. Not pg-protocol's serialize.startup:
 * it appends client_encoding=UTF8 after them, which overrides the client's own client_encoding.
 */
export function startupMessage(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(8 + body.length, 0);
  out.writeInt32BE(3 << 16, 4);
  body.copy(out, 8);
  return out;
}

/** Sends a CancelRequest for the given backend to the target (over TLS when the target requires it). */
export async function sendCancel(target: { host: string; port: number; tls: UpstreamTls }, pid: number, secret: number, timeoutMs = 5000): Promise<void> {
  let socket = await openSocket(target.host, target.port, timeoutMs);
  try {
    if (target.tls.mode !== 'disable') socket = await negotiateTls(socket, { host: target.host, tls: target.tls, timeoutMs });
    await new Promise<void>((resolve) => {
      socket.end(serialize.cancel(pid, secret), () => resolve());
    });
  } finally {
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}
