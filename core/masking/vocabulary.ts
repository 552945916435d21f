/**
 * The words of masking: detectors (what a value is), strategies (what it becomes), and the shapes shared
 * by the configuration, the data path, the audit trail and the forensic vault.
 */

/** Content detectors: values found by what they look like, wherever they appear in a result. */
export const Detector = {
  /** Payment card numbers (13-19 digits, spaces or dashes allowed), Luhn-valid. */
  card: 'card',
  /** US social security numbers (AAA-GG-SSSS, invalid areas/groups/serials excluded). */
  ssn: 'ssn',
  email: 'email',
  /** Phone numbers in international (+CC ...) or North American formats. */
  phone: 'phone',
  /** IBANs with a valid mod-97 checksum. */
  iban: 'iban',
  /** AWS access key ids (AKIA/ASIA + 16). */
  aws_access_key: 'aws_access_key',
  /** AWS secret access keys (40 base64 characters next to a key id or a secret-looking name). */
  aws_secret_key: 'aws_secret_key',
  /** PEM private keys (-----BEGIN ... PRIVATE KEY----- blocks). */
  private_key: 'private_key',
  /** JSON Web Tokens (three base64url parts, a JSON header). */
  jwt: 'jwt',
  /** Common API token formats: GitHub, Slack, Stripe, Google, OpenAI/Anthropic-style, npm, generic bearer. */
  api_token: 'api_token',
} as const;
export type Detector = (typeof Detector)[keyof typeof Detector];
export const ALL_DETECTORS: readonly Detector[] = Object.values(Detector);

export const MaskStrategy = {
  /** A typed placeholder: `[EMAIL]`, `[CARD]`, `[REDACTED]` for a column rule. */
  redact: 'redact',
  /** Keep the last four characters (digits for numbers), the rest replaced: `************4242`. */
  partial: 'partial',
  /** A deterministic keyed pseudonym (HMAC-SHA-256 under the target's key): equal values stay equal. */
  hash: 'hash',
  /** SQL NULL. */
  null: 'null',
} as const;
export type MaskStrategy = (typeof MaskStrategy)[keyof typeof MaskStrategy];

/** A column rule: `schema.table.column` (tables and views alike) and what its values become. */
export interface ColumnRule {
  readonly schema: string;
  readonly table: string;
  readonly column: string;
  readonly strategy: MaskStrategy;
}

/** How one target masks: from its configuration. */
export interface MaskingPolicy {
  readonly columns: readonly ColumnRule[];
  /** Detectors run over every text cell no column rule covers; empty: none. */
  readonly detectors: readonly Detector[];
  /** What a detected value becomes (default redact: `[EMAIL]`...). */
  readonly detectorStrategy: MaskStrategy;
  /** Groups whose agents see values unmasked (recorded as such). */
  readonly unmaskedGroups: readonly string[];
}

/** What masking did to one statement's results: the audit trail's evidence. */
export interface MaskingSummary {
  /** Cells masked by column rules, per `schema.table.column` and strategy. */
  readonly columns: readonly { readonly column: string; readonly strategy: MaskStrategy; readonly cells: number }[];
  /** Values found by detectors, per detector. */
  readonly detectors: readonly { readonly detector: Detector; readonly values: number }[];
  /** Columns set to NULL because their binary type cannot be rewritten. */
  readonly nulledBinary?: number;
  /** The agent is in an unmasked group: nothing was masked, on purpose. */
  readonly unmasked?: boolean;
  /** The first rows as the agent received them (masked), cells cut to 64 characters: what came back. */
  readonly sample?: readonly (readonly (string | null)[])[];
}
