/**
 * The one configuration schema of Warden, shared by the embedded default (`warden.config.yaml`) and the
 * AWS deployment. Pure: parsing YAML and reading files happens in adapters; this module only validates.
 */
import { ALL_DETECTORS, type Detector } from '../masking/vocabulary.ts';
import { z } from 'zod';

const hostName = z.string().min(1).max(253);
const port = z.number().int().min(0).max(65535);
const identifier = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must start with a lower-case letter and hold only a-z, 0-9, _ and - (max 63)');

export const TlsListenerSchema = z
  .object({
    /** `self-signed`: generate (once) and use a certificate in the state folder; `files`: use certFile/keyFile; `off`: answer SSLRequest with N. */
    mode: z.enum(['self-signed', 'files', 'off']).default('self-signed'),
    certFile: z.string().optional(),
    keyFile: z.string().optional(),
  })
  .strict()
  .refine((t) => t.mode !== 'files' || (t.certFile && t.keyFile), {
    message: "mode 'files' needs certFile and keyFile",
  });

export const PostgresListenerSchema = z
  .object({
    host: hostName.default('127.0.0.1'),
    port: port.default(6432),
    tls: TlsListenerSchema.default({ mode: 'self-signed' }),
    /** Largest client message accepted, in bytes; a larger length field closes the connection with an error. */
    maxMessageBytes: z.number().int().min(1024).max(1024 * 1024 * 1024).default(64 * 1024 * 1024),
    /** Seconds a client has to finish the startup and authentication exchange. */
    startupTimeoutSeconds: z.number().int().min(1).max(600).default(30),
    /**
     * Allow the token to be sent without TLS. Only honoured when the listener is bound to a loopback
     * address: anywhere else a cleartext token could be sniffed, so it is always refused.
     */
    allowCleartextOnLoopback: z.boolean().default(true),
  })
  .strict();

export const ClaimMappingSchema = z
  .object({
    subject: z.string().min(1).default('sub'),
    groups: z.string().min(1).default('groups'),
    /** The claim that the PostgreSQL startup `user` must equal. */
    username: z.string().min(1).default('sub'),
  })
  .strict();

const jwsAlgorithm = z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);

export const IssuerSchema = z
  .object({
    issuer: z.string().url(),
    /** Defaults to the `jwks_uri` of the issuer's OpenID discovery document. */
    jwksUri: z.string().url().optional(),
    audiences: z.array(z.string().min(1)).min(1),
    algorithms: z.array(jwsAlgorithm).min(1).default(['RS256', 'ES256', 'EdDSA']),
    claims: ClaimMappingSchema.partial().optional(),
  })
  .strict();

export const IdentitySchema = z
  .object({
    issuers: z.array(IssuerSchema).default([]),
    clockToleranceSeconds: z.number().int().min(0).max(300).default(30),
    maxTokenAgeSeconds: z.number().int().min(1).optional(),
    claims: ClaimMappingSchema.default({ subject: 'sub', groups: 'groups', username: 'sub' }),
    /** The built-in development issuer of the embedded default. Never enable it in a deployment. */
    devIssuer: z
      .object({
        enabled: z.boolean().default(false),
        host: hostName.default('127.0.0.1'),
        port: port.default(6480),
        audience: z.string().min(1).default('warden'),
      })
      .strict()
      .default({ enabled: false, host: '127.0.0.1', port: 6480, audience: 'warden' }),
  })
  .strict();

export const UpstreamTlsSchema = z
  .object({
    /** `disable`: plain TCP; `require`: TLS without certificate checks; `verify-full`: TLS, CA and host name checked. */
    mode: z.enum(['disable', 'require', 'verify-full']).default('disable'),
    caFile: z.string().optional(),
    serverName: z.string().optional(),
  })
  .strict();

const maskStrategy = z.enum(['redact', 'partial', 'hash', 'null']);

/** How a target's results are masked before an agent sees them. */
export const MaskingConfigSchema = z
  .object({
    /** Column rules: `schema.table.column` (a table or a view) and what its values become. */
    columns: z
      .array(
        z
          .object({
            column: z.string().regex(/^[^.\s]+\.[^.\s]+\.[^.\s]+$/, 'must be schema.table.column'),
            strategy: maskStrategy,
          })
          .strict(),
      )
      .default([]),
    /** Content detectors run over every text value no column rule covers: 'all', 'none' or a list. */
    detectors: z.union([z.literal('all'), z.literal('none'), z.array(z.enum(ALL_DETECTORS as [Detector, ...Detector[]])).min(1)]).default('all'),
    /** What a detected value becomes. */
    detectorStrategy: maskStrategy.default('redact'),
    /** Agents in these groups see values unmasked (recorded in the audit trail as such). */
    unmaskedGroups: z.array(z.string().min(1)).default([]),
    /**
     * Refuse statements that use a ruled column where masking cannot follow it (inside an expression, a
     * set operation, a copy into another table, a range filter): see core/masking/confinement.ts. Turning
     * it off leaves such values to the content detectors only.
     */
    strict: z.boolean().default(true),
  })
  .strict();

export const PostgresTargetSchema = z
  .object({
    name: identifier,
    kind: z.literal('postgres'),
    host: hostName,
    port: port.default(5432),
    /** The database on the server; defaults to the target's name. */
    database: z.string().min(1).optional(),
    environment: z.enum(['development', 'staging', 'production']).default('development'),
    /** Name of the credential in the SecretStore (local secrets file or Secrets Manager). */
    credential: z.string().min(1),
    tls: UpstreamTlsSchema.default({ mode: 'disable' }),
    /** Masking of results; absent: results are relayed as the server sends them. */
    masking: MaskingConfigSchema.optional(),
    /** How statements held for approval behave on this target; defaults to approvals.mode. */
    approvalMode: z.enum(['wait', 'async']).optional(),
  })
  .strict();

export const TargetSchema = z.discriminatedUnion('kind', [PostgresTargetSchema]);

export const AuditSchema = z
  .object({
    /** Folder of the local audit trail (relative paths are relative to the state folder). */
    dir: z.string().min(1).default('audit'),
    /** Statements that may change anything are durable before they are forwarded. Turning this off is documented as unsafe. */
    durableBeforeForward: z.boolean().default(true),
    /** Read-only statements become durable within this window (group commit). */
    readOnlyWindowMs: z.number().int().min(0).max(10_000).default(100),
  })
  .strict();

export const PolicySchema = z
  .object({
    /** Folder with the Cedar schema (`*.cedarschema`) and policies (`*.cedar`); relative to the configuration file. */
    dir: z.string().min(1).default('policies'),
    /**
     * Where `connect` is decided. Statements are always decided in process, with the same code and policy
     * version (a Lambda round trip per statement would cost far more than the statement).
     */
    connectDecisions: z
      .discriminatedUnion('mode', [
        z.object({ mode: z.literal('in-process') }).strict(),
        z
          .object({
            mode: z.literal('lambda'),
            /** Name or ARN of the policy decision function (functions/policy-decision). */
            functionName: z.string().min(1),
            region: z.string().min(1).optional(),
            /** Override of the Lambda API endpoint (tests, VPC endpoints with a private DNS name). */
            endpoint: z.string().url().optional(),
            timeoutMs: z.number().int().min(100).max(30_000).default(3000),
          })
          .strict(),
      ])
      .default({ mode: 'in-process' }),
  })
  .strict();

export const ApproverSchema = z
  .object({
    /** Stable identity of the person (e-mail address or their OIDC subject); recorded with each vote. */
    id: z.string().min(1),
    /** Approver groups this person belongs to (as named in policies' @approvers). */
    groups: z.array(z.string().min(1)).min(1),
    /** Slack member id (U… or W…): the only way a Slack click maps to an approver. */
    slackUserId: z
      .string()
      .regex(/^[UW][A-Z0-9]{2,}$/, 'must be a Slack member id such as U0123ABCD')
      .optional(),
    /** This person's own agent identities: requests from them cannot be approved by them. */
    identities: z.array(z.object({ issuer: z.string().min(1), subject: z.string().min(1) }).strict()).default([]),
  })
  .strict();

export const ApprovalsSchema = z
  .object({
    /** `wait`: the statement is held until decided; `async`: refused at once, runnable once after approval. */
    mode: z.enum(['wait', 'async']).default('wait'),
    /** A request nobody decides within this time is denied as expired. */
    timeoutSeconds: z.number().int().min(1).max(7 * 24 * 3600).default(900),
    /** Async mode: how long after approval the statement may be run (once). */
    grantTtlSeconds: z.number().int().min(10).max(7 * 24 * 3600).default(3600),
    /** Progress notices to a waiting agent, every this many seconds. */
    noticeIntervalSeconds: z.number().int().min(1).max(3600).default(30),
    approvers: z.array(ApproverSchema).default([]),
    slack: z
      .object({
        /** Approver group → Slack channel id that receives its requests. */
        channels: z.record(z.string().min(1), z.string().regex(/^[CG][A-Z0-9]{2,}$/, 'must be a Slack channel id such as C0123ABCD')).default({}),
      })
      .strict()
      .default({ channels: {} }),
  })
  .strict()
  .superRefine((a, ctx) => {
    const ids = new Set<string>();
    const slackIds = new Set<string>();
    a.approvers.forEach((ap, i) => {
      if (ids.has(ap.id)) ctx.addIssue({ code: 'custom', path: ['approvers', i, 'id'], message: `duplicate approver '${ap.id}'` });
      ids.add(ap.id);
      if (ap.slackUserId !== undefined) {
        if (slackIds.has(ap.slackUserId)) ctx.addIssue({ code: 'custom', path: ['approvers', i, 'slackUserId'], message: `Slack member ${ap.slackUserId} is mapped twice` });
        slackIds.add(ap.slackUserId);
      }
    });
  });

/**
 * The AWS deployment (`cdk deploy -c config=warden.aws.yaml`): read by infra/ at synth, ignored by the
 * embedded default. Everything else in the file (targets, identity, policy, approvals) is the same
 * configuration the proxy runs with.
 */
export const AwsDeploymentSchema = z
  .object({
    /** The stack's name. */
    stackName: z.string().regex(/^[A-Za-z][A-Za-z0-9-]{0,127}$/, 'must be a CloudFormation stack name').default('Warden'),
    vpc: z
      .object({
        cidr: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be an IPv4 CIDR such as 10.40.0.0/16').default('10.40.0.0/16'),
        maxAzs: z.number().int().min(2).max(3).default(2),
        /**
         * NAT gateways for the tasks' egress to what is not an AWS API (identity providers' JWKS, targets
         * outside the VPC). 0: none; the VPC is then reached only through peering, a transit gateway or VPN.
         */
        natGateways: z.number().int().min(0).max(3).default(0),
      })
      .strict()
      .default({ cidr: '10.40.0.0/16', maxAzs: 2, natGateways: 0 }),
    loadBalancer: z
      .object({
        /** Internal (reachable from the VPC and peered networks only) unless set to false. */
        internal: z.boolean().default(true),
        /** Client networks allowed to reach the listeners. */
        allowedCidrs: z.array(z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be an IPv4 CIDR')).min(1).default(['10.0.0.0/8']),
      })
      .strict()
      .default({ internal: true, allowedCidrs: ['10.0.0.0/8'] }),
    proxy: z
      .object({
        cpu: z.union([z.literal(256), z.literal(512), z.literal(1024), z.literal(2048), z.literal(4096)]).default(1024),
        memoryMiB: z.number().int().min(512).max(30720).default(2048),
        desiredCount: z.number().int().min(1).max(50).default(2),
        maxCount: z.number().int().min(1).max(100).default(6),
        /**
         * Seconds a stopping task keeps serving live sessions after SIGTERM (also the NLB deregistration
         * delay). Fargate kills a task 120 s after SIGTERM at most, and the trail must be sealed before that.
         */
        drainSeconds: z.number().int().min(0).max(110).default(90),
      })
      .strict()
      .default({ cpu: 1024, memoryMiB: 2048, desiredCount: 2, maxCount: 6, drainSeconds: 90 }),
    audit: z
      .object({
        /** S3 Object Lock (compliance mode) retention of session recordings. */
        objectLockDays: z.number().int().min(1).max(36500).default(365),
        /** DynamoDB items expire (TTL) after this many days; recordings stay under Object Lock. */
        retentionDays: z.number().int().min(1).max(36500).default(400),
      })
      .strict()
      .default({ objectLockDays: 365, retentionDays: 400 }),
    /** CloudWatch log retention of every function and the proxy. */
    logRetentionDays: z.number().int().min(1).max(3653).default(365),
    slack: z
      .object({
        /** Secrets Manager secret names holding the Slack app's signing secret and bot token. */
        signingSecretName: z.string().min(1).default('warden/slack/signing-secret'),
        botTokenSecretName: z.string().min(1).default('warden/slack/bot-token'),
      })
      .strict()
      .default({ signingSecretName: 'warden/slack/signing-secret', botTokenSecretName: 'warden/slack/bot-token' }),
    /** Alarm notifications go to this e-mail address (an SNS subscription), if given. */
    alarmEmail: z.string().email().optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.proxy.maxCount < a.proxy.desiredCount) ctx.addIssue({ code: 'custom', path: ['proxy', 'maxCount'], message: 'must be at least proxy.desiredCount' });
  });

export const EmbeddedSchema = z
  .object({
    /** Start the demo PostgreSQL target `demo` from the machine's PostgreSQL binaries. */
    demoDatabase: z
      .object({
        enabled: z.boolean().default(false),
        port: port.default(6543),
      })
      .strict()
      .default({ enabled: false, port: 6543 }),
  })
  .strict();

export const WardenConfigSchema = z
  .object({
    /** Local state folder: keys, certificates, secrets file, audit trail, demo database. */
    stateDir: z.string().min(1).default('.warden'),
    /** Local secrets file (target credentials), relative to the state folder. */
    secretsFile: z.string().min(1).default('secrets.json'),
    listeners: z
      .object({ postgres: PostgresListenerSchema.default(PostgresListenerSchema.parse({})) })
      .strict()
      .default({ postgres: PostgresListenerSchema.parse({}) }),
    identity: IdentitySchema.default(IdentitySchema.parse({})),
    targets: z.array(TargetSchema).default([]),
    audit: AuditSchema.default(AuditSchema.parse({})),
    policy: PolicySchema.default(PolicySchema.parse({})),
    approvals: ApprovalsSchema.default(ApprovalsSchema.parse({})),
    /** Where identities are revoked: a file watched on the embedded default (relative to stateDir). */
    revocations: z.object({ file: z.string().min(1).default('revocations.json') }).strict().default({ file: 'revocations.json' }),
    aws: AwsDeploymentSchema.optional(),
    embedded: EmbeddedSchema.default(EmbeddedSchema.parse({})),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.targets.forEach((t, i) => {
      if (seen.has(t.name)) ctx.addIssue({ code: 'custom', path: ['targets', i, 'name'], message: `duplicate target name '${t.name}'` });
      seen.add(t.name);
    });
    if (c.identity.issuers.length === 0 && !c.identity.devIssuer.enabled) {
      ctx.addIssue({ code: 'custom', path: ['identity', 'issuers'], message: 'at least one issuer is needed (or identity.devIssuer.enabled: true)' });
    }
  });

export type WardenConfig = z.infer<typeof WardenConfigSchema>;
export type PostgresTarget = z.infer<typeof PostgresTargetSchema>;
export type Target = z.infer<typeof TargetSchema>;
export type MaskingConfig = z.infer<typeof MaskingConfigSchema>;
export type PolicyConfig = z.infer<typeof PolicySchema>;
export type ApprovalsConfig = z.infer<typeof ApprovalsSchema>;
export type AwsDeploymentConfig = z.infer<typeof AwsDeploymentSchema>;
export type IssuerConfig = z.infer<typeof IssuerSchema>;

export class ConfigInvalidError extends Error {
  constructor(
    readonly source: string,
    readonly problems: { key: string; message: string }[],
  ) {
    super(`${source}: invalid configuration\n` + problems.map((p) => `  - ${p.key}: ${p.message}`).join('\n'));
    this.name = 'ConfigInvalidError';
  }
}

/** Validates a parsed document; throws ConfigInvalidError naming the source, each key and what is allowed. */
export function parseConfig(doc: unknown, source: string): WardenConfig {
  const r = WardenConfigSchema.safeParse(doc ?? {});
  if (r.success) return r.data;
  throw new ConfigInvalidError(
    source,
    r.error.issues.map((i) => ({ key: i.path.length ? i.path.join('.') : '(root)', message: describeIssue(i) })),
  );
}

function describeIssue(i: z.core.$ZodIssue): string {
  switch (i.code) {
    case 'invalid_value':
      return `must be one of ${i.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'unrecognized_keys':
      return `unknown key(s) ${i.keys.map((k) => `'${k}'`).join(', ')}`;
    case 'invalid_type':
      return `expected ${i.expected}`;
    case 'too_small':
      return `must be at least ${String(i.minimum)}`;
    case 'too_big':
      return `must be at most ${String(i.maximum)}`;
    default:
      return i.message;
  }
}
