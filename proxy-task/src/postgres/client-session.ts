/**
 * One client connection: TLS negotiation, startup, token login, the upstream login with the credential
 * only Warden holds, then the relay. Errors meant for the client become an ErrorResponse with a SQLSTATE;
 * anything else is logged and the connection is closed without its text reaching the client.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { AuditSink, SessionAudit } from '../../../core/audit/ports.ts';
import { asSessionId, type SessionEndReason } from '../../../core/audit/events.ts';
import type { PostgresTarget } from '../../../core/config/schema.ts';
import { clientMessageFor, IdentityVerificationError } from '../../../core/identity/errors.ts';
import type { Principal } from '../../../core/identity/principal.ts';
import type { RevocationList } from '../../../core/identity/revocation.ts';
import { CLIENT_MESSAGE_REVOCATION_UNAVAILABLE, CLIENT_MESSAGE_REVOKED, SESSION_MESSAGE_REVOKED } from '../../../core/identity/revocation-document.ts';
import type { Decision, StatementDecider, TargetRef } from '../../../core/policy/decision.ts';
import type { SecretStore } from '../../../core/secrets/secret-store.ts';
import type { IdentityVerifier } from '../../../adapters/identity/jwt-verifier.ts';
import type { Logger } from '../log.ts';
import {
  authenticationCleartextPassword,
  authenticationOk,
  backendKeyData,
  cstring,
  decodeStartupParameters,
  errorResponse,
  negotiateProtocolVersion,
  readyForQuery,
} from './backend-messages.ts';
import type { CancelRegistry } from './cancel-registry.ts';
import { MessageReader } from './message-reader.ts';
import { ClientMessage, ServerMessage, SqlState, StartupCode } from './protocol-codes.ts';
import { PostgresRelay, type SessionMasking } from './relay.ts';
import { setsForbiddenSetting } from './startup-options.ts';
import { seesUnmasked } from '../../../core/masking/masking-policy.ts';
import { ResultMasker } from './masking/result-masker.ts';
import { HeldStatements } from './held-statements.ts';
import type { ApprovalService } from '../../../core/approval/approval-service.ts';
import type { ApprovalId } from '../../../core/approval/approval-request.ts';
import type { ApprovalsConfig } from '../../../core/config/schema.ts';
import type { ForensicVault } from '../../../core/masking/forensic-vault.ts';
import { CATALOG_MAX_AGE_MS, type TargetMasking } from './masking/target-masking.ts';
import { unsafeParameterStatus } from './lexical-settings.ts';
import { connectUpstream, sendCancel, UpstreamConnectError } from './upstream-connection.ts';

export interface SessionContext {
  listenerName: string;
  /** TLS for clients; undefined answers SSLRequest with N. */
  tls: SecureContext | undefined;
  /** Cleartext tokens are accepted without TLS only when the listener is loopback-only. */
  allowCleartext: boolean;
  maxMessageBytes: number;
  startupTimeoutMs: number;
  targets: ReadonlyMap<string, PostgresTarget>;
  verifier: IdentityVerifier;
  usernameClaim: string;
  secrets: SecretStore;
  audit: AuditSink;
  decider: StatementDecider;
  durableBeforeForward: boolean;
  cancels: CancelRegistry;
  log: Logger;
  /** Upstream TLS CA material per target, loaded at start. */
  upstreamCa: ReadonlyMap<string, Buffer>;
  /** Masking per target that has a masking configuration. */
  masking?: ReadonlyMap<string, TargetMasking>;
  /** Where masked originals are sealed (needed when any target masks). */
  vault?: ForensicVault;
  /** Where statements held for approval go; absent: they are refused, naming who would approve. */
  approvals?: { service: ApprovalService; newId: () => ApprovalId; config: ApprovalsConfig };
  /** Checked at every login after the token is verified; `unavailable` refuses the login (fail closed). */
  revocations: RevocationList;
  /** Registers a live session (after its login); returns the function that unregisters it. */
  onSessionStart?: (s: LiveSession) => () => void;
  /** Receives each session's final audit write, so shutdown can wait for every trail to be sealed. */
  trackEnd?: (sealed: Promise<unknown>) => void;
}

/** A session past its login, as the listener sees it: whose it is, and how to end it from outside. */
export interface LiveSession {
  readonly principal: { readonly issuer: string; readonly subject: string };
  /** Ends it with an admin-shutdown error (gateway shutdown); its trail says `shutdown`. */
  shutdown(message: string): void;
  /** Ends it because its identity was revoked; its trail says `revoked`. */
  revoke(): void;
}

/** An error the client should see, with its SQLSTATE; it ends the connection (FATAL). */
class ClientFacingError extends Error {
  constructor(
    readonly sqlstate: string,
    message: string,
    readonly endReason: SessionEndReason = 'error',
    /** When set, the refusal is recorded as an auth.failure with this reason code (if not recorded already). */
    readonly auditReason?: string,
  ) {
    super(message);
    this.name = 'ClientFacingError';
  }
}

/** Startup parameters that never pass through to the target. */
const RESERVED_PARAMETERS = new Set(['user', 'database', 'replication']);
export async function handleConnection(raw: Socket, ctx: SessionContext): Promise<void> {
  const started = Date.now();
  const source = { address: raw.remoteAddress ?? 'unknown', port: raw.remotePort ?? 0 };
  const log = ctx.log.child({ source: `${source.address}:${source.port}` });
  raw.setNoDelay(true);
  raw.on('error', () => undefined);
  const reader = new MessageReader(raw, ctx.maxMessageBytes);
  const deadline = started + ctx.startupTimeoutMs;
  let socket: Socket = raw;
  let audit: SessionAudit | undefined;
  let claimedUser = '';

  const fail = (sqlstate: string, message: string): void => {
    socket.end(errorResponse({ severity: 'FATAL', code: sqlstate, message }));
    setTimeout(() => socket.destroy(), 1000).unref();
  };

  try {
    // Startup phase: SSLRequest / GSSENCRequest / CancelRequest come first, untyped.
    let startup;
    for (;;) {
      const m = await reader.next(deadline);
      const code = m.body.readInt32BE(0);
      if (code === StartupCode.sslRequest) {
        if (reader.framer.pending > 0) throw new ClientFacingError(SqlState.protocolViolation, 'received unencrypted data after SSL request', 'protocol_error');
        if (!ctx.tls || socket instanceof TLSSocket) {
          socket.write('N');
          continue;
        }
        reader.detach();
        socket.write('S');
        socket = await upgradeToTls(socket, ctx.tls, deadline);
        reader.attach(socket);
        continue;
      }
      if (code === StartupCode.gssEncRequest) {
        socket.write('N');
        continue;
      }
      if (code === StartupCode.cancelRequest) {
        // Like PostgreSQL: a CancelRequest of the wrong size is dropped without an answer.
        if (m.body.length !== 12) {
          socket.destroy();
          return;
        }
        await forwardCancel(ctx, m.body.readInt32BE(4), m.body.readInt32BE(8), log);
        socket.destroy();
        return;
      }
      if (code >> 16 !== 3) throw new ClientFacingError(SqlState.featureNotSupported, `unsupported frontend protocol ${code >> 16}.${code & 0xffff}: Warden supports 3.0`, 'protocol_error');
      startup = m;
      reader.framer.untyped = false;
      break;
    }

    let params: Map<string, string>;
    try {
      params = decodeStartupParameters(startup.body);
    } catch {
      throw new ClientFacingError(SqlState.protocolViolation, 'invalid startup packet layout: expected terminator as last byte', 'protocol_error');
    }
    // Like PostgreSQL: a newer 3.x minor version or `_pq_.` protocol options get a NegotiateProtocolVersion
    // (Warden speaks 3.0 and knows no options), so the client does not assume what was not agreed.
    const protocolOptions = [...params.keys()].filter((k) => k.startsWith('_pq_.'));
    if ((startup.body.readInt32BE(0) & 0xffff) > 0 || protocolOptions.length > 0) socket.write(negotiateProtocolVersion(protocolOptions));
    const user = params.get('user') ?? '';
    claimedUser = user;
    const database = params.get('database') || user;
    const secure = socket instanceof TLSSocket;
    const sessionId = asSessionId(randomUUID());
    audit = ctx.audit.openSession(sessionId, { protocol: 'postgres', source, listener: ctx.listenerName, tls: secure, target: database, startupUser: user });
    const slog = log.child({ session: sessionId });
    audit.ready.catch(() => undefined);

    if (!user) throw new ClientFacingError(SqlState.invalidAuthorization, 'no PostgreSQL user name specified in startup packet', 'auth_failed', 'no_user');
    if (params.has('replication')) throw new ClientFacingError(SqlState.featureNotSupported, 'replication connections are not supported through Warden', 'auth_failed', 'replication_refused');
    if (!secure && !ctx.allowCleartext) {
      await recordAuthFailure(audit, 'tls_required', 'cleartext token refused on a non-TLS connection', SqlState.invalidAuthorization, user);
      throw new ClientFacingError(SqlState.invalidAuthorization, 'TLS is required to send a token: connect with sslmode=require', 'auth_failed');
    }

    // The password is the agent's OIDC token.
    socket.write(authenticationCleartextPassword());
    const pw = await reader.next(deadline);
    if (pw.type !== ClientMessage.password) throw new ClientFacingError(SqlState.protocolViolation, 'expected a password message', 'protocol_error', 'protocol_error');
    if (pw.body.length === 0 || pw.body.indexOf(0) !== pw.body.length - 1) throw new ClientFacingError(SqlState.protocolViolation, 'invalid password packet size', 'protocol_error', 'protocol_error');
    const token = cstring(pw.body, 0)[0];

    let principal: Principal;
    try {
      principal = await ctx.verifier.verify(token);
    } catch (err) {
      const reason = err instanceof IdentityVerificationError ? err.reason : err instanceof Error ? err.name : 'error';
      const detail = err instanceof Error ? err.message : String(err);
      await recordAuthFailure(audit, reason, detail, SqlState.invalidPassword, user);
      slog.info('login refused', { reason, user });
      throw new ClientFacingError(SqlState.invalidPassword, clientMessageFor(err), 'auth_failed');
    }
    // Revocation: from an in-memory snapshot, so no login waits on a file or the network.
    const revocation = ctx.revocations.check(principal.issuer, principal.subject);
    if (revocation !== 'ok') {
      const revoked = revocation === 'revoked';
      await recordAuthFailure(
        audit,
        revoked ? 'revoked' : 'revocation_unavailable',
        revoked ? 'the identity is on the revocation list' : 'the revocation list is unavailable; login refused (fail closed)',
        revoked ? SqlState.invalidAuthorization : SqlState.cannotConnectNow,
        user,
        principal,
      );
      slog.info('login refused', { reason: revoked ? 'revoked' : 'revocation_unavailable', subject: principal.subject, issuer: principal.issuer });
      if (revoked) throw new ClientFacingError(SqlState.invalidAuthorization, CLIENT_MESSAGE_REVOKED, 'auth_failed');
      throw new ClientFacingError(SqlState.cannotConnectNow, CLIENT_MESSAGE_REVOCATION_UNAVAILABLE, 'auth_failed');
    }
    const claimed = principal.username;
    if (claimed !== user) {
      await recordAuthFailure(audit, 'user_mismatch', `startup user '${user}' does not match the token's ${ctx.usernameClaim} '${claimed}'`, SqlState.invalidAuthorization, user, principal);
      throw new ClientFacingError(SqlState.invalidAuthorization, `the user name must match the token (connect as the token's ${ctx.usernameClaim})`, 'auth_failed');
    }
    const target = ctx.targets.get(database);
    if (!target) {
      await recordAuthFailure(audit, 'unknown_target', `no target named '${database}'`, SqlState.invalidCatalogName, user, principal);
      throw new ClientFacingError(SqlState.invalidCatalogName, `target "${database}" does not exist`, 'auth_failed');
    }
    const targetRef: TargetRef = { name: target.name, kind: 'postgres', environment: target.environment };
    const connectDecision = await decideConnect(ctx.decider, principal, targetRef, slog);
    if (connectDecision.effect !== 'allow') {
      await recordAuthFailure(audit, 'connect_denied', `connect denied by ${connectDecision.policies.join(', ')}`, SqlState.insufficientPrivilege, user, principal);
      throw new ClientFacingError(SqlState.insufficientPrivilege, `not permitted to connect to target "${target.name}"${connectDecision.reason ? `: ${connectDecision.reason}` : ''}`, 'auth_failed');
    }
    await audit.append({ type: 'auth.success', principal: { issuer: principal.issuer, subject: principal.subject, groups: [...principal.groups] }, method: 'oidc-jwt' }, { durable: true });

    // Masking: the column rules must be traced before any result is relayed (fail closed).
    const targetMasking = ctx.masking?.get(target.name);
    const unmaskedBy = targetMasking && seesUnmasked(targetMasking.policy, principal.groups) ? principal.groups.find((g) => targetMasking.policy.unmaskedGroups.includes(g)) : undefined;
    let masking: SessionMasking | undefined;
    if (targetMasking && !unmaskedBy) {
      try {
        await targetMasking.catalog.ensureFresh(CATALOG_MAX_AGE_MS);
      } catch (err) {
        slog.error('masking: column rules could not be traced on the target; refusing the session (fail closed)', { err });
        throw new ClientFacingError(SqlState.cannotConnectNow, `masking for target "${target.name}" is unavailable; try again later`, 'error', 'masking_unavailable');
      }
      if (!ctx.vault) throw new ClientFacingError(SqlState.cannotConnectNow, `masking for target "${target.name}" is unavailable`, 'error', 'masking_unavailable');
      masking = {
        masker: new ResultMasker(targetMasking.policy, targetMasking.catalog, targetMasking.hashKey),
        catalog: targetMasking.catalog,
        vault: ctx.vault,
        meta: { sessionId, target: target.name, principal: { issuer: principal.issuer, subject: principal.subject } },
        ...(targetMasking.confinement ? { confinement: targetMasking.confinement } : {}),
      };
    }

    const passthrough = new Map<string, string>();
    for (const [k, v] of params) if (!RESERVED_PARAMETERS.has(k) && !k.startsWith('_pq_.')) passthrough.set(k, v);
    if (setsForbiddenSetting(passthrough)) {
      throw new ClientFacingError(SqlState.insufficientPrivilege, 'startup options may not set role or session_authorization', 'auth_failed', 'forbidden_startup_setting');
    }

    const upstreamTls = { mode: target.tls.mode, ...(ctx.upstreamCa.get(target.name) ? { ca: ctx.upstreamCa.get(target.name) } : {}), ...(target.tls.serverName ? { serverName: target.tls.serverName } : {}) };
    const dbName = target.database ?? target.name;
    let upstream;
    try {
      const connect = async () => {
        const credential = await ctx.secrets.getCredential(target.credential);
        return connectUpstream({
          host: target.host,
          port: target.port,
          database: dbName,
          user: credential.username,
          password: credential.password,
          tls: upstreamTls,
          parameters: passthrough,
          timeoutMs: 10_000,
        });
      };
      try {
        upstream = await connect();
      } catch (err) {
        // The target refused the credential: a store that caches (Secrets Manager) may hold one that a
        // rotation has just replaced. Drop it and try once more with a fresh read.
        if (!(err instanceof UpstreamConnectError && err.fields?.C?.startsWith('28') && ctx.secrets.invalidate)) throw err;
        slog.warn('target refused the credential; reading it again once', { target: target.name });
        await audit.append({ type: 'upstream.connect', target: target.name, host: target.host, port: target.port, database: dbName, tls: target.tls.mode !== 'disable', ok: false, error: `${err.message} (credential read again)` }, { durable: false });
        ctx.secrets.invalidate(target.credential);
        upstream = await connect();
      }
    } catch (err) {
      const fields = err instanceof UpstreamConnectError ? err.fields : undefined;
      await audit.append({ type: 'upstream.connect', target: target.name, host: target.host, port: target.port, database: dbName, tls: target.tls.mode !== 'disable', ok: false, error: err instanceof Error ? err.message : String(err) }, { durable: true });
      slog.warn('target login failed', { target: target.name, err });
      // A server-side refusal that concerns the client's own parameters (e.g. a bad option) is passed on.
      if (fields?.C && !fields.C.startsWith('28')) throw new ClientFacingError(fields.C, fields.M ?? 'the target refused the connection');
      throw new ClientFacingError(SqlState.connectionFailure, `could not connect to target "${target.name}"`);
    }
    await audit.append({ type: 'upstream.connect', target: target.name, host: target.host, port: target.port, database: dbName, tls: upstream.tls, ok: true }, { durable: false });

    const unsafe = upstream.replay.map((m) => (m[0] === ServerMessage.parameterStatus ? unsafeParameterStatus(m.subarray(5)) : undefined)).find(Boolean);
    if (unsafe) {
      upstream.socket.destroy();
      await recordAuthFailure(audit, 'unsafe_session_settings', unsafe, SqlState.insufficientPrivilege, user, principal);
      throw new ClientFacingError(SqlState.insufficientPrivilege, `the session's settings are not supported: ${unsafe} (Warden must read SQL text exactly as the server does)`, 'auth_failed');
    }
    const key = ctx.cancels.register({ host: target.host, port: target.port, tls: upstreamTls, backendPid: upstream.backendPid, backendSecret: upstream.backendSecret });
    socket.write(Buffer.concat([authenticationOk(), ...upstream.replay, backendKeyData(key.processId, key.secretKey), readyForQuery(upstream.transactionStatus as 'I')]));
    reader.detach();
    const sessionAudit = audit;
    let unregister: (() => void) | undefined;
    let revokedLive = false;
    const held = ctx.approvals
      ? new HeldStatements({
          service: ctx.approvals.service,
          newId: ctx.approvals.newId,
          mode: target.approvalMode ?? ctx.approvals.config.mode,
          timeoutMs: ctx.approvals.config.timeoutSeconds * 1000,
          grantTtlMs: ctx.approvals.config.grantTtlSeconds * 1000,
          noticeIntervalMs: ctx.approvals.config.noticeIntervalSeconds * 1000,
          sessionId,
          principal,
          target: targetRef,
          audit: sessionAudit,
          toClient: (m) => socket.write(m),
          log: slog,
        })
      : undefined;
    const relay = new PostgresRelay({
      client: socket,
      upstream: upstream.socket,
      framer: reader.framer,
      upstreamRest: upstream.rest,
      audit: sessionAudit,
      principal,
      target: targetRef,
      decider: ctx.decider,
      durableBeforeForward: ctx.durableBeforeForward,
      ...(masking ? { masking } : {}),
      ...(unmaskedBy ? { unmaskedBy } : {}),
      ...(held ? { held } : {}),
      log: slog,
      onEnd: (relayReason, stats) => {
        ctx.cancels.unregister(key.processId);
        unregister?.();
        // The relay ends a session from outside as `shutdown`; a revocation is recorded as such.
        const reason: SessionEndReason = revokedLive && relayReason === 'shutdown' ? 'revoked' : relayReason;
        const sealed = sessionAudit.end({ reason, ...stats, durationMs: Date.now() - started }).catch((err: unknown) => slog.error('audit: session end not recorded', { err }));
        ctx.trackEnd?.(sealed);
        slog.info('session ended', { reason, statements: stats.statements });
      },
    });
    ctx.cancels.intercept(key.processId, () => relay.cancelHeld());
    const live: LiveSession = {
      principal: { issuer: principal.issuer, subject: principal.subject },
      shutdown: (message) => relay.shutdown(message),
      revoke: () => {
        if (revokedLive) return;
        revokedLive = true;
        slog.info('ending the session: its identity has been revoked', { subject: principal.subject, issuer: principal.issuer });
        // A statement still running on the target would outlive the closed connection (the server notices
        // a gone client only when it next writes): cancel it, so nothing of a revoked identity runs on.
        sendCancel({ host: target.host, port: target.port, tls: upstreamTls }, upstream.backendPid, upstream.backendSecret).catch((err: unknown) =>
          slog.warn('could not cancel the revoked session\'s statement on the target', { err }),
        );
        relay.shutdown(SESSION_MESSAGE_REVOKED);
      },
    };
    unregister = ctx.onSessionStart?.(live);
    slog.info('session started', { subject: principal.subject, target: target.name });
    relay.start();
    // A revocation that landed between the login's check and the registration above ended nobody: look again.
    if (ctx.revocations.check(principal.issuer, principal.subject) === 'revoked') live.revoke();
  } catch (err) {
    const endReason: SessionEndReason =
      err instanceof ClientFacingError ? err.endReason : err instanceof Error && err.name === 'ProtocolFramingError' ? 'protocol_error' : err instanceof Error && err.name === 'ConnectionClosedError' ? 'client_disconnect' : 'error';
    if (err instanceof ClientFacingError) fail(err.sqlstate, err.message);
    else if (err instanceof Error && err.name === 'ProtocolFramingError') fail(SqlState.protocolViolation, err.message);
    else if (err instanceof Error && (err.name === 'ConnectionClosedError' || err.name === 'StartupTimeoutError')) socket.destroy();
    else {
      log.error('connection failed', { err });
      fail(SqlState.internalError, 'internal error; see the Warden log');
    }
    reader.detach();
    if (audit && err instanceof ClientFacingError && err.auditReason) {
      await recordAuthFailure(audit, err.auditReason, err.message, err.sqlstate, claimedUser).catch(() => undefined);
    }
    const sealed = audit?.end({ reason: endReason, statements: 0, bytesFromClient: 0, bytesToClient: 0, durationMs: Date.now() - started }).catch(() => undefined);
    if (sealed) ctx.trackEnd?.(sealed);
  }
}

async function recordAuthFailure(audit: SessionAudit, reason: string, detail: string, sqlstate: string, claimedUser: string, principal?: Principal): Promise<void> {
  await audit.append(
    { type: 'auth.failure', reason, detail, sqlstate, claimedUser, ...(principal ? { issuer: principal.issuer, subject: principal.subject } : {}) },
    { durable: true },
  );
}

function upgradeToTls(socket: Socket, context: SecureContext, deadline: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = new TLSSocket(socket, { isServer: true, secureContext: context });
    const timer = setTimeout(() => {
      t.destroy();
      reject(new ClientFacingError(SqlState.protocolViolation, 'TLS handshake timed out'));
    }, Math.max(0, deadline - Date.now()));
    t.once('secure', () => {
      clearTimeout(timer);
      resolve(t);
    });
    t.once('error', (err) => {
      clearTimeout(timer);
      const e = new Error(`TLS handshake failed: ${err.message}`);
      e.name = 'ConnectionClosedError';
      reject(e);
    });
  });
}

async function forwardCancel(ctx: SessionContext, processId: number, secretKey: number, log: Logger): Promise<void> {
  const target = ctx.cancels.resolve(processId, secretKey);
  // An unknown key gets no answer, exactly like PostgreSQL: nothing to learn from probing.
  if (!target) return;
  if (target.intercept?.()) return; // a statement held for approval: withdrawn, nothing runs on the server
  try {
    await sendCancel(target, target.backendPid, target.backendSecret);
  } catch (err) {
    log.warn('could not forward a cancel request', { err });
  }
}

/** The connect decision; a decider that fails (a remote one out of reach) denies: fail closed. */
async function decideConnect(decider: StatementDecider, principal: Principal, target: TargetRef, log: Logger): Promise<Decision> {
  try {
    return await decider.decideConnect(principal, target);
  } catch (err) {
    log.error('connect decision failed; denying (fail closed)', { err });
    return { effect: 'deny', policies: [], reason: 'the policy decision point is unavailable' };
  }
}
