/**
 * Function catalogue: the functions whose call implies a risk or a side effect, and the settings whose
 * change lifts a guard. Matched on the last name part, lower-cased, whatever the schema: extension
 * functions (dblink, adminpack) live in any schema, and a look-alike user function is a fair alarm.
 */
import { RiskFlag } from './classification.ts';

export interface FnRule { readonly risks: readonly RiskFlag[]; readonly sideEffect: boolean }
const R = RiskFlag;
const FN_EXACT = new Map<string, FnRule>();
const FN_PREFIX: [string, FnRule][] = [];
function fnRule(names: readonly string[], risks: readonly RiskFlag[], sideEffect: boolean, prefixes: readonly string[] = []): void {
  const rule = { risks, sideEffect };
  for (const n of names) FN_EXACT.set(n, rule);
  for (const p of prefixes) FN_PREFIX.push([p, rule]);
}
// Run SQL text given as an argument.
fnRule(['query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat', 'crosstab', 'crosstab2', 'crosstab3',
  'crosstab4', 'connectby', 'pg_background_launch'], [R.dynamic_sql], true);
// Read relations named in a string argument, invisible to `tables`.
fnRule(['table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema',
  'schema_to_xml_and_xmlschema', 'database_to_xml', 'database_to_xmlschema', 'database_to_xml_and_xmlschema'], [R.dynamic_sql], false);
fnRule([], [R.dynamic_sql, R.external_access], true, ['dblink']);
fnRule(['pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file', 'pg_logdir_ls', 'pg_file_read', 'pg_file_length'],
  [R.server_file_access], false, ['pg_ls_']);
fnRule(['lo_import', 'lo_export', 'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync'], [R.server_file_access], true);
fnRule(['pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_rotate_logfile_old', 'pg_promote',
  'pg_switch_wal', 'pg_switch_xlog', 'pg_create_restore_point', 'pg_backup_start', 'pg_backup_stop', 'pg_start_backup',
  'pg_stop_backup', 'pg_log_backend_memory_contexts', 'pg_wal_replay_pause', 'pg_wal_replay_resume', 'pg_xlog_replay_pause',
  'pg_xlog_replay_resume', 'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
  'pg_replication_slot_advance', 'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot',
  'pg_logical_slot_get_changes', 'pg_logical_slot_get_binary_changes', 'pg_logical_emit_message', 'pg_sync_replication_slots'],
  [R.external_access], true, ['pg_replication_origin_', 'pg_stat_reset', 'pg_stat_statements_reset']);
// Side effects without a risk of their own: readOnly false so the audit record is durable first.
fnRule(['nextval', 'setval', 'set_config', 'pg_notify', 'lowrite', 'pg_import_system_collations', 'pg_truncate_visibility_map',
  'pg_clear_attribute_stats', 'pg_clear_relation_stats', 'pg_restore_attribute_stats', 'pg_restore_relation_stats'], [], true,
  ['lo_', 'pg_advisory_', 'pg_try_advisory_', 'binary_upgrade_']);

/**
 * Functions whose string arguments are SQL text: a constant one is classified as if it ran here
 * (dblink to the same server is a classic way round a proxy). Arguments that do not parse are connection
 * strings or names and are skipped.
 */
export const SQL_TEXT_ARGS = /^(query_to_xml|query_to_xmlschema|query_to_xml_and_xmlschema|ts_stat|crosstab\d?|dblink.*|pg_background_launch)$/;

/** The rules for a function's last name part, lower-cased: its exact entry, then every matching prefix entry. */
export function functionRules(base: string): FnRule[] {
  const out: FnRule[] = [];
  const exact = FN_EXACT.get(base);
  if (exact) out.push(exact);
  for (const [p, rule] of FN_PREFIX) if (base.startsWith(p)) out.push(rule);
  return out;
}

/** Settings whose change can lift a guard the gateway relies on. */
export const SENSITIVE_SETTINGS: ReadonlySet<string> = new Set(['transaction_read_only', 'default_transaction_read_only', 'session_replication_role']);
/**
 * Settings that change how the server reads SQL text: with standard_conforming_strings off a backslash
 * escapes a quote, and a client-only multi-byte encoding (SJIS, BIG5, GBK...) can hide a quote or a
 * backslash inside a character. Either way the server would read a statement differently from the parser.
 */
export const LEXICAL_SETTINGS: ReadonlySet<string> = new Set(['standard_conforming_strings', 'backslash_quote', 'client_encoding']);
export const ROLE_SETTINGS: ReadonlySet<string> = new Set(['role', 'session_authorization']);
