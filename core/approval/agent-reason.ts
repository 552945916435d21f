/**
 * The reason an agent gives for a statement that may need approval, written in the statement itself as
 * a comment, so any client and driver can send it and it travels with the text the approver reads:
 *
 *   UPDATE orders SET status = 'void' WHERE id = 42 /* warden:reason="ticket OPS-123: duplicate order" *\/
 *
 * Double quotes inside are written `\"`. Only block comments count (a `--` comment ends at the line, and
 * drivers strip or keep it differently); the first such comment wins; at most 500 characters are kept.
 */
const REASON = /\/\*\s*warden:reason\s*=\s*"((?:[^"\\]|\\.)*)"\s*\*\//;
const MAX_REASON = 500;

export function agentReasonOf(sql: string): string | undefined {
  const m = REASON.exec(sql);
  if (!m) return undefined;
  // Control characters would let a reason forge lines in a terminal or a Slack message.
  const text = m[1]!.replace(/\\(.)/g, '$1').replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  if (text === '') return undefined;
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON)}…` : text;
}
