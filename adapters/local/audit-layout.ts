/**
 * Layout of a local audit dir (shared by the sink, the readers and the signing key):
 *   sessions/<sessionId>.jsonl  one event per line (the chained event's JSON)
 *   index.jsonl                 one line when a session starts and one when it ends
 *   journal.wal                 write-ahead journal: `<sessionId or @index>\t<line>` (audit-journal.ts)
 */
import type { SessionId } from '../../core/audit/events.ts';

/** Mode of the files Warden creates in an audit dir (private to its user). */
export const FILE_MODE = 0o600;
/** Mode of the directories Warden creates for audit data. */
export const DIR_MODE = 0o700;

export function sessionFileName(sessionId: SessionId): string {
  return `sessions/${sessionId}.jsonl`;
}
