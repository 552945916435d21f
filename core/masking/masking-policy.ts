/** A target's masking configuration as the data path uses it. */
import type { MaskingConfig } from '../config/schema.ts';
import { ALL_DETECTORS, type ColumnRule, type MaskingPolicy } from './vocabulary.ts';

export function maskingPolicyOf(config: MaskingConfig): MaskingPolicy {
  const columns: ColumnRule[] = config.columns.map((c) => {
    const [schema, table, column] = c.column.split('.') as [string, string, string];
    return { schema, table, column, strategy: c.strategy };
  });
  const detectors = config.detectors === 'all' ? ALL_DETECTORS : config.detectors === 'none' ? [] : config.detectors;
  return { columns, detectors, detectorStrategy: config.detectorStrategy, unmaskedGroups: config.unmaskedGroups };
}

/** True when the agent's groups let it see this target's values unmasked. */
export function seesUnmasked(policy: MaskingPolicy, groups: readonly string[]): boolean {
  return groups.some((g) => policy.unmaskedGroups.includes(g));
}
