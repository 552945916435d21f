/** The vote rules every way of voting shares (Slack, `warden approvals`): the ways people try to get around them. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { newApprovalState, type ApprovalId, type ApprovalRequest, type ApprovalState, type Approver, type VoteChoice } from '../../../../core/approval/approval-request.ts';
import { approvalsMissing, castVote, expire, useGrant, withdraw, type VoteInput, type VoteResult } from '../../../../core/approval/approval-rules.ts';

const T0 = Date.parse('2030-01-01T12:00:00.000Z');
const MIN = 60_000;
const EXPIRES = T0 + 15 * MIN;
const at = (ms: number): Date => new Date(ms);

const REQUESTER = { issuer: 'https://idp.example', subject: 'ci-bot', groups: ['agents', 'dba'] };

function request(over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    id: 'apr-test000001' as ApprovalId,
    requester: REQUESTER,
    target: { name: 'billing', kind: 'postgres', environment: 'production' },
    sessionId: 'sess-1',
    statement: { text: 'DELETE FROM users WHERE id = 1', fingerprint: 'fp', digest: 'd1', command: 'DELETE', tables: ['public.users'], risks: [] },
    policies: ['prod-writes'],
    requirement: { approvers: ['dba'], approvals: 2 },
    mode: 'async',
    createdAt: new Date(T0).toISOString(),
    expiresAt: new Date(EXPIRES).toISOString(),
    ...over,
  };
}

const A = {
  alice: { id: 'alice@example.com', groups: ['dba'] },
  bob: { id: 'bob@example.com', groups: ['sre', 'dba'] },
  carol: { id: 'carol@example.com', groups: ['dba'] },
  dev: { id: 'dave@example.com', groups: ['dev'] },
  /** Configured under the requester's own subject. */
  selfBySubject: { id: 'ci-bot', groups: ['dba'] },
  /** The person behind the agent, mapped by a configured identity. */
  selfByIdentity: { id: 'owner@example.com', groups: ['dba'], identities: [{ issuer: 'https://idp.example', subject: 'ci-bot' }] },
  /** Same subject at another issuer: a different identity, so not the requester. */
  otherIssuer: { id: 'twin@example.com', groups: ['dba'], identities: [{ issuer: 'https://other.example', subject: 'ci-bot' }] },
  prefix: { id: 'p@example.com', groups: ['db'] },
  suffix: { id: 's@example.com', groups: ['dba-admins'] },
  infix: { id: 'i@example.com', groups: ['xdba'] },
  upper: { id: 'u@example.com', groups: ['DBA'] },
  spaced: { id: 'w@example.com', groups: [' dba'] },
} satisfies Record<string, Approver>;

const vote = (approver: Approver | undefined, choice: VoteChoice, now = T0 + MIN, reason?: string): VoteInput => ({
  approver,
  choice,
  channel: 'cli',
  now: at(now),
  ...(reason !== undefined ? { reason } : {}),
});

/** Applies votes that must all be accepted; returns the state after them. */
function after(state: ApprovalState, ...inputs: VoteInput[]): ApprovalState {
  for (const input of inputs) {
    const r = castVote(state, input);
    assert.equal(r.kind, 'accepted', `setup vote by ${input.approver?.id}: ${r.kind === 'refused' ? r.message : r.kind}`);
    state = r.state;
  }
  return state;
}

const pending = (over: Partial<ApprovalRequest> = {}): ApprovalState => newApprovalState(request(over));

interface Row {
  readonly name: string;
  readonly state: () => ApprovalState;
  readonly input: VoteInput;
  readonly expect: { kind: VoteResult['kind']; refusal?: string; status?: ApprovalState['status']; revision?: number };
}

const rows: Row[] = [
  { name: 'an unknown approver is refused', state: () => pending(), input: vote(undefined, 'approve'), expect: { kind: 'refused', refusal: 'unknown_approver' } },
  { name: 'an approver of another group is refused', state: () => pending(), input: vote(A.dev, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'the requester approving by their subject id is refused', state: () => pending(), input: vote(A.selfBySubject, 'approve'), expect: { kind: 'refused', refusal: 'self_approval' } },
  { name: 'the requester approving by a configured identity is refused', state: () => pending(), input: vote(A.selfByIdentity, 'approve'), expect: { kind: 'refused', refusal: 'self_approval' } },
  { name: 'the requester cannot deny their own request either', state: () => pending(), input: vote(A.selfByIdentity, 'deny', T0 + MIN, 'no'), expect: { kind: 'refused', refusal: 'self_approval' } },
  { name: 'the same subject at another issuer is someone else', state: () => pending(), input: vote(A.otherIssuer, 'approve'), expect: { kind: 'accepted', status: 'pending', revision: 1 } },
  { name: 'a group that is a prefix of the required one does not match', state: () => pending(), input: vote(A.prefix, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'a group that extends the required one does not match', state: () => pending(), input: vote(A.suffix, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'a group that contains the required one does not match', state: () => pending(), input: vote(A.infix, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'a group in other case does not match', state: () => pending(), input: vote(A.upper, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'a group with a leading space does not match', state: () => pending(), input: vote(A.spaced, 'approve'), expect: { kind: 'refused', refusal: 'not_in_group' } },
  { name: 'a vote 1 ms before the expiry counts', state: () => pending(), input: vote(A.alice, 'approve', EXPIRES - 1), expect: { kind: 'accepted', status: 'pending', revision: 1 } },
  { name: 'a vote exactly at the expiry is refused', state: () => pending(), input: vote(A.alice, 'approve', EXPIRES), expect: { kind: 'refused', refusal: 'expired' } },
  { name: 'a vote after the expiry is refused', state: () => pending(), input: vote(A.alice, 'approve', EXPIRES + 1), expect: { kind: 'refused', refusal: 'expired' } },
  { name: 'a vote on an expired request is refused as closed', state: () => expire(pending(), at(EXPIRES)), input: vote(A.alice, 'approve', EXPIRES + 1), expect: { kind: 'refused', refusal: 'closed' } },
  { name: 'a vote on a withdrawn request is refused', state: () => withdraw(pending(), at(T0), 'cancelled'), input: vote(A.alice, 'approve'), expect: { kind: 'refused', refusal: 'closed' } },
  { name: 'a vote after a denial is refused', state: () => after(pending(), vote(A.bob, 'deny', T0 + MIN, 'risky')), input: vote(A.alice, 'approve'), expect: { kind: 'refused', refusal: 'closed' } },
  { name: 'a denial after the approval is refused', state: () => after(pending(), vote(A.alice, 'approve'), vote(A.bob, 'approve')), input: vote(A.carol, 'deny', T0 + MIN, 'too late'), expect: { kind: 'refused', refusal: 'closed' } },
  { name: 'a repeated approval is a no-op', state: () => after(pending(), vote(A.alice, 'approve')), input: vote(A.alice, 'approve', T0 + 2 * MIN), expect: { kind: 'duplicate', status: 'pending', revision: 1 } },
  { name: 'a repeated approval after the request closed is still a no-op', state: () => after(pending(), vote(A.alice, 'approve'), vote(A.bob, 'approve')), input: vote(A.alice, 'approve', EXPIRES + MIN), expect: { kind: 'duplicate', status: 'approved', revision: 2 } },
  { name: 'a repeated denial is a no-op', state: () => after(pending(), vote(A.bob, 'deny', T0 + MIN, 'risky')), input: vote(A.bob, 'deny', T0 + 2 * MIN, 'still risky'), expect: { kind: 'duplicate', status: 'denied', revision: 1 } },
  { name: 'approving then denying closes the request as denied', state: () => after(pending(), vote(A.alice, 'approve')), input: vote(A.alice, 'deny', T0 + 2 * MIN, 'changed my mind'), expect: { kind: 'accepted', status: 'denied', revision: 2 } },
  { name: 'a denial without a reason is refused', state: () => pending(), input: vote(A.alice, 'deny'), expect: { kind: 'refused', refusal: 'reason_required' } },
  { name: 'a denial with an empty reason is refused', state: () => pending(), input: vote(A.alice, 'deny', T0 + MIN, ''), expect: { kind: 'refused', refusal: 'reason_required' } },
  { name: 'a denial with a whitespace reason is refused', state: () => pending(), input: vote(A.alice, 'deny', T0 + MIN, ' \t\n '), expect: { kind: 'refused', refusal: 'reason_required' } },
  { name: 'one approval of two leaves the request pending', state: () => pending(), input: vote(A.alice, 'approve'), expect: { kind: 'accepted', status: 'pending', revision: 1 } },
  { name: 'the second distinct approval approves it', state: () => after(pending(), vote(A.alice, 'approve')), input: vote(A.bob, 'approve'), expect: { kind: 'accepted', status: 'approved', revision: 2 } },
  {
    name: 'an approver of any required group counts',
    state: () => pending({ requirement: { approvers: ['security', 'dba'], approvals: 1 } }),
    input: vote(A.alice, 'approve'),
    expect: { kind: 'accepted', status: 'approved', revision: 1 },
  },
];

describe('castVote', () => {
  for (const row of rows) {
    it(row.name, () => {
      // Prepare
      const state = row.state();

      // Act
      const r = castVote(state, row.input);

      // Assess
      assert.equal(r.kind, row.expect.kind, r.kind === 'refused' ? r.message : undefined);
      if (row.expect.refusal !== undefined) assert.equal(r.kind === 'refused' && r.refusal, row.expect.refusal);
      if (r.kind !== 'accepted') assert.equal(r.state, state, 'a vote that does not count changes nothing');
      if (row.expect.status !== undefined) assert.equal(r.state.status, row.expect.status);
      if (row.expect.revision !== undefined) assert.equal(r.state.revision, row.expect.revision);
    });
  }

  it('2 of 3: the same approver twice does not count twice', () => {
    let s = pending({ requirement: { approvers: ['dba'], approvals: 2 } });
    s = after(s, vote(A.alice, 'approve'));
    const again = castVote(s, vote(A.alice, 'approve', T0 + 2 * MIN));
    assert.equal(again.kind, 'duplicate');
    assert.equal(again.state.status, 'pending');
    assert.equal(approvalsMissing(again.state), 1);
    assert.equal(again.state.votes.length, 1);
    const second = castVote(again.state, vote(A.carol, 'approve', T0 + 3 * MIN));
    assert.equal(second.kind, 'accepted');
    assert.equal(second.state.status, 'approved');
    assert.deepEqual(second.state.votes.map((v) => v.approverId), [A.alice.id, A.carol.id]);
    assert.equal(approvalsMissing(second.state), 0);
  });

  it('a denial records the trimmed reason as the outcome and replaces an earlier approval of the same approver', () => {
    const s = after(pending(), vote(A.alice, 'approve'), vote(A.alice, 'deny', T0 + 2 * MIN, '  not on a Friday  '));
    assert.equal(s.status, 'denied');
    assert.equal(s.outcomeReason, 'not on a Friday');
    assert.deepEqual(s.votes.map((v) => [v.approverId, v.choice, v.reason]), [[A.alice.id, 'deny', 'not on a Friday']]);
    assert.equal(s.decidedAt, new Date(T0 + 2 * MIN).toISOString());
  });

  it('a denial cannot be turned into an approval', () => {
    const s = after(pending(), vote(A.alice, 'deny', T0 + MIN, 'no'));
    const r = castVote(s, vote(A.alice, 'approve', T0 + 2 * MIN));
    assert.equal(r.kind, 'refused');
    assert.equal(s.status, 'denied');
  });
});

describe('expire', () => {
  it('leaves a request alone 1 ms before its expiry', () => {
    const s = pending();
    assert.equal(expire(s, at(EXPIRES - 1)), s);
  });
  it('closes a pending request exactly at its expiry, once', () => {
    const s = expire(pending(), at(EXPIRES));
    assert.equal(s.status, 'expired');
    assert.equal(s.revision, 1);
    assert.equal(s.decidedAt, new Date(EXPIRES).toISOString());
    assert.equal(expire(s, at(EXPIRES + MIN)), s);
  });
  it('never reopens or re-closes a decided request', () => {
    const approved = after(pending(), vote(A.alice, 'approve'), vote(A.bob, 'approve'));
    assert.equal(expire(approved, at(EXPIRES + MIN)), approved);
  });
});

describe('withdraw', () => {
  it('closes a pending request with the reason given', () => {
    const s = withdraw(pending(), at(T0 + MIN), 'client disconnected');
    assert.deepEqual([s.status, s.revision, s.outcomeReason], ['withdrawn', 1, 'client disconnected']);
  });
  it('does not touch a decided request (an approval stays an approval)', () => {
    const approved = after(pending(), vote(A.alice, 'approve'), vote(A.bob, 'approve'));
    assert.equal(withdraw(approved, at(T0 + 2 * MIN), 'late cancel'), approved);
  });
});

describe('useGrant', () => {
  const TTL = 10 * MIN;
  const approved = (): ApprovalState => after(pending(), vote(A.alice, 'approve'), vote(A.bob, 'approve', T0 + 2 * MIN));
  const decided = T0 + 2 * MIN;

  it('is single use', () => {
    const used = useGrant(approved(), at(decided + MIN), TTL);
    assert.ok(used);
    assert.equal(used.executedAt, new Date(decided + MIN).toISOString());
    assert.equal(used.revision, 3);
    assert.equal(useGrant(used, at(decided + 2 * MIN), TTL), undefined);
  });
  it('may be used exactly at the end of its time to live, not 1 ms later', () => {
    assert.ok(useGrant(approved(), at(decided + TTL), TTL));
    assert.equal(useGrant(approved(), at(decided + TTL + 1), TTL), undefined);
  });
  it('is nothing before the approval, after a denial, an expiry or a withdrawal', () => {
    const halfway = after(pending(), vote(A.alice, 'approve'));
    for (const s of [
      pending(),
      halfway,
      after(pending(), vote(A.alice, 'deny', T0 + MIN, 'no')),
      expire(halfway, at(EXPIRES)),
      withdraw(halfway, at(T0 + 2 * MIN), 'gone'),
    ]) {
      assert.equal(useGrant(s, at(T0 + 3 * MIN), TTL), undefined, s.status);
    }
  });
  it('is nothing for an approved state without a decision time (never trusted blindly)', () => {
    const { decidedAt: _dropped, ...withoutTime } = approved();
    assert.equal(useGrant(withoutTime, at(decided + MIN), TTL), undefined);
  });
});

// --- property -------------------------------------------------------------------------------------

const POOL: readonly (Approver | undefined)[] = [A.alice, A.bob, A.carol, A.dev, A.selfBySubject, A.selfByIdentity, A.otherIssuer, A.upper, A.prefix, undefined];

type Op =
  | { readonly op: 'vote'; readonly who: number; readonly choice: VoteChoice; readonly reason: string | undefined; readonly dt: number }
  | { readonly op: 'expire' | 'withdraw' | 'grant'; readonly dt: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('vote' as const),
      who: fc.integer({ min: 0, max: POOL.length - 1 }),
      choice: fc.constantFrom<VoteChoice>('approve', 'approve', 'deny'),
      reason: fc.constantFrom(undefined, '', '   ', 'because'),
      dt: fc.integer({ min: 0, max: 4 * MIN }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constantFrom('expire' as const, 'withdraw' as const, 'grant' as const), dt: fc.integer({ min: 0, max: 4 * MIN }) }) },
);

const isRequester = (id: string): boolean => POOL.some((a) => a?.id === id && (a.id === REQUESTER.subject || (a.identities ?? []).some((i) => i.issuer === REQUESTER.issuer && i.subject === REQUESTER.subject)));

describe('any sequence of votes and transitions', () => {
  it('closes at most once, bumps the revision by one per change, and approves only with enough distinct non-requester approvers', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 40 }),
        fc.integer({ min: 1, max: 3 }),
        fc.subarray(['dba', 'sre', 'dev'], { minLength: 1 }),
        (ops, approvals, groups) => {
          let state = pending({ requirement: { approvers: groups, approvals } });
          let now = T0;
          let closings = 0;
          for (const o of ops) {
            now += o.dt;
            const prev = state;
            let changed: boolean;
            if (o.op === 'vote') {
              const r = castVote(prev, { approver: POOL[o.who], choice: o.choice, channel: 'cli', now: at(now), ...(o.reason !== undefined ? { reason: o.reason } : {}) });
              changed = r.kind === 'accepted';
              if (!changed) assert.equal(r.state, prev, 'a refused or repeated vote returns the state untouched');
              state = r.state;
            } else {
              const next = o.op === 'expire' ? expire(prev, at(now)) : o.op === 'withdraw' ? withdraw(prev, at(now), 'gone') : (useGrant(prev, at(now), 5 * MIN) ?? prev);
              changed = next !== prev;
              state = next;
            }
            assert.equal(state.revision, prev.revision + (changed ? 1 : 0));
            if (prev.status !== 'pending') assert.equal(state.status, prev.status, 'a closed request never changes status');
            if (prev.status === 'pending' && state.status !== 'pending') closings++;
            if (prev.executedAt !== undefined) assert.equal(state.executedAt, prev.executedAt, 'a grant is used once');
            if (state.executedAt !== undefined) assert.equal(state.status, 'approved');

            const approvers = state.votes.filter((v) => v.choice === 'approve').map((v) => v.approverId);
            assert.equal(new Set(state.votes.map((v) => v.approverId)).size, state.votes.length, 'one vote per approver');
            for (const id of state.votes.map((v) => v.approverId)) {
              assert.ok(!isRequester(id), `the requester's own vote was recorded (${id})`);
              const a = POOL.find((p) => p?.id === id);
              assert.ok(a && a.groups.some((g) => groups.includes(g)), `a vote of ${id}, who is not in ${groups.join(',')}`);
            }
            if (state.status === 'approved') assert.ok(new Set(approvers).size >= approvals, 'approved with too few approvals');
            if (state.status === 'pending') assert.ok(new Set(approvers).size < approvals, 'enough approvals but still pending');
          }
          assert.ok(closings <= 1, `closed ${closings} times`);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
