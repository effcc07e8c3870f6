/**
 * Cluster-side faults of docs/faults.md on one real 3-member cluster: S1 (kill -9 of the raft leader
 * and of the member carrying our keepalive), S2 (a member SIGSTOPped for 3 s), S3 (quorum loss
 * longer than the TTL) and S9 (whole-cluster restart). Every wait has a deadline; the only fixed
 * waits are the durations of the faults themselves, which are the inputs of the scenarios.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isBrokenCircuitError, noop } from 'cockatiel';
import { Etcd3, GRPCDeadlineExceededError, GRPCUnavailableError, GRPCUnknownError } from 'etcd3';
import {
  EtcdConnector,
  ErrorCode,
  EtcdConnectorError,
  LEStatus,
  NotLeaderError,
  SessionLostError,
  type LeaderEvent,
} from '../src/index.js';
import {
  startEtcdCluster,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';
import {
  activeKeepAlives,
  assertExactlyOnce,
  assertTyped,
  recordStates,
  Recorder,
  timed,
  waitStopped,
  Writer,
  type Outcome,
} from './fixtures/faults-kit.js';

/** Deadline of the connectors' unary calls, and the slack a loaded machine gets on top. */
const CALL_TIMEOUT_MS = 1500;
const SLACK_MS = testTimeout(1000);

/** Anything unhandled anywhere in this process fails the file (checked by every test). */
const unhandled: unknown[] = [];
const recordUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

const isLeader = (e: LeaderEvent): boolean => e.status === LEStatus.Leader;

void describe('cluster faults', () => {
  let cluster: EtcdCluster;
  let direct: Etcd3;

  /** A connector on all three members in a namespace of its own, closed after the test. */
  function connect(t: { after(fn: () => Promise<void>): void }, prefix: string): EtcdConnector {
    const conn = new EtcdConnector(cluster.endpoints, uniqueName(prefix), {
      callTimeoutMs: CALL_TIMEOUT_MS,
      dialTimeoutMs: 1000,
    });
    t.after(() => conn.close());
    return conn;
  }

  /** The revision the next write will get. */
  async function nextRevision(): Promise<number> {
    const res = await waitFor(
      () =>
        direct.kv.range(
          { key: Buffer.from('/'), count_only: true },
          { deadline: Date.now() + 2000 },
        ),
      { timeoutMs: testTimeout(10000), message: 'the current revision' },
    );
    return Number(res.header.revision) + 1;
  }

  /** Resumes paused members, restarts dead ones, and waits for a healthy cluster. */
  async function heal(): Promise<void> {
    for (const m of cluster.members) m.resume();
    await Promise.all(cluster.members.filter((m) => !m.running).map((m) => m.restart()));
    await cluster.waitHealthy();
  }

  before(async () => {
    process.on('unhandledRejection', recordUnhandled);
    process.on('uncaughtException', recordUnhandled);
    cluster = await startEtcdCluster(3);
    // The test's own client: no retries, no circuit breaker, so one fault cannot lock it out of
    // the healthy members in the next test; its callers retry.
    direct = new Etcd3({
      hosts: cluster.endpoints,
      faultHandling: { host: () => noop, global: noop },
    });
  });

  after(async () => {
    direct.close();
    await cluster.stop();
    process.off('unhandledRejection', recordUnhandled);
    process.off('uncaughtException', recordUnhandled);
    assert.deepEqual(unhandled, [], 'no unhandled rejection or uncaught exception');
  });

  void test('S2: a member, then the raft leader, SIGSTOPped for 3 s: calls time out in time and go elsewhere; revisions never go back', async (t) => {
    // S2's 30 s variant is left out on purpose: too slow for CI. The 3 s pauses already show
    // the deadline bound and the move to other members.
    t.after(heal);
    const conn = connect(t, 's2');
    const key = conn.constructPath('k');
    const elector = conn.newLeaderElector(conn.constructPath('e'), 'reader', 5);
    const load = new AbortController();
    const writes = (async () => {
      for (let i = 0; !load.signal.aborted; i++) {
        await direct.kv
          .put(
            { key: Buffer.from(key), value: Buffer.from(String(i)) },
            { deadline: Date.now() + 1000 },
          )
          .catch(() => sleep(20));
      }
    })();
    // Three readers through the connector's own client (header revisions), one through a recipe.
    // A failed call is followed by a short pause, as a real client would back off: failing calls
    // (an open circuit breaker) settle in microtasks and would otherwise starve every timer.
    const raw: Outcome[][] = [[], [], []];
    const loop = async (out: Outcome[], call: () => Promise<Outcome>): Promise<void> => {
      while (!load.signal.aborted) {
        const o = await call();
        out.push(o);
        if (!o.ok) await sleep(20);
      }
    };
    const readers = raw.map((out) =>
      loop(out, () =>
        timed(
          () => conn.client.kv.range({ key: Buffer.from(key) }),
          (res) => Number(res.header.revision),
        ),
      ),
    );
    const recipe: Outcome[] = [];
    const recipeReader = loop(recipe, () => timed(() => elector.getLeader()));

    const windows: { what: 'follower' | 'leader'; from: number; to: number }[] = [];
    for (const what of ['follower', 'leader'] as const) {
      const leader = await cluster.leader();
      const victim = what === 'leader' ? leader : cluster.members.find((m) => m !== leader);
      assert.ok(victim !== undefined);
      const from = performance.now();
      victim.pause();
      await sleep(3000);
      victim.resume();
      windows.push({ what, from, to: performance.now() });
      await cluster.waitHealthy();
    }
    // Calls succeed again once the members are back.
    const resumed = performance.now();
    await waitFor(
      () => [...raw, recipe].every((out) => out.some((o) => o.ok && o.start > resumed)),
      { timeoutMs: testTimeout(10000), message: 'successful calls after the faults' },
    );
    load.abort();
    await Promise.all([writes, ...readers, recipeReader]);

    const all = [...raw.flat(), ...recipe].sort((a, b) => a.start - b.start);
    const slowest = Math.max(...all.map((o) => o.end - o.start));
    t.diagnostic(
      `${all.length} calls, ${all.filter((o) => !o.ok).length} failed, slowest ${slowest.toFixed(0)} ms`,
    );
    for (const o of all) {
      assert.ok(
        o.end - o.start <= CALL_TIMEOUT_MS + SLACK_MS,
        `a call took ${(o.end - o.start).toFixed(0)} ms (deadline ${CALL_TIMEOUT_MS} ms): ` +
          (o.error instanceof Error ? o.error.message : 'ok'),
      );
    }
    for (const o of raw.flat()) {
      // A timeout (etcd's own context expiry comes as UNKNOWN); "leader changed" (retryable, when
      // a read waited through the election); or a fast refusal once etcd3's circuit breaker took
      // the host out.
      if (o.ok) continue;
      const e = o.error;
      const transient =
        e instanceof GRPCDeadlineExceededError ||
        e instanceof GRPCUnavailableError ||
        (e instanceof GRPCUnknownError && e.message.includes('context deadline exceeded'));
      assert.ok(transient || isBrokenCircuitError(e), String(e));
    }
    for (const o of recipe) {
      if (!o.ok) assertTyped(o.error, [ErrorCode.Timeout, ErrorCode.Unavailable], 'getLeader');
    }
    for (const out of raw) {
      let last = 0;
      for (const o of out) {
        if (o.revision === undefined) continue;
        assert.ok(o.revision >= last, `revision ${o.revision} read after ${last}`);
        last = o.revision;
      }
    }
    for (const w of windows) {
      // Calls in flight when the member stopped count too: they are the first to hit it.
      const inWindow = all.filter((o) => o.end > w.from && o.start < w.to);
      const firstFailure = inWindow.find((o) => !o.ok);
      assert.ok(firstFailure !== undefined, `${w.what}: some call reached the paused member`);
      const served = inWindow.filter((o) => o.ok && o.start >= firstFailure.end).map((o) => o.end);
      const firstServed = Math.min(...served);
      const rel = (x: number): string => (x - w.from).toFixed(0);
      t.diagnostic(
        `${w.what} paused for ${rel(w.to)} ms: first timeout ended at ${rel(firstFailure.end)}, ` +
          `a later call succeeded at ${rel(firstServed)}; ${inWindow.filter((o) => !o.ok).length} timeouts`,
      );
      // Later calls go elsewhere: etcd3 picks a random member per call and its circuit breaker
      // takes one out after 3 timeouts, so with a follower stopped the others answer as soon as
      // the first calls timed out. With the raft leader stopped, nobody answers until etcd has
      // elected another, which on a loaded machine may take most of the 3 s: not asserted there.
      if (w.what === 'follower') {
        assert.ok(
          firstServed < w.to,
          'later calls went elsewhere and succeeded while it was paused',
        );
      }
    }
    assert.deepEqual(unhandled, []);
  });

  void test('S1: kill -9 of the raft leader, then of the keepalive member, and restarts: the leader stays leader; the observer sees every write once, in order', async (t) => {
    t.after(heal);
    const conn = connect(t, 's1');
    const prefix = conn.constructPath('obs');
    const elector = conn.newLeaderElector(conn.constructPath('e'), 'A', 5);
    const rec = new Recorder(elector.start());
    const first = await rec.next(isLeader, 'A leads');
    const token = first.item.token;
    assert.ok(token !== undefined);
    // The pool hands out the elector's own session for the same TTL.
    const session = await conn.session({ ttl: 5 });
    t.after(() => session.close());
    assert.equal(token.key, `${conn.constructPath('e')}/${session.leaseId}`);
    const states = recordStates(session);

    const writer = new Writer(direct, prefix);
    const obs = conn.newObserver(prefix);
    // From an explicit revision, so every write of the writer is the observer's to deliver.
    const seen = new Recorder(obs.start(await nextRevision(), true));
    await writer.write(50);

    const leader = await cluster.leader();
    t.diagnostic(`killing raft leader ${leader.name}`);
    await leader.kill();
    await writer.write(50);
    await Promise.all([leader.restart(), writer.write(50)]);
    await cluster.waitHealthy();

    const carrier = await waitFor(
      async () => {
        const counts = await Promise.all(cluster.members.map(activeKeepAlives));
        const i = counts.findIndex((n) => n > 0);
        return counts.reduce((a, b) => a + b, 0) === 1 ? cluster.members[i] : undefined;
      },
      { timeoutMs: testTimeout(10000), message: 'the member serving our keepalive' },
    );
    t.diagnostic(`killing keepalive member ${carrier.name}`);
    await carrier.kill();
    await writer.write(50);
    await Promise.all([carrier.restart(), writer.write(50)]);
    await cluster.waitHealthy();
    const last = await writer.write(50);

    await waitFor(
      () =>
        seen.items.some(
          (x) => (x.item.type === 'put' || x.item.type === 'delete') && x.item.revision === last,
        ),
      {
        timeoutMs: testTimeout(20000),
        message: 'the last write at the observer',
      },
    );
    await obs.stop();
    t.diagnostic(`${writer.acked.size} writes, ${writer.failures} failed attempts retried`);
    await assertExactlyOnce(
      direct,
      prefix,
      seen.items.map((x) => x.item),
      writer,
    );

    // Suspended briefly at most: never lost, never a new term.
    await waitFor(() => elector.isLeader, {
      timeoutMs: testTimeout(10000),
      message: 'A leads (again) after the faults',
    });
    const events = rec.items.map((x) => x.item);
    assert.ok(
      states.every((s) => s.state === 'alive' || s.state === 'suspended'),
      JSON.stringify(states),
    );
    assert.equal(session.state, 'alive');
    assert.deepEqual(
      events.filter((e) => e.error !== undefined).map((e) => e.error?.message),
      [],
      'no loss or error reported',
    );
    for (const e of events.filter(isLeader)) assert.equal(e.token?.revision, token.revision);
    assert.equal(elector.fencingToken?.revision, token.revision);
    const res = await elector.fencedTxn([conn.client.put(conn.constructPath('data')).value('s1')]);
    assert.equal(res.succeeded, true);
    t.diagnostic(
      `states: ${states.map((s) => s.state).join(' ') || 'none'}; ` +
        `events: ${events.map((e) => (e.suspended ? 'suspended' : e.status)).join(' ')}`,
    );
    await elector.stop();
    assert.deepEqual(unhandled, []);
  });

  void test('S3: quorum lost longer than the TTL: suspended, lost by the session deadline, then leads again with a newer token', async (t) => {
    t.after(heal);
    const conn = connect(t, 's3');
    const path = conn.constructPath('e');
    const elector = conn.newLeaderElector(path, 'A', 3);
    const rec = new Recorder(elector.start());
    const first = await rec.next(isLeader, 'A leads');
    const token = first.item.token;
    assert.ok(token !== undefined);
    const session = await conn.session({ ttl: 3 });
    t.after(() => session.close());
    assert.equal(token.key, `${path}/${session.leaseId}`);
    const states = recordStates(session);

    const leader = await cluster.leader();
    const other = cluster.members.find((m) => m !== leader);
    assert.ok(other !== undefined);
    const from = rec.items.length;
    const pausedAt = performance.now();
    leader.pause();
    other.pause();
    await Promise.all([waitStopped(leader), waitStopped(other)]);
    // Calls made without a quorum fail within their deadline.
    const calls = Promise.all([
      timed(() => conn.client.kv.range({ key: Buffer.from(path) })),
      timed(() => elector.getLeader()),
    ]);
    const suspended = await rec.next((e) => e.suspended, 'A suspended', from);
    const lost = await rec.next((e) => e.error !== undefined, 'A lost', from);
    assert.ok(lost.item.error instanceof SessionLostError, String(lost.item.error));
    assert.equal(lost.item.status, LEStatus.Follower);
    assert.ok(suspended.index < lost.index, 'suspended before lost');
    assert.equal(session.state, 'lost');
    const late = lost.at - session.deadline;
    t.diagnostic(
      `suspended ${(suspended.at - pausedAt).toFixed(0)} ms after the pause, lost ` +
        `${late.toFixed(1)} ms after the deadline (${(lost.at - pausedAt).toFixed(0)} ms after the pause)`,
    );
    assert.ok(late <= testTimeout(500), `lost ${late.toFixed(0)} ms after the session deadline`);
    assert.equal(elector.isLeader, false);
    assert.equal(
      rec.items.slice(from, lost.index).some((x) => isLeader(x.item)),
      false,
      'no leader status during the quorum loss',
    );
    await assert.rejects(elector.fencedTxn([]), NotLeaderError);
    const [rawCall, recipeCall] = await calls;
    for (const o of [rawCall, recipeCall]) {
      assert.ok(!o.ok, 'no call succeeds without a quorum');
      assert.ok(
        o.end - o.start <= CALL_TIMEOUT_MS + SLACK_MS,
        `a call took ${(o.end - o.start).toFixed(0)} ms (deadline ${CALL_TIMEOUT_MS} ms)`,
      );
    }
    assertTyped(recipeCall.error, [ErrorCode.Timeout, ErrorCode.Unavailable], 'getLeader');

    // Longer than the TTL, then the quorum comes back.
    const outage = session.ttl * 1000 + 1000 - (performance.now() - pausedAt);
    if (outage > 0) await sleep(outage);
    leader.resume();
    other.resume();
    const again = await rec.next(isLeader, 'A leads again', lost.index, 20000);
    const newToken = again.item.token;
    assert.ok(newToken !== undefined);
    assert.ok(BigInt(newToken.revision) > BigInt(token.revision), 'a newer token');
    assert.notEqual(newToken.key, token.key, 'under a new lease');
    const res = await elector.fencedTxn([conn.client.put(conn.constructPath('data')).value('s3')]);
    assert.equal(res.succeeded, true);
    assert.deepEqual(
      states.map((s) => s.state),
      ['suspended', 'lost'],
    );
    await elector.stop();
    assert.deepEqual(unhandled, []);
  });

  void test('S9: whole-cluster restart: pending calls fail typed and in time; observer, ephemeral key and elector all come back', async (t) => {
    t.after(heal);
    const conn = connect(t, 's9');
    const prefix = conn.constructPath('obs');
    const path = conn.constructPath('e');
    const elector = conn.newLeaderElector(path, 'A', 5);
    const rec = new Recorder(elector.start());
    const token = (await rec.next(isLeader, 'A leads')).item.token;
    assert.ok(token !== undefined);
    const eph = conn.newEphemeralKey(conn.constructPath('svc', 'i1'));
    const ephErrors = new Recorder(await eph.create('v1', 5));
    const oldLease = eph.leaseId;
    const writer = new Writer(direct, prefix);
    const obs = conn.newObserver(prefix);
    const seen = new Recorder(obs.start(await nextRevision(), true));
    await writer.write(50);

    // Pending for sure: every member is stopped before the calls go out, then all are killed.
    for (const m of cluster.members) m.pause();
    await Promise.all(cluster.members.map(waitStopped));
    const pending = [
      timed(() => elector.getLeader()),
      timed(() => elector.fencedTxn([conn.client.put(path + '-x').value('x')])),
      timed(() => eph.update('v2')),
      timed(() => conn.session({ ttl: 7 })),
    ];
    // Give the calls time to reach the stopped members (the fault's timing, not a wait for a result).
    await sleep(200);
    await Promise.all(cluster.members.map((m) => m.kill()));
    const results = await withTimeout(
      Promise.all(pending),
      CALL_TIMEOUT_MS + SLACK_MS + 1000,
      'pending calls',
    );
    const codes = [
      ErrorCode.Timeout,
      ErrorCode.Unavailable,
      ErrorCode.SessionLost,
      ErrorCode.NotLeader,
    ];
    const summary = (o: Outcome): string =>
      `${o.error instanceof EtcdConnectorError ? o.error.code : String(o.error)} in ` +
      `${(o.end - o.start).toFixed(0)} ms`;
    t.diagnostic(`pending calls: ${results.map(summary).join(', ')}`);
    results.forEach((o, i) => {
      assert.equal(o.ok, false, `pending call ${i} cannot succeed`);
      assert.ok(
        o.end - o.start <= CALL_TIMEOUT_MS + SLACK_MS,
        `pending call ${i}: ${o.end - o.start} ms`,
      );
      assertTyped(o.error, codes, `pending call ${i}`);
    });
    // A call made while everything is down fails typed and at once-ish too.
    const down = await timed(() => elector.getLeader());
    assert.ok(down.end - down.start <= CALL_TIMEOUT_MS + SLACK_MS);
    assertTyped(down.error, codes, 'getLeader while down');

    // Down past the TTL: the session is lost, and both recipes say so.
    const lost = await rec.next((e) => e.error instanceof SessionLostError, 'A lost', 0, 15000);
    await ephErrors.next((e) => e instanceof SessionLostError, 'ephemeral key lost');
    assert.equal(elector.isLeader, false);

    const restartAt = performance.now();
    await Promise.all(cluster.members.map((m) => m.restart()));
    await cluster.waitHealthy();
    const last = await writer.write(50);

    const again = await rec.next(isLeader, 'A leads again', lost.index, 20000);
    t.diagnostic(
      `down ${(restartAt - lost.at).toFixed(0)} ms after the loss; leads again ` +
        `${(again.at - restartAt).toFixed(0)} ms after the restart began`,
    );
    assert.ok(BigInt(again.item.token?.revision ?? 0) > BigInt(token.revision));
    // The key is back, under a new live lease, with the value of the last update.
    const back = await waitFor(
      async () => {
        const kv = (await direct.get(eph.key).exec()).kvs[0];
        const lease = kv === undefined ? undefined : BigInt(kv.lease).toString(16);
        const live = eph.state === 'live' && lease === eph.leaseId;
        if (live) assert.notEqual(lease, oldLease);
        return live ? kv : undefined;
      },
      { timeoutMs: testTimeout(20000), message: 'the ephemeral key back under a new lease' },
    );
    assert.equal(back.value.toString(), 'v2');

    await waitFor(
      () =>
        seen.items.some(
          (x) => (x.item.type === 'put' || x.item.type === 'delete') && x.item.revision === last,
        ),
      {
        timeoutMs: testTimeout(20000),
        message: 'the last write at the observer',
      },
    );
    await obs.stop();
    assert.equal(await seen.ended, undefined, 'the observer did not fail');
    await assertExactlyOnce(
      direct,
      prefix,
      seen.items.map((x) => x.item),
      writer,
    );
    await Promise.all([elector.stop(), eph.delete()]);
    assert.deepEqual(unhandled, []);
  });
});
