/**
 * The Slack side of an approval as data: Block Kit for the request message, its thread with the full
 * statement, the message as it stands after each vote or once closed, and the deny modal. Pure builders:
 * the Lambdas post what these return.
 *
 * Everything an agent or a configuration controls is escaped (`&`, `<`, `>`) before it lands in mrkdwn,
 * so `<!channel>`, `<@U…>` or a crafted link in a statement, a reason or a subject renders as text and
 * never notifies or links. The agent's words are quoted and labelled as its own, so they cannot pass for
 * Warden's verdict.
 *
 * @see https://api.slack.com/reference/surfaces/formatting#escaping
 * @see https://api.slack.com/reference/block-kit/blocks
 */
import { ApprovalStatus, VoteChoice, type ApprovalRequest, type ApprovalState, type ApprovalVote } from './approval-request.ts';
import { approvalsMissing } from './approval-rules.ts';

/** action_id of the buttons, matched by the interaction function. */
export const SlackActionId = { approve: 'warden_approve', deny: 'warden_deny' } as const;
/** callback_id of the deny modal. */
export const DENY_MODAL_CALLBACK_ID = 'warden_deny_reason';
/** Where the deny modal's reason is found in `view.state.values[block_id][action_id]`. */
export const DENY_REASON_BLOCK_ID = 'warden_deny_reason';
export const DENY_REASON_ACTION_ID = 'reason';
/** Longest denial reason accepted in the modal (it becomes the cause the agent sees). */
export const DENY_REASON_MAX_CHARS = 1000;
const DECISION_BLOCK_ID = 'warden_decision';

/** Characters of the statement (as escaped for Slack) shown in the request message itself. */
export const STATEMENT_PREVIEW_CHARS = 2500;
/** One section's text may hold 3,000 characters; the code fences and a little slack take the rest. */
export const THREAD_CHUNK_CHARS = 2900;
const SECTIONS_PER_THREAD_MESSAGE = 10;
/** Past this many thread replies (about 145,000 characters) the thread says where the rest is. */
export const MAX_THREAD_MESSAGES = 5;

export interface MrkdwnText {
  type: 'mrkdwn';
  text: string;
}
export interface PlainText {
  type: 'plain_text';
  text: string;
  emoji?: boolean;
}
export interface SectionBlock {
  type: 'section';
  block_id?: string;
  text?: MrkdwnText;
  fields?: MrkdwnText[];
}
export interface ContextBlock {
  type: 'context';
  elements: MrkdwnText[];
}
export interface DividerBlock {
  type: 'divider';
}
export interface ButtonElement {
  type: 'button';
  action_id: string;
  text: PlainText;
  value: string;
  style?: 'primary' | 'danger';
}
export interface ActionsBlock {
  type: 'actions';
  block_id?: string;
  elements: ButtonElement[];
}
export interface InputBlock {
  type: 'input';
  block_id: string;
  label: PlainText;
  hint?: PlainText;
  optional?: boolean;
  element: {
    type: 'plain_text_input';
    action_id: string;
    multiline?: boolean;
    min_length?: number;
    max_length?: number;
    placeholder?: PlainText;
  };
}
export type SlackBlock = SectionBlock | ContextBlock | DividerBlock | ActionsBlock | InputBlock;

/** What chat.postMessage / chat.update take besides channel and ts. `text` is the notification and screen-reader fallback. */
export interface SlackMessage {
  text: string;
  blocks: SlackBlock[];
}

export interface SlackModalView {
  type: 'modal';
  callback_id: string;
  private_metadata: string;
  title: PlainText;
  submit: PlainText;
  close: PlainText;
  blocks: SlackBlock[];
}

/** Escapes the three characters Slack treats as markup in any text field. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

/** Whether the request message shows only the start of the statement (the rest goes to the thread). */
export function statementIsTruncated(request: ApprovalRequest): boolean {
  return splitEscaped(request.statement.text, STATEMENT_PREVIEW_CHARS, 1, true).consumed < request.statement.text.length;
}

/** The message for a request: with Approve / Deny while pending, the closed form otherwise. */
export function renderApprovalMessage(state: ApprovalState): SlackMessage {
  return state.status === ApprovalStatus.pending ? renderRequestMessage(state) : renderClosedMessage(state);
}

/** The request message as it stands while pending: who asks for what, why, the votes so far and the buttons. */
export function renderRequestMessage(state: ApprovalState): SlackMessage {
  const { request } = state;
  const missing = approvalsMissing(state);
  const blocks: SlackBlock[] = [
    section(`:raised_hand: *Approval needed* for a statement on *${show(request.target.name, 200)}* (${show(request.target.environment, 100)})`),
    ...describeRequest(request),
    section(
      [
        `*Approvals:* ${request.requirement.approvals} needed from ${request.requirement.approvers.map((g) => show(g, 100)).join(' or ')}; ` +
          `${missing} missing`,
        ...voteLines(state.votes),
      ].join('\n'),
    ),
    requestContext(request),
    {
      type: 'actions',
      block_id: DECISION_BLOCK_ID,
      elements: [
        { type: 'button', action_id: SlackActionId.approve, text: plain('Approve'), value: request.id, style: 'primary' },
        { type: 'button', action_id: SlackActionId.deny, text: plain('Deny'), value: request.id, style: 'danger' },
      ],
    },
  ];
  return { text: `Approval needed: ${summary(request)}`, blocks };
}

const CLOSED_HEADLINE: Record<Exclude<ApprovalStatus, 'pending'>, string> = {
  approved: ':white_check_mark: *Approved*',
  denied: ':no_entry: *Denied*',
  expired: ':hourglass: *Expired*',
  withdrawn: ':leftwards_arrow_with_hook: *Withdrawn*',
};

/**
 * The message once the request closed (approved, denied, expired, withdrawn): who decided, when and why,
 * the request as it was, and no buttons. Also what the outcome function posts for expiry and withdrawal.
 */
export function renderClosedMessage(state: ApprovalState): SlackMessage {
  const { request } = state;
  const status = state.status === ApprovalStatus.pending ? undefined : state.status;
  const headline = status ? CLOSED_HEADLINE[status] : '*Pending*';
  const outcome: string[] = [`${headline} — statement on *${show(request.target.name, 200)}* (${show(request.target.environment, 100)})`];
  if (state.decidedAt) outcome.push(`*Decided:* ${slackDate(state.decidedAt)}`);
  const deciders = state.votes.filter((v) => (status === ApprovalStatus.denied ? v.choice === VoteChoice.deny : v.choice === VoteChoice.approve));
  if (status === ApprovalStatus.approved || status === ApprovalStatus.denied) {
    outcome.push(`*${status === ApprovalStatus.approved ? 'Approved' : 'Denied'} by:* ${deciders.map((v) => show(v.approverId, 200)).join(', ') || 'nobody'}`);
  }
  if (state.outcomeReason) outcome.push(`*Why:*\n${quote(state.outcomeReason, 1200)}`);
  const blocks: SlackBlock[] = [
    section(outcome.join('\n')),
    ...describeRequest(request),
    ...(state.votes.length > 0 ? [section(['*Votes:*', ...voteLines(state.votes)].join('\n'))] : []),
    requestContext(request),
  ];
  const word = status ? status[0]!.toUpperCase() + status.slice(1) : 'Pending';
  return { text: `${word}: ${summary(request)}`, blocks };
}

/**
 * Thread replies holding the whole statement, in code blocks of at most THREAD_CHUNK_CHARS; empty when
 * the request message already shows all of it. A statement too long even for the thread ends with a
 * note naming its length and digest.
 */
export function renderStatementThread(request: ApprovalRequest): SlackMessage[] {
  if (!statementIsTruncated(request)) return [];
  const text = request.statement.text;
  const { chunks, consumed } = splitEscaped(text, THREAD_CHUNK_CHARS, SECTIONS_PER_THREAD_MESSAGE * MAX_THREAD_MESSAGES, true);
  const messages: SlackMessage[] = [];
  const parts = Math.ceil(chunks.length / SECTIONS_PER_THREAD_MESSAGE);
  for (let m = 0; m < parts; m++) {
    const slice = chunks.slice(m * SECTIONS_PER_THREAD_MESSAGE, (m + 1) * SECTIONS_PER_THREAD_MESSAGE);
    const blocks: SlackBlock[] = slice.map((c) => section(codeBlock(c)));
    blocks.unshift({ type: 'context', elements: [mrkdwn(`Full statement of request ${show(request.id, 200)}, part ${m + 1} of ${parts}`)] });
    messages.push({ text: `Full statement of request ${escapeMrkdwn(request.id)} (part ${m + 1} of ${parts})`, blocks });
  }
  if (consumed < text.length) {
    const last = messages[messages.length - 1]!;
    last.blocks.push({
      type: 'context',
      elements: [mrkdwn(`The statement is ${text.length.toLocaleString('en-US')} characters long; Slack shows the first ${consumed.toLocaleString('en-US')}. SHA-256 of the statement: ${show(request.statement.digest, 200)}`)],
    });
  }
  return messages;
}

/** The `views.open` arguments of the modal that asks a denier for the reason the agent will see. */
export function renderDenyModal(request: ApprovalRequest, triggerId: string): { trigger_id: string; view: SlackModalView } {
  return {
    trigger_id: triggerId,
    view: {
      type: 'modal',
      callback_id: DENY_MODAL_CALLBACK_ID,
      private_metadata: request.id,
      title: plain('Deny request'),
      submit: plain('Deny'),
      close: plain('Cancel'),
      blocks: [
        section(`Deny *${show(request.statement.command, 100)}* on *${show(request.target.name, 200)}* (${show(request.target.environment, 100)}) requested by ${show(request.requester.subject, 300)}?`),
        {
          type: 'input',
          block_id: DENY_REASON_BLOCK_ID,
          label: plain('Reason'),
          hint: plain('The agent and the audit trail will see this reason.'),
          element: {
            type: 'plain_text_input',
            action_id: DENY_REASON_ACTION_ID,
            multiline: true,
            min_length: 1,
            max_length: DENY_REASON_MAX_CHARS,
          },
        },
      ],
    },
  };
}

/** Text of an ephemeral answer to a click that did not count. */
export function renderRefusal(message: string): SlackMessage {
  const text = `:warning: Your vote was not counted: ${show(message, 500)}`;
  return { text, blocks: [section(text)] };
}

// ---------------------------------------------------------------------------------------------------

function describeRequest(request: ApprovalRequest): SlackBlock[] {
  const { requester, target, statement } = request;
  const blocks: SlackBlock[] = [
    {
      type: 'section',
      fields: [
        mrkdwn(`*Agent*\n${show(requester.subject, 200)}\n${show(requester.issuer, 150)}`),
        mrkdwn(`*Agent groups*\n${list(requester.groups)}`),
        mrkdwn(`*Target*\n${show(target.name, 200)} (${show(target.environment, 100)})`),
        mrkdwn(`*Command*\n${show(statement.command, 200)}`),
        mrkdwn(`*Tables*\n${list(statement.tables)}`),
        mrkdwn(`*Risks*\n${list(statement.risks)}`),
      ],
    },
  ];
  const preview = splitEscaped(statement.text, STATEMENT_PREVIEW_CHARS, 1, true);
  blocks.push(section(`*Statement* (${statement.text.length.toLocaleString('en-US')} characters)\n${codeBlock(preview.chunks[0] ?? '')}`));
  if (preview.consumed < statement.text.length) {
    blocks.push({
      type: 'context',
      elements: [mrkdwn(`:scissors: Truncated: the first ${preview.consumed.toLocaleString('en-US')} of ${statement.text.length.toLocaleString('en-US')} characters are shown. The full statement is in the thread.`)],
    });
  }
  const policy = [`*Held by policy:* ${list(request.policies)}`];
  if (request.policyReason) policy.push(show(oneLine(request.policyReason), 1000));
  blocks.push(section(policy.join('\n')));
  blocks.push(section(request.reason ? `*Reason given by the agent:*\n${quote(request.reason, 1500)}` : '*Reason given by the agent:* _none_'));
  return blocks;
}

function requestContext(request: ApprovalRequest): ContextBlock {
  return {
    type: 'context',
    elements: [mrkdwn(`Request ${show(request.id, 200)} · ${request.mode} mode · requested ${slackDate(request.createdAt)} · expires ${slackDate(request.expiresAt)}`)],
  };
}

function voteLines(votes: readonly ApprovalVote[]): string[] {
  return votes.map((v) => {
    const head = v.choice === VoteChoice.approve ? ':white_check_mark:' : ':no_entry:';
    const verb = v.choice === VoteChoice.approve ? 'approved' : 'denied';
    const why = v.reason ? `: ${show(oneLine(v.reason), 300)}` : '';
    return `${head} ${show(v.approverId, 200)} ${verb} ${slackDate(v.at)} via ${show(v.channel, 20)}${why}`;
  });
}

function summary(request: ApprovalRequest): string {
  return `${show(request.statement.command, 100)} on ${show(request.target.name, 200)} (${show(request.target.environment, 100)}) requested by ${show(request.requester.subject, 200)}`;
}

/** Slack renders this in each reader's time zone; the fallback after `|` is the ISO time. */
function slackDate(iso: string): string {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return show(iso, 40);
  return `<!date^${Math.floor(ms / 1000)}^{date_short_pretty} {time_secs}|${new Date(ms).toISOString()}>`;
}

function section(text: string): SectionBlock {
  return { type: 'section', text: mrkdwn(text) };
}
function mrkdwn(text: string): MrkdwnText {
  return { type: 'mrkdwn', text };
}
function plain(text: string): PlainText {
  return { type: 'plain_text', text, emoji: true };
}

/** User-controlled text for mrkdwn: escaped, and at most `max` characters once escaped. */
function show(text: string, max: number): string {
  const { chunks, consumed } = splitEscaped(text, max - 1, 1, false);
  return (chunks[0] ?? '') + (consumed < text.length ? '…' : '');
}

function list(items: readonly string[], max = 20): string {
  if (items.length === 0) return '_none_';
  const shown = items.slice(0, max).map((i) => show(oneLine(i), 120));
  return shown.join(', ') + (items.length > max ? ` and ${items.length - max} more` : '');
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** A block quote: the agent's or a denier's words, visibly not Warden's. */
function quote(text: string, max: number): string {
  return show(text.trim(), max)
    .split(/\r?\n/)
    .map((line) => `>${line}`)
    .join('\n');
}

function codeBlock(escaped: string): string {
  return `\`\`\`\n${escaped.length > 0 ? escaped : ' '}\n\`\`\``;
}

/**
 * Splits text into at most `maxChunks` pieces whose escaped form is at most `budget` characters each,
 * never inside a surrogate pair or an escape. With `inCode`, a backtick followed by another gets a
 * zero-width space after it, so no statement can close the code block (and go on as formatted text).
 * `consumed` is how many characters of `text` the chunks hold.
 */
function splitEscaped(text: string, budget: number, maxChunks: number, inCode: boolean): { chunks: string[]; consumed: number } {
  const chunks: string[] = [];
  let current = '';
  let i = 0;
  while (i < text.length) {
    const cp = text.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    const ch = text.slice(i, i + width);
    let out = ch === '&' ? '&amp;' : ch === '<' ? '&lt;' : ch === '>' ? '&gt;' : ch;
    if (inCode && ch === '`' && text[i + 1] === '`') out = '`\u200b';
    if (current.length + out.length > budget) {
      if (current.length === 0) break;
      chunks.push(current);
      current = '';
      if (chunks.length >= maxChunks) return { chunks, consumed: i };
      continue;
    }
    current += out;
    i += width;
  }
  if (current.length > 0 || chunks.length === 0) chunks.push(current);
  return { chunks, consumed: i };
}
