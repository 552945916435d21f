/**
 * The Slack app's signing secret and bot token in Secrets Manager. By default the stack creates both
 * secrets (with a random placeholder value, so the functions refuse every Slack request until the real
 * values are put in); with `createSecrets: false` it references existing secrets by name.
 *
 * The functions read the values at run time (functions/approval-request/slack-secrets.ts), so putting a
 * new value takes effect within minutes and no value ever appears in a template or a function's
 * configuration.
 *
 * @see slack/README.md for where each value comes from
 */
import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface SlackSecretsProps {
  /** Secrets Manager name of the Slack app's signing secret. */
  readonly signingSecretName: string;
  /** Secrets Manager name of the Slack app's bot token (`xoxb-…`). */
  readonly botTokenSecretName: string;
  /**
   * Create the two secrets (true) or reference secrets that already exist under these names (false).
   * @default true
   */
  readonly createSecrets?: boolean;
  /** Encrypts the created secrets. Referenced secrets keep their own key. */
  readonly secretsKey: kms.IKey;
  /**
   * What happens to created secrets when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

export class SlackSecrets extends Construct {
  public readonly signingSecret: secretsmanager.ISecret;
  public readonly botToken: secretsmanager.ISecret;

  constructor(scope: Construct, id: string, props: SlackSecretsProps) {
    super(scope, id);
    if (props.signingSecretName === props.botTokenSecretName) {
      throw new Error(`SlackSecrets: the signing secret and the bot token need different names, both are '${props.signingSecretName}'`);
    }
    const create = props.createSecrets ?? true;
    const secret = (id: string, name: string, what: string): secretsmanager.ISecret =>
      create
        ? new secretsmanager.Secret(this, id, {
            secretName: name,
            description: `Warden: the Slack app's ${what}. Created with a random placeholder; put the real value from the Slack app's settings.`,
            encryptionKey: props.secretsKey,
            // A random placeholder rather than an empty secret: a value that can never match keeps the
            // functions failing closed until the real one is put in.
            generateSecretString: { passwordLength: 48, excludePunctuation: true },
            removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
          })
        : secretsmanager.Secret.fromSecretNameV2(this, id, name);
    this.signingSecret = secret('SigningSecret', props.signingSecretName, 'signing secret');
    this.botToken = secret('BotToken', props.botTokenSecretName, 'bot token (xoxb-…)');
    if (create) {
      const rotation =
        "Slack issues these values: the signing secret is regenerated and the bot token reissued in the Slack app's settings, and no rotation function can do either. slack/README.md describes rotating them by hand; the functions pick up a new value within five minutes.";
      for (const s of [this.signingSecret, this.botToken]) {
        Validations.of(s).acknowledge({ id: 'AwsSolutions-SMG4', reason: rotation }, { id: 'NIST.800.53.R5-SecretsManagerRotationEnabled', reason: rotation });
      }
    }
  }
}
