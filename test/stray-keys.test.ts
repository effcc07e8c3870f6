/**
 * A join whose answer was lost may be applied later: a member that stalled with it forwards it
 * when it resumes. The join creates our key only if absent, so a copy landing after our release
 * re-creates the key under our lease, and every later waiter queued behind it until the lease
 * ended (chaos run, seed 20261129: every RWMutex user stalled). After a lost answer the key is
 * watched while the session lives, and such a creation is deleted — unless a member of ours uses
 * the key again. The same for an ephemeral key (and so a registration), a double barrier's
 * participant and a queue consumer's place in line, whose put went unanswered.
 *
 * The lost answer is made exactly: the connector's next join is not sent but fails as a timed-out
 * call would, and the test sends that very request later, as the stalled member would.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRPCDeadlineExceededError, type Etcd3, type ITxnRequest } from 'etcd3';
import {
  LEStatus,
  OutcomeUnknownError,
  type EtcdConnector,
  type LeaderEvent,
  type Lock,
  type SessionHandle,
} from '../src/index.js';
import { strayStats } from '../src/engines/stray-keys.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn, keysOf } from './fixtures/intercept-txn.js';

/**
 * The next transaction of `client` that puts a key under `prefix` is not sent: it fails as a
 * call whose answer was lost (once `lostAt` resolves: at once by default). Resolves with that
 * request, to be sent later.
 */
function loseNextJoin(
  client: Etcd3,
  prefix: string,
  lostAt: Promise<void> = Promise.resolve(),
): Promise<ITxnRequest> {
  return interceptNextTxn(
    client,
    (req) => keysOf(req, 'put').some((k) => k.startsWith(prefix)),
    async () => {
      await lostAt;
      throw new GRPCDeadlineExceededError('deadline exceeded (the test)');
    },
  );
}

void describe('a late copy of a join whose answer was lost', () => {
  const suite = etcdSuite();

  /** Two connectors of a new namespace, and a session of the first (closed after the file). */
  async function setUp(): Promise<{ a: EtcdConnector; b: EtcdConnector; s: SessionHandle }> {
    const ns = uniqueName('stray');
    const [a, b] = [suite.connect(ns), suite.connect(ns)];
    const s = await a.session({ ttl: 10 });
    suite.defer(() => s.close());
    return { a, b, s };
  }

  /** Runs `hold` with a lost first join, releases, then sends the lost join: the stray. */
  async function strayAfter(
    conn: EtcdConnector,
    prefix: string,
    hold: () => Promise<{ key: string; release: () => Promise<void> }>,
  ): Promise<string> {
    const lost = loseNextJoin(conn.client, prefix);
    const { key, release } = await withTimeout(hold(), testTimeout(10_000), 'held after a retry');
    await release();
    // (The sweep may delete it at once: that it was created is the transaction's success.)
    const res = await suite.client.kv.txn(await lost);
    assert.ok(res.succeeded, 'the late copy created the key again');
    return key;
  }

  /** The stray key is deleted, and `next` (another connector's lock) gets through. */
  async function sweptThen(key: string, next: () => Promise<Lock>): Promise<void> {
    await waitFor(async () => (await suite.client.get(key).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    const lock = await withTimeout(next(), testTimeout(5000), 'the next holder');
    await lock.unlock();
  }

  test('a mutex: deleted, the next holder gets through', async () => {
    const { a, b, s } = await setUp();
    const path = a.constructPath('m');
    const key = await strayAfter(a, path, async () => {
      const l = await a.newMutex(path, { session: s }).lock();
      return { key: l.key, release: () => l.unlock() };
    });
    await sweptThen(key, () => b.newMutex(path).lock());
  });

  test('an RWMutex writer and reader, a semaphore permit: deleted, the next one gets through', async () => {
    const { a, b, s } = await setUp();
    const rw = a.constructPath('rw');
    const sem = a.constructPath('sem');
    const cases: [string, () => Promise<Lock>, () => Promise<Lock>][] = [
      [rw, () => a.newRWMutex(rw, { session: s }).lock(), () => b.newRWMutex(rw).lock()],
      [rw, () => a.newRWMutex(rw, { session: s }).rlock(), () => b.newRWMutex(rw).lock()],
      [
        sem,
        () => a.newSemaphore(sem, 1, { session: s }).acquire(),
        () => b.newSemaphore(sem, 1).acquire(),
      ],
    ];
    for (const [path, take, next] of cases) {
      const key = await strayAfter(a, path, async () => {
        const l = await take();
        return { key: l.key, release: () => l.unlock() };
      });
      await sweptThen(key, next);
    }
  });

  test('an election candidate: deleted after its stop, the next candidate leads', async () => {
    const { a, b, s } = await setUp();
    const path = a.constructPath('e');
    const key = await strayAfter(a, path, async () => {
      const elector = a.newLeaderElector(path, 'a', 10, { session: s });
      // Read by hand: leaving a for-await would end the stream, and the campaign with it.
      const events: AsyncIterator<LeaderEvent> = elector.start()[Symbol.asyncIterator]();
      for (;;) {
        const next = await events.next();
        if (next.done === true) throw new Error('the elector ended before it led');
        const value = next.value;
        if (value.status === LEStatus.Leader && value.token !== undefined) {
          return { key: value.token.key, release: () => elector.stop() };
        }
      }
    });
    await waitFor(async () => (await suite.client.get(key).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    const other = b.newLeaderElector(path, 'b', 10);
    suite.defer(() => other.stop());
    await withTimeout(
      (async () => {
        for await (const ev of other.start()) if (ev.status === LEStatus.Leader) return;
      })(),
      testTimeout(5000),
      'the next leader',
    );
  });

  test('an ephemeral key whose create went unanswered: deleted; created again, it stays', async () => {
    const { a, s } = await setUp();
    const key = a.constructPath('ek');
    const lost = loseNextJoin(a.client, key);
    // The put's answer is lost: create() fails (and the caller may try again later).
    await assert.rejects(a.newEphemeralKey(key).create('v1', 10, { session: s }));
    // (Absent: the put of the claim's inner transaction.)
    const res = await suite.client.kv.txn(await lost);
    assert.equal(res.responses[0]?.response_txn.succeeded, true, 'the late copy created the key');
    await waitFor(async () => (await suite.client.get(key).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    // Created again under the same lease: the sweep sees that creation and keeps it.
    const judged = strayStats.judged;
    const ek = a.newEphemeralKey(key);
    suite.defer(() => ek.delete());
    await ek.create('v2', 10, { session: s });
    await waitFor(() => strayStats.judged > judged, { timeoutMs: testTimeout(5000) });
    assert.equal(await suite.client.get(key).string(), 'v2');
  });

  test('a double barrier participant: deleted after its leave, the next one is not one too many', async () => {
    const { a, b, s } = await setUp();
    const path = a.constructPath('barrier');
    const lost = loseNextJoin(a.client, `${path}/waiters/`);
    const mine = a.newDoubleBarrier(path, 1, { session: s });
    await withTimeout(mine.enter(), testTimeout(10_000), 'entered after a retry');
    const key = mine.key ?? '';
    await mine.leave();
    const res = await suite.client.kv.txn(await lost);
    assert.ok(res.succeeded, 'the late copy created the key');
    await waitFor(async () => (await suite.client.get(key).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    // Left behind, the copy would be the one participant the barrier has room for.
    const next = b.newDoubleBarrier(path, 1);
    await withTimeout(next.enter(), testTimeout(5000), 'the next participant');
    await next.leave();
  });

  test('a double barrier participant: deleted when it lands while we wait for the lowest to leave', async () => {
    // Chaos run: the copy came back while its participant, out already, waited for the lowest;
    // the lowest then waited for that copy, and neither left until it went.
    const { a, b, s } = await setUp();
    const path = a.constructPath('barrier2');
    const lowest = b.newDoubleBarrier(path, 2);
    const lowestIn = lowest.enter();
    await waitFor(
      async () => (await suite.client.getAll().prefix(`${path}/waiters/`).keys()).length === 1,
      {
        timeoutMs: testTimeout(5000),
      },
    );
    const lost = loseNextJoin(a.client, `${path}/waiters/`);
    const mine = a.newDoubleBarrier(path, 2, { session: s });
    await withTimeout(Promise.all([mine.enter(), lowestIn]), testTimeout(10_000), 'both in');
    const key = mine.key ?? '';
    // Not the lowest: out at once, then waiting for the lowest to go.
    const leaving = mine.leave();
    await waitFor(async () => (await suite.client.get(key).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    assert.ok((await suite.client.kv.txn(await lost)).succeeded, 'the late copy created the key');
    await withTimeout(
      Promise.all([lowest.leave(), leaving]),
      testTimeout(5000),
      'both left (the lowest waited for no copy)',
    );
  });

  test("a queue consumer's place in line: deleted once it left the line", async () => {
    const { a, b, s } = await setUp();
    const path = a.constructPath('q');
    const line = `${a.constructPath('__q.queue', 'line')}/${s.leaseId}`;
    const lost = loseNextJoin(a.client, line);
    const consumer = a.newQueue(path, { session: s });
    const item = consumer.dequeue();
    // Into the line (its first join lost, sent again), then served: it leaves the line.
    const stale = await lost;
    await waitFor(async () => (await suite.client.get(line).string()) !== null, {
      timeoutMs: testTimeout(5000),
    });
    await b.newQueue(path).enqueue('job');
    assert.equal(await withTimeout(item, testTimeout(5000), 'the item'), 'job');
    await waitFor(async () => (await suite.client.get(line).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    await suite.client.kv.txn(stale);
    // Left there, it would stand at the head of the line: every other consumer process would
    // take each new item only after waiting for it.
    await waitFor(async () => (await suite.client.get(line).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
  });

  test("a queue consumer's place in line, moved by a claim of unknown outcome: deleted", async () => {
    const { a, b, s } = await setUp();
    const path = a.constructPath('q');
    const line = `${a.constructPath('__q.queue', 'line')}/${s.leaseId}`;
    const consumer = a.newQueue(path, { session: s });
    const item = consumer.dequeue();
    await waitFor(async () => (await suite.client.get(line).string()) !== null, {
      timeoutMs: testTimeout(5000),
    });
    // The claim (it also moves our line key to the back) is in flight when the consumer closes:
    // its answer is lost, and nobody can tell any more whether it landed.
    let loseIt!: () => void;
    const lost = loseNextJoin(a.client, line, new Promise((r) => (loseIt = r)));
    await b.newQueue(path).enqueue('job');
    const stale = await lost;
    const closed = consumer.close();
    loseIt();
    await assert.rejects(withTimeout(item, testTimeout(5000), 'the dequeue'), OutcomeUnknownError);
    await closed;
    await waitFor(async () => (await suite.client.get(line).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
    // It lands after all, and puts the line key back.
    assert.ok((await suite.client.kv.txn(stale)).succeeded, 'the late claim landed');
    await waitFor(async () => (await suite.client.get(line).string()) === null, {
      timeoutMs: testTimeout(5000),
    });
  });

  test('a key one of ours uses again is left alone', async () => {
    const { a, s } = await setUp();
    const path = a.constructPath('m');
    const mutex = a.newMutex(path, { session: s });
    const lost = loseNextJoin(a.client, path);
    const first = await withTimeout(mutex.lock(), testTimeout(10_000), 'held after a retry');
    await lost;
    await first.unlock();
    // The same key (Go's: one per lease), ours again: its creation is seen, and kept.
    const judged = strayStats.judged;
    const again = await mutex.lock();
    await waitFor(() => strayStats.judged > judged, { timeoutMs: testTimeout(5000) });
    await again.fencedTxn([a.client.put(a.constructPath('x')).value('still ours')]);
    assert.equal(again.isHeld, true);
    await again.unlock();
  });
});
