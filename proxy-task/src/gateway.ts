/**
 * Assembles Warden from a loaded configuration: identity, secrets, audit trail, policy decision point,
 * and the protocol listeners; on the embedded default also the development issuer and the demo target.
 * Used by `main.ts`, by the tests and by the benchmarks, so all three run the same wiring.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { approvalsDir, LocalApprovalService, LocalApprovalStore, newApprovalId } from '../../adapters/local/approval-files.ts';
import { createSecureContext } from 'node:tls';
import type { IssuerConfig, PostgresTarget } from '../../core/config/schema.ts';
import type { StatementDecider } from '../../core/policy/decision.ts';
import { CedarDecider } from '../../core/policy/cedar-decider.ts';
import { loadPolicyDirectory } from '../../adapters/local/policy-files.ts';
import { initSqlParser } from '../../core/sql/classify.ts';
import { JwtVerifier, type IssuerOptions } from '../../adapters/identity/jwt-verifier.ts';
import { LocalAuditSink, loadOrCreateAuditSigningKey } from '../../adapters/local/audit-sink.ts';
import type { LoadedConfig } from '../../adapters/local/config-file.ts';
import { DevIssuer } from '../../adapters/local/dev-issuer.ts';
import type { SecretStore } from '../../core/secrets/secret-store.ts';
import type { AuditSink } from '../../core/audit/ports.ts';
import type { ForensicVault } from '../../core/masking/forensic-vault.ts';
import type { ApprovalService } from '../../core/approval/approval-service.ts';
import type { RevocationList } from '../../core/identity/revocation.ts';
import { LocalSecretsFile } from '../../adapters/local/secrets-file.ts';
import { seedDemoDatabase } from './embedded/demo-database.ts';
import { PostgresServer } from './embedded/postgres-server.ts';
import { loadOrCreateSelfSignedCertificate } from './embedded/tls-certificate.ts';
import { createLogger, type Logger } from './log.ts';
import { CancelRegistry } from './postgres/cancel-registry.ts';
import { LocalForensicVault } from '../../adapters/local/forensic-vault.ts';
import { LocalRevocationFile, revocationsFilePath } from '../../adapters/local/revocation-file.ts';
import { createTargetMasking, loadOrCreateMaskingKey, localHashKey, type TargetMasking } from './postgres/masking/target-masking.ts';
import { isLoopbackHost, PostgresListener, type ListeningAddress } from './postgres/listener.ts';

export const DEMO_CREDENTIAL = 'demo-db';
const DEMO_OWNER = 'warden_demo';

export interface Gateway {
  postgres: ListeningAddress;
  /** The development issuer, when enabled. */
  devIssuer?: DevIssuer;
  devIssuerUrl?: string;
  demoDatabase?: PostgresServer;
  audit: AuditSink;
  /** The embedded default's audit sink (absent when another was given), for its statistics. */
  localAudit?: LocalAuditSink;
  listener: PostgresListener;
  /** The policy decision point every connection and statement passes. */
  decider: StatementDecider;
  /** Version of the Cedar policy set in force (absent when a decider was passed in). */
  policyVersion?: string;
  /** The revocation list every login is checked against. */
  revocations: RevocationList;
  close(graceMs?: number): Promise<void>;
}

export interface GatewayOptions {
  log?: Logger;
  /** Overrides the policy decision point (default: the Cedar policies of `policy.dir`). */
  decider?: StatementDecider;
  /** Listen on this port instead of the configured one (0: any free port; tests). */
  postgresPort?: number;
  /**
   * Implementations of the ports to use instead of the embedded default's (AWS: Secrets Manager,
   * DynamoDB + S3, S3 + KMS, Step Functions, DynamoDB). The gateway closes the audit sink and the
   * revocation list it is given.
   */
  adapters?: GatewayAdapters;
}

export interface GatewayAdapters {
  secrets?: SecretStore;
  audit?: AuditSink;
  vault?: ForensicVault;
  approvals?: ApprovalService;
  revocations?: RevocationList;
  /**
   * A masked target's keyed-hash key. The same on every task and after every restart, so a value's
   * pseudonym stays the same (AWS: a KMS HMAC key's MAC, the key never leaves KMS). Default: derived
   * from the local masking key file.
   */
  maskingHashKey?: (targetName: string) => Promise<Uint8Array>;
}

export async function startGateway(loaded: LoadedConfig, opts: GatewayOptions = {}): Promise<Gateway> {
  const { config, stateDir } = loaded;
  const log = opts.log ?? createLogger();
  const cleanups: (() => Promise<void>)[] = [];
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  try {
    // Policies first: an invalid policy set stops start-up before anything listens.
    let decider = opts.decider;
    let policyVersion: string | undefined;
    if (!decider) {
      const cedar = new CedarDecider(loadPolicyDirectory(loaded.policyDir));
      policyVersion = cedar.version;
      decider = cedar;
      log.info('policy set loaded', { dir: loaded.policyDir, version: cedar.version });
      const connect = config.policy.connectDecisions;
      if (connect.mode === 'lambda') {
        // Loaded only here: the embedded default never pays for loading the AWS SDK.
        const { LambdaClient } = await import('@aws-sdk/client-lambda');
        const { LambdaConnectDecider } = await import('../../adapters/aws/lambda-connect-decider.ts');
        const client = new LambdaClient({ ...(connect.region ? { region: connect.region } : {}), ...(connect.endpoint ? { endpoint: connect.endpoint } : {}) });
        cleanups.push(async () => client.destroy());
        decider = new LambdaConnectDecider({
          client,
          functionName: connect.functionName,
          timeoutMs: connect.timeoutMs,
          statements: cedar,
          onPolicyVersionMismatch: (v) => log.warn('the policy decision function runs another policy version than this task', v),
        });
        log.info('connect decided by Lambda', { functionName: connect.functionName, timeoutMs: connect.timeoutMs });
      }
    }
    const localSecrets = new LocalSecretsFile(loaded.secretsFile);
    const secrets: SecretStore = opts.adapters?.secrets ?? localSecrets;
    const issuers: IssuerOptions[] = config.identity.issuers.map((i: IssuerConfig) => toIssuerOptions(i));

    let devIssuer: DevIssuer | undefined;
    let devIssuerUrl: string | undefined;
    if (config.identity.devIssuer.enabled) {
      const d = config.identity.devIssuer;
      devIssuerUrl = `http://${d.host}:${d.port}`;
      devIssuer = await DevIssuer.loadOrCreate(stateDir, { issuerUrl: devIssuerUrl, audience: d.audience });
      const served = await devIssuer.listen(d.host, d.port);
      cleanups.push(() => served.close());
      issuers.push({ issuer: devIssuerUrl, audiences: [d.audience], algorithms: ['ES256'], jwksUri: `${served.url}/.well-known/jwks.json` });
    }

    let demoDatabase: PostgresServer | undefined;
    if (config.embedded.demoDatabase.enabled) {
      demoDatabase = await startDemoDatabase(stateDir, config.embedded.demoDatabase.port, localSecrets, log);
      const db = demoDatabase;
      cleanups.push(() => db.stop());
    }

    let tls;
    const tlsConf = config.listeners.postgres.tls;
    if (tlsConf.mode === 'self-signed') {
      const cert = await loadOrCreateSelfSignedCertificate(join(stateDir, 'tls'), { commonName: 'warden', altNames: ['localhost', '127.0.0.1', '::1'] });
      tls = createSecureContext({ cert: cert.cert, key: cert.key });
    } else if (tlsConf.mode === 'files') {
      tls = createSecureContext({ cert: readFileSync(tlsConf.certFile!), key: readFileSync(tlsConf.keyFile!) });
    }

    let audit: AuditSink;
    let localAudit: LocalAuditSink | undefined;
    if (opts.adapters?.audit) audit = opts.adapters.audit;
    else {
      const key = await loadOrCreateAuditSigningKey(stateDir);
      audit = localAudit = await LocalAuditSink.open({ dir: loaded.auditDir, readOnlyWindowMs: config.audit.readOnlyWindowMs, signingKey: key.privateKey, keyId: key.keyId });
    }
    const sink = audit;
    cleanups.push(() => sink.close());

    await initSqlParser();
    const verifier = new JwtVerifier({
      issuers: issuers.map((i) => ({ ...i, claims: { ...config.identity.claims, ...i.claims } })),
      clockToleranceSeconds: config.identity.clockToleranceSeconds,
      ...(config.identity.maxTokenAgeSeconds ? { maxTokenAgeSeconds: config.identity.maxTokenAgeSeconds } : {}),
    });

    // Revocations before the listener: no login is checked against a list that is not loaded. A list that
    // cannot be loaded at start (an invalid file, an unreachable table) stops start-up.
    const revocations = opts.adapters?.revocations ?? new LocalRevocationFile({ path: revocationsFilePath(loaded), log: log.child({ component: 'revocations' }) });
    cleanups.push(() => revocations.close());
    await revocations.ready;

    const pg = config.listeners.postgres;
    const targets = new Map<string, PostgresTarget>();
    const upstreamCa = new Map<string, Buffer>();
    for (const t of config.targets) {
      targets.set(t.name, t);
      if (t.tls.caFile) upstreamCa.set(t.name, readFileSync(t.tls.caFile));
    }
    const masking = new Map<string, TargetMasking>();
    let vault: ForensicVault | undefined;
    const maskedTargets = config.targets.filter((t) => t.masking);
    if (maskedTargets.length > 0) {
      const hashKeyOf = opts.adapters?.maskingHashKey ?? ((name: string) => Promise.resolve(localHashKey(loadOrCreateMaskingKey(join(stateDir, 'masking.key')), name)));
      vault = opts.adapters?.vault ?? (await LocalForensicVault.open({ stateDir }));
      for (const t of maskedTargets) {
        const m = createTargetMasking(t, secrets, await hashKeyOf(t.name), upstreamCa.get(t.name));
        masking.set(t.name, m);
        cleanups.push(() => m.close());
      }
    }
    const listener = new PostgresListener({
      listenerName: `postgres:${pg.host}:${pg.port}`,
      tls,
      allowCleartext: pg.allowCleartextOnLoopback && isLoopbackHost(pg.host),
      maxMessageBytes: pg.maxMessageBytes,
      startupTimeoutMs: pg.startupTimeoutSeconds * 1000,
      targets,
      verifier,
      usernameClaim: config.identity.claims.username,
      secrets,
      audit,
      decider,
      durableBeforeForward: config.audit.durableBeforeForward,
      cancels: new CancelRegistry(),
      log,
      upstreamCa,
      masking,
      ...(vault ? { vault } : {}),
      revocations,
      approvals: {
        service:
          opts.adapters?.approvals ?? new LocalApprovalService({ store: new LocalApprovalStore({ dir: approvalsDir(stateDir) }), grantTtlMs: config.approvals.grantTtlSeconds * 1000 }),
        newId: newApprovalId,
        config: config.approvals,
      },
    });
    const postgres = await listener.listen(pg.host, opts.postgresPort ?? pg.port);
    cleanups.push(() => listener.close());

    return {
      postgres,
      ...(devIssuer ? { devIssuer, devIssuerUrl: devIssuerUrl! } : {}),
      ...(demoDatabase ? { demoDatabase } : {}),
      audit,
      ...(localAudit ? { localAudit } : {}),
      listener,
      decider,
      ...(policyVersion ? { policyVersion } : {}),
      revocations,
      close: async (graceMs = 0) => {
        await listener.close(graceMs);
        for (const c of cleanups.reverse()) await c().catch((err: unknown) => log.warn('shutdown step failed', { err }));
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    throw err;
  }
}

function toIssuerOptions(i: IssuerConfig): IssuerOptions {
  return {
    issuer: i.issuer,
    audiences: i.audiences,
    algorithms: i.algorithms,
    ...(i.jwksUri ? { jwksUri: i.jwksUri } : {}),
    ...(i.claims ? { claims: i.claims } : {}),
  };
}

/** The demo target: a real PostgreSQL from the machine's binaries, with SCRAM logins and seeded data. */
async function startDemoDatabase(stateDir: string, port: number, secrets: LocalSecretsFile, log: Logger): Promise<PostgresServer> {
  if (process.getuid?.() === 0) {
    // The server runs as the postgres user, which must be able to reach its data folder.
    chmodSync(stateDir, 0o711);
  }
  if (!secrets.has(DEMO_CREDENTIAL)) {
    secrets.put(DEMO_CREDENTIAL, { username: DEMO_OWNER, password: randomBytes(24).toString('base64url') });
  }
  const credential = await secrets.getCredential(DEMO_CREDENTIAL);
  const server = await PostgresServer.start({ dataDir: join(stateDir, 'demo-postgres'), port, authMethod: 'scram-sha-256' });
  try {
    await seedDemoDatabase(server, { database: 'demo', ownerRole: credential.username, ownerPassword: credential.password });
  } catch (err) {
    await server.stop();
    throw err;
  }
  log.info('demo database ready', { port: server.port, version: server.version });
  return server;
}
