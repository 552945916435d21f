/**
 * LocalApprovalStore and LocalApprovalService on real files, with real concurrent processes: the gateway
 * and `warden approvals` are separate processes writing the same request files.
 *
 * Proves: two processes voting at once record every vote exactly once (no lost update, no double count);
 * outcome() resolves on a write by another process, with the folder watched or by polling alone; a request
 * nobody decides closes as expired, once, even with two waiters; aborting outcome() rejects with an
 * AbortError and leaves no watcher or timer; a corrupt file is an error naming the file and never hides
 * the other requests; ids that could leave the folder are refused; of processes racing for one async
 * grant exactly one wins; a lock left by a dead process is broken and a live one is waited for.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ApprovalAlreadyExistsError,
  ApprovalFileCorruptError,
  ApprovalIdInvalidError,
  approvalsDir,
  LocalApprovalService,
  LocalApprovalStore,
  newApprovalId,
  type ApprovalFileProblem,
} from '../../../adapters/local/approval-files.ts';
import { newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver } from '../../../core/approval/approval-request.ts';
import { castVote } from '../../../core/approval/approval-rules.ts';
import { recordVote } from '../../../core/approval/approval-store.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const REQUESTER = { issuer: 'https://idp.example', subject: 'etl-bot', groups: ['writers'] };
const roots: string[] = [];
after(() => roots.forEach((d) => rmSync(d, { recursive: true, force: true })));

function freshStore(): LocalApprovalStore {
  const state = mkdtempSync(join(tmpdir(), 'warden-approvals-'));
  roots.push(state);
  return new LocalApprovalStore({ dir: approvalsDir(state) });
}

function request(o: { approvals?: number; expiresInMs?: number; mode?: 'wait' | 'async'; digest?: string; target?: string } = {}): ApprovalRequest {
  const now = Date.now();
  return {
    id: newApprovalId(),
    requester: REQUESTER,
    target: { name: o.target ?? 'ledger', kind: 'postgres', environment: 'production' },
    sessionId: 'sess-1',
    statement: { text: 'DELETE FROM accounts WHERE id = 7', fingerprint: 'fp', digest: o.digest ?? 'd'.repeat(64), command: 'DELETE', tables: ['public.accounts'], risks: [] },
    policies: ['sql.write.production-approval'],
    requirement: { approvers: ['dba'], approvals: o.approvals ?? 1 },
    mode: o.mode ?? 'wait',
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + (o.expiresInMs ?? 15 * 60_000)).toISOString(),
  };
}

const approver = (i: number): Approver => ({ id: `approver-${i}@example.com`, groups: ['dba'] });

// --- child processes -------------------------------------------------------------------------------

/**
 * A child process running one task against the store. It prints `ready`, waits for the go file (so the
 * children start at the same moment, not staggered by their start-up time), runs, and prints its result
 * as JSON.
 */
const CHILD = `
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { LocalApprovalService, LocalApprovalStore } from './adapters/local/approval-files.ts';
import { recordVote } from './core/approval/approval-store.ts';
const task = JSON.parse(process.argv[1]);
const store = new LocalApprovalStore({ dir: task.dir });
process.stdout.write('ready\\n');
while (task.go && !existsSync(task.go)) await sleep(2);
let result;
if (task.kind === 'vote') {
  result = [];
  for (const a of task.approvers) {
    for (let i = 0; i < 2; i++) {
      const r = await recordVote(store, task.id, { approver: a, choice: 'approve', channel: 'cli', now: new Date() }, 100);
      result.push(r.kind);
    }
  }
} else if (task.kind === 'grant') {
  const service = new LocalApprovalService({ store, grantTtlMs: 60_000 });
  result = [];
  for (const digest of task.digests) {
    const used = await service.useGrant(task.requester, task.target, digest);
    if (used) result.push(used.request.id);
  }
}
process.stdout.write(JSON.stringify(result ?? null) + '\\n');
`;

interface Child {
  readonly pid: number;
  readonly ready: Promise<void>;
  readonly result: Promise<unknown>;
}

function child(task: Record<string, unknown>): Child {
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CHILD, JSON.stringify(task)], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((r) => (onReady = r));
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    if (out.includes('ready\n')) onReady();
  });
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const result = new Promise<unknown>((resolve, reject) => {
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${err}`));
      resolve(JSON.parse(out.split('\n').filter(Boolean).at(-1)!));
    });
  });
  return { pid: p.pid!, ready, result };
}

/** Starts the children, lets them go at once, and returns their results. */
async function race(store: LocalApprovalStore, tasks: Record<string, unknown>[]): Promise<unknown[]> {
  const go = join(store.dir, '..', `go-${Math.random().toString(36).slice(2)}`);
  const children = tasks.map((t) => child({ dir: store.dir, go, ...t }));
  await Promise.all(children.map((c) => c.ready));
  writeFileSync(go, '');
  return Promise.all(children.map((c) => c.result));
}

const leftovers = (store: LocalApprovalStore): string[] => readdirSync(store.dir).filter((n) => !/^apr-[0-9a-z]+\.json$/.test(n));

// --- tests -----------------------------------------------------------------------------------------

describe('LocalApprovalStore between processes', () => {
  it('two processes voting at once on one request record every vote exactly once', async () => {
    // Prepare: 16 approvals needed, 8 approvers per process, each voting twice (a double click).
    const store = freshStore();
    const req = request({ approvals: 16 });
    await store.create(newApprovalState(req));
    const approvers = Array.from({ length: 16 }, (_, i) => approver(i));

    // Act
    const [a, b] = (await race(store, [
      { kind: 'vote', id: req.id, approvers: approvers.slice(0, 8) },
      { kind: 'vote', id: req.id, approvers: approvers.slice(8) },
    ])) as string[][];

    // Assess
    for (const r of [a!, b!]) assert.deepEqual(r, Array.from({ length: 8 }, () => ['accepted', 'duplicate']).flat());
    const s = await store.get(req.id);
    assert.ok(s);
    assert.equal(s.status, 'approved');
    assert.equal(s.revision, 16, 'one revision per counted vote');
    assert.deepEqual(s.votes.map((v) => v.approverId).sort(), approvers.map((x) => x.id).sort());
    assert.deepEqual(leftovers(store), [], 'no lock or temporary file is left behind');
  });

  it('of two writers of the same revision exactly one wins, and a change to the request itself is refused', async () => {
    const store = freshStore();
    const req = request({ approvals: 2 });
    await store.create(newApprovalState(req));
    const base = (await store.get(req.id))!;
    const one = castVote(base, { approver: approver(1), choice: 'approve', channel: 'cli', now: new Date() });
    const two = castVote(base, { approver: approver(2), choice: 'approve', channel: 'cli', now: new Date() });
    assert.ok(one.kind === 'accepted' && two.kind === 'accepted');
    const won = await Promise.all([store.replace(one.state), store.replace(two.state)]);
    assert.deepEqual(won.sort(), [false, true]);
    assert.equal(await store.replace(one.state), false, 'a stale revision loses');

    const current = (await store.get(req.id))!;
    const tampered: ApprovalState = { ...current, revision: current.revision + 1, request: { ...current.request, statement: { ...current.request.statement, text: 'DROP TABLE accounts' } } };
    await assert.rejects(store.replace(tampered), /may not alter the request/);
  });

  it('creating an id that exists is refused, also when two creators race', async () => {
    const store = freshStore();
    const state = newApprovalState(request());
    const results = await Promise.allSettled([store.create(state), store.create(state)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(failed.reason instanceof ApprovalAlreadyExistsError);
    assert.deepEqual(await store.get(state.request.id), state);
  });

  it('keeps its files private: folder 0700, files 0600', async () => {
    const store = freshStore();
    const state = newApprovalState(request());
    await store.create(state);
    assert.equal(statSync(store.dir).mode & 0o777, 0o700);
    assert.equal(statSync(store.fileOf(state.request.id)).mode & 0o777, 0o600);
  });

  it('breaks a lock left by a dead process or too old, and waits for a live holder', async () => {
    // Prepare: a lock of a process that has exited.
    const store = freshStore();
    const req = request({ approvals: 3 });
    await store.create(newApprovalState(req));
    const gone = child({ dir: store.dir, kind: 'none' });
    await gone.result;
    const lock = join(store.dir, `${req.id}.lock`);
    writeFileSync(lock, JSON.stringify({ pid: gone.pid, host: (await import('node:os')).hostname(), time: Date.now(), token: 'dead' }));

    // Act / Assess: the dead holder's lock does not block a vote
    const started = Date.now();
    const r1 = await recordVote(store, req.id, { approver: approver(1), choice: 'approve', channel: 'cli', now: new Date() });
    assert.equal(r1.kind, 'accepted');
    assert.ok(Date.now() - started < 1000, 'broken at once, not after the stale age');
    assert.equal(existsSync(lock), false);

    // A live holder (this process, fresh) is waited for until it lets go.
    writeFileSync(lock, JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), time: Date.now(), token: 'live' }));
    setTimeout(() => rmSync(lock), 300);
    const t = Date.now();
    const r2 = await recordVote(store, req.id, { approver: approver(2), choice: 'approve', channel: 'cli', now: new Date() });
    assert.equal(r2.kind, 'accepted');
    assert.ok(Date.now() - t >= 250, 'waited for the live holder');
    assert.equal((await store.get(req.id))!.revision, 2);

    // A lock older than the stale age is broken even if its pid is alive (a reused pid, another host).
    writeFileSync(lock, JSON.stringify({ pid: process.pid, host: 'elsewhere', time: Date.now() - 60_000, token: 'old' }));
    const t3 = Date.now();
    const r3 = await recordVote(store, req.id, { approver: approver(3), choice: 'approve', channel: 'cli', now: new Date() });
    assert.equal(r3.kind, 'accepted');
    assert.ok(Date.now() - t3 < 1000);
    assert.deepEqual(leftovers(store), []);
  });
});

describe('files that are not what they should be', () => {
  it('a corrupt file is an error naming the file, and the other requests are still listed', async () => {
    // Prepare
    const store = freshStore();
    const good = newApprovalState(request());
    await store.create(good);
    const garbage = 'apr-garbage0001' as ApprovalId;
    const wrongShape = 'apr-wrongshape1' as ApprovalId;
    const otherId = 'apr-otherid0001' as ApprovalId;
    writeFileSync(join(store.dir, `${garbage}.json`), '{"request": {"id": ');
    writeFileSync(join(store.dir, `${wrongShape}.json`), JSON.stringify({ ...good, request: { ...good.request, id: wrongShape }, revision: 'one' }));
    writeFileSync(join(store.dir, `${otherId}.json`), JSON.stringify(good));

    // Act / Assess
    await assert.rejects(store.get(garbage), (e: Error) => e instanceof ApprovalFileCorruptError && e.message.includes(store.fileOf(garbage)) && /not valid JSON/.test(e.message));
    await assert.rejects(store.get(wrongShape), (e: Error) => e instanceof ApprovalFileCorruptError && e.message.includes(store.fileOf(wrongShape)) && /revision/.test(e.message));
    await assert.rejects(store.get(otherId), (e: Error) => e instanceof ApprovalFileCorruptError && e.message.includes(`holds request ${good.request.id}`));
    const service = new LocalApprovalService({ store, grantTtlMs: 60_000 });
    await assert.rejects(service.outcome(garbage), ApprovalFileCorruptError);

    const problems: ApprovalFileProblem[] = [];
    const reporting = new LocalApprovalStore({ dir: store.dir, onProblem: (p) => problems.push(p) });
    assert.deepEqual((await reporting.listPending()).map((s) => s.request.id), [good.request.id]);
    assert.deepEqual(problems.map((p) => p.file).sort(), [garbage, otherId, wrongShape].map((id) => store.fileOf(id)).sort());
  });

  it('ids that could name a file outside the folder are refused before any file is touched', async () => {
    const store = freshStore();
    const good = newApprovalState(request());
    for (const bad of ['../x', '..', '.', 'a/b', 'a\\b', '', 'x.json', '%2e%2e', 'a\0b', ' apr', 'x'.repeat(129), '/etc/passwd']) {
      const id = bad as ApprovalId;
      await assert.rejects(store.get(id), ApprovalIdInvalidError, JSON.stringify(bad));
      await assert.rejects(store.create({ ...good, request: { ...good.request, id } }), ApprovalIdInvalidError, JSON.stringify(bad));
      await assert.rejects(store.replace({ ...good, revision: 1, request: { ...good.request, id } }), ApprovalIdInvalidError, JSON.stringify(bad));
    }
    assert.equal(existsSync(store.dir), false, 'nothing was created');
  });

  it('new ids are apr- and 10 unambiguous base32 characters, all different', () => {
    const ids = Array.from({ length: 2000 }, () => newApprovalId());
    for (const id of ids) assert.match(id, /^apr-[0-9a-hjkmnp-tv-z]{10}$/);
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('LocalApprovalService', () => {
  for (const watch of [true, false]) {
    it(`outcome() resolves on a vote written by another process (${watch ? 'watching the folder' : 'polling alone'})`, async () => {
      // Prepare
      const store = freshStore();
      const req = request({ approvals: 1 });
      const service = new LocalApprovalService({ store, grantTtlMs: 60_000, watch });
      await service.submit(req);
      let settled = false;
      const waiting = service.outcome(req.id).finally(() => (settled = true));

      // Act
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(settled, false, 'still pending before anyone votes');
      await race(store, [{ kind: 'vote', id: req.id, approvers: [approver(1)] }]);

      // Assess
      const s = await waiting;
      assert.equal(s.status, 'approved');
      assert.deepEqual(s.votes.map((v) => v.approverId), [approver(1).id]);
    });
  }

  it('a request nobody decides closes as expired, once, even with two waiters', async () => {
    // Prepare: two gateways' services waiting on the same request.
    const store = freshStore();
    const req = request({ expiresInMs: 300 });
    const one = new LocalApprovalService({ store, grantTtlMs: 60_000 });
    const two = new LocalApprovalService({ store: new LocalApprovalStore({ dir: store.dir }), grantTtlMs: 60_000, watch: false });
    await one.submit(req);

    // Act
    const started = Date.now();
    const [a, b] = await Promise.all([one.outcome(req.id), two.outcome(req.id)]);

    // Assess
    assert.equal(a.status, 'expired');
    assert.equal(b.status, 'expired');
    assert.ok(Date.now() - started < 2000);
    const stored = (await store.get(req.id))!;
    assert.deepEqual([stored.status, stored.revision], ['expired', 1]);
    assert.match(stored.outcomeReason ?? '', /expired/);
  });

  it('aborting outcome() rejects with an AbortError, leaves no watcher or timer, and leaves the request pending', async () => {
    // Prepare
    const store = freshStore();
    const req = request();
    const service = new LocalApprovalService({ store, grantTtlMs: 60_000 });
    await service.submit(req);
    const resources = (): Record<string, number> => {
      const counts: Record<string, number> = {};
      for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
      return counts;
    };
    const before = resources();
    const controller = new AbortController();

    // Act
    const waiting = service.outcome(req.id, controller.signal);
    await new Promise((r) => setTimeout(r, 100));
    const during = resources();
    controller.abort(new Error('client cancelled'));

    // Assess
    await assert.rejects(waiting, (e: Error) => e.name === 'AbortError');
    assert.equal(during.FSEventWrap ?? 0, (before.FSEventWrap ?? 0) + 1, 'the folder was watched');
    // A closed handle leaves the list once libuv has run its close callback.
    for (let i = 0; i < 20 && (resources().FSEventWrap ?? 0) > (before.FSEventWrap ?? 0); i++) await new Promise((r) => setTimeout(r, 5));
    const afterwards = resources();
    assert.equal(afterwards.FSEventWrap ?? 0, before.FSEventWrap ?? 0, 'the watcher is closed');
    assert.equal(afterwards.Timeout ?? 0, before.Timeout ?? 0, 'the poll and expiry timers are cleared');
    assert.equal((await store.get(req.id))!.status, 'pending');
    await assert.rejects(service.outcome(req.id, AbortSignal.abort()), (e: Error) => e.name === 'AbortError', 'an aborted signal rejects at once');
  });

  it('withdraw closes a pending request and leaves a decided one alone', async () => {
    const store = freshStore();
    const service = new LocalApprovalService({ store, grantTtlMs: 60_000 });
    const open = request();
    await service.submit(open);
    await service.withdraw(open.id, 'client disconnected');
    assert.deepEqual([(await service.get(open.id))!.status, (await service.outcome(open.id)).outcomeReason], ['withdrawn', 'client disconnected']);

    const decided = request();
    await service.submit(decided);
    await recordVote(store, decided.id, { approver: approver(1), choice: 'approve', channel: 'cli', now: new Date() });
    await service.withdraw(decided.id, 'too late');
    assert.equal((await service.get(decided.id))!.status, 'approved');
  });

  it('useGrant: of processes racing for the same grants, exactly one wins each', async () => {
    // Prepare: 8 approved async requests, each for its own statement.
    const store = freshStore();
    const service = new LocalApprovalService({ store, grantTtlMs: 60_000 });
    const digests = Array.from({ length: 8 }, (_, i) => `${i}`.repeat(64));
    const ids: string[] = [];
    for (const digest of digests) {
      const req = request({ mode: 'async', digest });
      await service.submit(req);
      await recordVote(store, req.id, { approver: approver(1), choice: 'approve', channel: 'cli', now: new Date() });
      ids.push(req.id);
    }

    // Act
    const task = { kind: 'grant', requester: { issuer: REQUESTER.issuer, subject: REQUESTER.subject }, target: 'ledger', digests };
    const results = (await race(store, [task, task, task])) as string[][];

    // Assess
    assert.deepEqual(results.flat().sort(), [...ids].sort(), `each grant used once: ${JSON.stringify(results)}`);
    for (const id of ids) {
      const s = (await store.get(id as ApprovalId))!;
      assert.ok(s.executedAt);
      assert.equal(s.revision, 2);
    }
    assert.equal(await service.useGrant(task.requester, 'ledger', digests[0]!), undefined, 'a used grant is gone');
  });

  it('useGrant finds only an approved async request of the same requester, target and statement, within its time to live', async () => {
    const store = freshStore();
    let now = new Date();
    const service = new LocalApprovalService({ store, grantTtlMs: 60_000, now: () => now });
    const approve = async (req: ApprovalRequest): Promise<void> => {
      await service.submit(req);
      await recordVote(store, req.id, { approver: approver(1), choice: 'approve', channel: 'cli', now: new Date() });
    };
    const who = { issuer: REQUESTER.issuer, subject: REQUESTER.subject };
    await approve(request({ mode: 'wait', digest: 'w'.repeat(64) }));
    await service.submit(request({ mode: 'async', digest: 'p'.repeat(64) })); // pending
    await approve(request({ mode: 'async', digest: 'a'.repeat(64) }));

    assert.equal(await service.useGrant(who, 'ledger', 'w'.repeat(64)), undefined, 'a wait-mode approval is no grant');
    assert.equal(await service.useGrant(who, 'ledger', 'p'.repeat(64)), undefined, 'not approved yet');
    assert.equal(await service.useGrant({ ...who, subject: 'other-bot' }, 'ledger', 'a'.repeat(64)), undefined, 'another requester');
    assert.equal(await service.useGrant({ ...who, issuer: 'https://other.example' }, 'ledger', 'a'.repeat(64)), undefined, 'another issuer');
    assert.equal(await service.useGrant(who, 'ledger2', 'a'.repeat(64)), undefined, 'another target');
    assert.equal(await service.useGrant(who, 'ledger', 'b'.repeat(64)), undefined, 'another statement');
    now = new Date(Date.now() + 61_000);
    assert.equal(await service.useGrant(who, 'ledger', 'a'.repeat(64)), undefined, 'past its time to live');
    now = new Date();
    assert.ok(await service.useGrant(who, 'ledger', 'a'.repeat(64)));
  });
});

