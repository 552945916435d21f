/**
 * A local stand-in for Slack's Web API, for tests: the real `WebClient` from @slack/web-api talks to it
 * (`new WebClient(token, { slackApiUrl: server.url })`), so the client's encoding (form fields with
 * JSON-encoded `blocks` and `view`), authentication header and error handling are all exercised.
 *
 * Implemented: chat.postMessage, chat.update, chat.postEphemeral, views.open, answering as Slack does
 * (`{ ok: true, … }` or `{ ok: false, error }` with HTTP 200). It checks what Slack would refuse: a wrong
 * bot token (`invalid_auth`), a missing channel, a `ts` it never issued (`message_not_found`), a missing
 * trigger id, and Block Kit over Slack's limits (`invalid_blocks`: more than 50 blocks, a section text
 * over 3,000 or a field over 2,000 characters, more than 10 fields, a button value over 2,000).
 *
 * @see https://api.slack.com/web
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SlackApiCall {
  readonly method: string;
  /** The bearer token sent, if any. */
  readonly token: string | undefined;
  readonly args: Record<string, unknown>;
}

export interface PostedMessage {
  readonly channel: string;
  readonly ts: string;
  readonly threadTs?: string;
  /** The message as last posted or updated. */
  text: string;
  blocks: unknown[];
  updates: number;
}

export interface SlackApiServer {
  /** `http://127.0.0.1:<port>/api/`: the WebClient's slackApiUrl. */
  readonly url: string;
  /** Every call received, in order. */
  readonly calls: SlackApiCall[];
  /** Messages posted, by `${channel}/${ts}`, with their latest content. */
  readonly messages: Map<string, PostedMessage>;
  callsTo(method: string): SlackApiCall[];
  /** The next call of `method` answers `{ ok: false, error }`. */
  failNext(method: string, error: string): void;
  /** Forgets the calls recorded so far (messages are kept). */
  clearCalls(): void;
  close(): Promise<void>;
}

const MAX_BLOCKS = 50;
const MAX_SECTION_TEXT = 3000;
const MAX_FIELD_TEXT = 2000;
const MAX_FIELDS = 10;

export async function startSlackApiServer(options: { token?: string } = {}): Promise<SlackApiServer> {
  const calls: SlackApiCall[] = [];
  const messages = new Map<string, PostedMessage>();
  const failures = new Map<string, string[]>();
  let tsCounter = 0;
  const nextTs = () => `1700000000.${String(++tsCounter).padStart(6, '0')}`;

  const answer = (method: string, token: string | undefined, args: Record<string, unknown>): Record<string, unknown> => {
    const queued = failures.get(method);
    if (queued && queued.length > 0) return { ok: false, error: queued.shift() };
    if (options.token !== undefined && token !== options.token) return { ok: false, error: 'invalid_auth' };
    const blocksError = args.blocks === undefined ? undefined : checkBlocks(args.blocks);
    if (blocksError) return { ok: false, error: 'invalid_blocks', errors: [blocksError] };
    const channel = typeof args.channel === 'string' ? args.channel : undefined;
    switch (method) {
      case 'chat.postMessage': {
        if (!channel) return { ok: false, error: 'channel_not_found' };
        const threadTs = typeof args.thread_ts === 'string' ? args.thread_ts : undefined;
        if (threadTs !== undefined && !messages.has(`${channel}/${threadTs}`)) return { ok: false, error: 'thread_not_found' };
        const ts = nextTs();
        messages.set(`${channel}/${ts}`, { channel, ts, ...(threadTs ? { threadTs } : {}), text: String(args.text ?? ''), blocks: (args.blocks as unknown[]) ?? [], updates: 0 });
        return { ok: true, channel, ts, message: { text: args.text, blocks: args.blocks } };
      }
      case 'chat.update': {
        const m = messages.get(`${channel}/${String(args.ts)}`);
        if (!m) return { ok: false, error: 'message_not_found' };
        m.text = String(args.text ?? '');
        m.blocks = (args.blocks as unknown[]) ?? [];
        m.updates += 1;
        return { ok: true, channel, ts: m.ts, text: m.text };
      }
      case 'chat.postEphemeral':
        if (!channel) return { ok: false, error: 'channel_not_found' };
        if (typeof args.user !== 'string') return { ok: false, error: 'user_not_found' };
        return { ok: true, message_ts: nextTs() };
      case 'views.open': {
        if (typeof args.trigger_id !== 'string' || args.trigger_id === '') return { ok: false, error: 'invalid_trigger_id' };
        const view = args.view as { blocks?: unknown } | undefined;
        const viewError = view?.blocks === undefined ? 'view has no blocks' : checkBlocks(view.blocks);
        if (viewError) return { ok: false, error: 'invalid_arguments', errors: [viewError] };
        return { ok: true, view: { id: `V${String(++tsCounter).padStart(8, '0')}`, ...view } };
      }
      default:
        return { ok: false, error: 'unknown_method' };
    }
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const method = (req.url ?? '').replace(/^\/api\//, '').split('?')[0] ?? '';
      const auth = req.headers.authorization;
      const token = auth?.startsWith('Bearer ') ? auth.slice('Bearer '.length) : undefined;
      const args = parseArgs(Buffer.concat(chunks).toString('utf8'), String(req.headers['content-type'] ?? ''));
      calls.push({ method, token, args });
      const body = JSON.stringify(answer(method, token, args));
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
      res.end(body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/api/`,
    calls,
    messages,
    callsTo: (method) => calls.filter((c) => c.method === method),
    failNext(method, error) {
      failures.set(method, [...(failures.get(method) ?? []), error]);
    },
    clearCalls() {
      calls.length = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Form fields as the WebClient sends them; objects and arrays arrive JSON-encoded. */
function parseArgs(body: string, contentType: string): Record<string, unknown> {
  if (contentType.includes('application/json')) return body ? (JSON.parse(body) as Record<string, unknown>) : {};
  const args: Record<string, unknown> = {};
  for (const [k, v] of new URLSearchParams(body)) {
    args[k] = /^[[{]/.test(v) ? JSON.parse(v) : v;
  }
  return args;
}

function checkBlocks(blocks: unknown): string | undefined {
  if (!Array.isArray(blocks)) return 'blocks is not an array';
  if (blocks.length > MAX_BLOCKS) return `more than ${MAX_BLOCKS} blocks`;
  for (const [i, b] of blocks.entries()) {
    const block = b as { type?: string; text?: { text?: string }; fields?: { text?: string }[]; elements?: { value?: string }[] };
    if (block.type === 'section') {
      if ((block.text?.text?.length ?? 0) > MAX_SECTION_TEXT) return `blocks[${i}].text over ${MAX_SECTION_TEXT} characters`;
      if ((block.fields?.length ?? 0) > MAX_FIELDS) return `blocks[${i}] has more than ${MAX_FIELDS} fields`;
      for (const f of block.fields ?? []) if ((f.text?.length ?? 0) > MAX_FIELD_TEXT) return `blocks[${i}].fields over ${MAX_FIELD_TEXT} characters`;
      if (!block.text && !block.fields) return `blocks[${i}] has neither text nor fields`;
    }
    if (block.type === 'actions') {
      for (const e of block.elements ?? []) if ((e.value?.length ?? 0) > 2000) return `blocks[${i}] button value over 2000 characters`;
    }
  }
  return undefined;
}
