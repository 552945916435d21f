/** The masked target the masking tests share: rules on people's ssn, email, card and salary, every detector on. */

export const PEOPLE_RULES = [
  { column: 'public.people.ssn', strategy: 'partial' },
  { column: 'public.people.email', strategy: 'redact' },
  { column: 'public.people.card', strategy: 'hash' },
  { column: 'public.people.salary', strategy: 'null' },
] as const;

/** The `appdb` target on `port` with PEOPLE_RULES (plus `extraRules`) and all detectors. */
export function maskedTarget(port: number, o: { extraRules?: readonly { column: string; strategy: string }[]; unmaskedGroups?: string[]; strict?: boolean } = {}): Record<string, unknown> {
  return {
    name: 'appdb',
    kind: 'postgres',
    host: '127.0.0.1',
    port,
    database: 'appdb',
    credential: 'appdb-cred',
    masking: {
      columns: [...PEOPLE_RULES, ...(o.extraRules ?? [])],
      detectors: 'all',
      ...(o.unmaskedGroups ? { unmaskedGroups: o.unmaskedGroups } : {}),
      ...(o.strict !== undefined ? { strict: o.strict } : {}),
    },
  };
}
