/**
 * A fake Secrets Manager (GetSecretValue only) behind the real SDK client, in process (`client`) or over
 * HTTP (`listen`); see fake-aws-json.ts for why a fake and where it sits. Secrets have versions with staging labels, and rotation moves them the way
 * Secrets Manager's rotation does: createSecret adds AWSPENDING, finishSecret moves AWSCURRENT to it and
 * AWSPREVIOUS to the old version.
 */
import { randomUUID } from 'node:crypto';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { AwsFault, awsJsonRequestHandler, serveAwsJson, type AwsJsonServer } from './fake-aws-json.ts';

interface Version {
  secretString?: string;
  secretBinary?: Buffer;
  stages: Set<string>;
}

export interface SecretReadCall {
  secretId: string;
  versionStage: string | undefined;
}

export class FakeSecretsManager {
  private readonly secrets = new Map<string, Map<string, Version>>();
  readonly calls: SecretReadCall[] = [];
  /** When set, every call fails with this fault (throttling, an outage). */
  failWith: AwsFault | undefined;

  /** A client of this fake (dummy credentials, no retries: the store's behaviour is what is tested). */
  client(): SecretsManagerClient {
    return new SecretsManagerClient({
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDSECRETS', secretAccessKey: 'test-secret' },
      maxAttempts: 1,
      requestHandler: awsJsonRequestHandler((call) => this.operate(call.operation, call.input)) as never,
    });
  }

  /** This fake over HTTP on 127.0.0.1, for a client in another process. */
  listen(): Promise<AwsJsonServer> {
    return serveAwsJson((call) => this.operate(call.operation, call.input));
  }

  /** Stores a new AWSCURRENT version (the old one becomes AWSPREVIOUS); returns its version id. */
  put(name: string, value: string | { binary: Buffer }): string {
    const id = this.addVersion(name, value, []);
    this.moveStage(name, 'AWSCURRENT', id);
    return id;
  }

  /** Rotation's createSecret: the new value as AWSPENDING. */
  startRotation(name: string, value: string): string {
    const id = this.addVersion(name, value, []);
    this.moveStage(name, 'AWSPENDING', id);
    return id;
  }

  /** Rotation's finishSecret: AWSCURRENT moves to the pending version. */
  finishRotation(name: string): void {
    const versions = this.secrets.get(name)!;
    const pending = [...versions].find(([, v]) => v.stages.has('AWSPENDING'))![0];
    this.moveStage(name, 'AWSCURRENT', pending);
    versions.get(pending)!.stages.delete('AWSPENDING');
  }

  reads(name: string, stage?: string): number {
    return this.calls.filter((c) => c.secretId === name && (stage === undefined || (c.versionStage ?? 'AWSCURRENT') === stage)).length;
  }

  private addVersion(name: string, value: string | { binary: Buffer }, stages: string[]): string {
    let versions = this.secrets.get(name);
    if (!versions) this.secrets.set(name, (versions = new Map()));
    const id = randomUUID();
    versions.set(id, { ...(typeof value === 'string' ? { secretString: value } : { secretBinary: value.binary }), stages: new Set(stages) });
    return id;
  }

  private moveStage(name: string, stage: string, to: string): void {
    for (const [id, v] of this.secrets.get(name)!) {
      if (id !== to && v.stages.delete(stage) && stage === 'AWSCURRENT') {
        for (const other of this.secrets.get(name)!.values()) other.stages.delete('AWSPREVIOUS');
        v.stages.add('AWSPREVIOUS');
      }
    }
    this.secrets.get(name)!.get(to)!.stages.add(stage);
  }

  private operate(operation: string, input: Record<string, unknown>): unknown {
    if (operation !== 'GetSecretValue') throw new AwsFault('UnknownOperationException', `${operation} is not faked`);
    const secretId = String(input.SecretId);
    const versionStage = typeof input.VersionStage === 'string' ? input.VersionStage : undefined;
    this.calls.push({ secretId, versionStage });
    if (this.failWith) throw this.failWith;
    const versions = this.secrets.get(secretId);
    if (!versions) throw new AwsFault('ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
    const stage = versionStage ?? 'AWSCURRENT';
    const found = [...versions].find(([, v]) => v.stages.has(stage));
    if (!found) throw new AwsFault('ResourceNotFoundException', `Secrets Manager can't find the specified secret value for staging label: ${stage}`);
    const [id, v] = found;
    return {
      ARN: `arn:aws:secretsmanager:us-east-1:111122223333:secret:${secretId}-AbCdEf`,
      Name: secretId,
      VersionId: id,
      VersionStages: [...v.stages],
      CreatedDate: Math.floor(Date.now() / 1000),
      ...(v.secretString !== undefined ? { SecretString: v.secretString } : {}),
      ...(v.secretBinary !== undefined ? { SecretBinary: v.secretBinary.toString('base64') } : {}),
    };
  }
}
