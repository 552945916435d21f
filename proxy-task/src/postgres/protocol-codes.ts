/**
 * Codes of the PostgreSQL frontend/backend protocol, version 3.0.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */

/** Request codes carried in place of a protocol version by untyped startup-phase messages. */
export const StartupCode = {
  protocol3: 196608, // 3 << 16
  sslRequest: 80877103,
  gssEncRequest: 80877104,
  cancelRequest: 80877102,
} as const;

/** Type bytes of messages the client sends after startup. */
export const ClientMessage = {
  query: 0x51, // Q
  parse: 0x50, // P
  bind: 0x42, // B
  describe: 0x44, // D
  execute: 0x45, // E
  sync: 0x53, // S
  flush: 0x48, // H
  close: 0x43, // C
  functionCall: 0x46, // F
  copyData: 0x64, // d
  copyDone: 0x63, // c
  copyFail: 0x66, // f
  terminate: 0x58, // X
  password: 0x70, // p (also SASLInitialResponse / SASLResponse / GSSResponse)
} as const;

/** Type bytes of messages the server sends. */
export const ServerMessage = {
  authentication: 0x52, // R
  backendKeyData: 0x4b, // K
  parameterStatus: 0x53, // S
  readyForQuery: 0x5a, // Z
  commandComplete: 0x43, // C
  dataRow: 0x44, // D
  errorResponse: 0x45, // E
  noticeResponse: 0x4e, // N
  emptyQueryResponse: 0x49, // I
  rowDescription: 0x54, // T
  portalSuspended: 0x73, // s
  copyInResponse: 0x47, // G
  copyOutResponse: 0x48, // H
  copyBothResponse: 0x57, // W
  negotiateProtocolVersion: 0x76, // v
  parseComplete: 0x31, // '1'
  closeComplete: 0x33, // '3'
  noData: 0x6e, // n
  notificationResponse: 0x41, // A
  copyData: 0x64, // d (both directions)
  copyDone: 0x63, // c (both directions)
} as const;

/** Authentication request codes inside an `R` message. */
export const AuthCode = {
  ok: 0,
  cleartextPassword: 3,
  md5Password: 5,
  sasl: 10,
  saslContinue: 11,
  saslFinal: 12,
} as const;

/** SQLSTATE codes Warden itself raises. @see https://www.postgresql.org/docs/current/errcodes-appendix.html */
export const SqlState = {
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  protocolViolation: '08P01',
  connectionFailure: '08006',
  cannotConnectNow: '57P03',
  insufficientPrivilege: '42501',
  adminShutdown: '57P01',
  programLimitExceeded: '54000',
  invalidCatalogName: '3D000',
  internalError: 'XX000',
  featureNotSupported: '0A000',
  queryCanceled: '57014',
} as const;
