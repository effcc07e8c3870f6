/**
 * A lock or leadership granted by an answer that arrived after the session's deadline is none:
 * etcd may have expired the lease and handed it on meanwhile. Chaos seed 6001 found `lock()`
 * resolving in that case — a join sent, the connection stalled past the TTL, the answer "you hold
 * it" delivered 3 s late; the worker saw the lock lost 0.02 ms later, but the call had said
 * "held". The same holds for a lease whose grant is answered after its TTL.
 *
 * The process is "paused" exactly between etcd's answer and its handling by blocking the event
 * loop there until the deadline has passed, as SIGSTOP at that moment would.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Etcd3 } from 'etcd3';
import { LEStatus, SessionLostError, TimeoutError, type SessionHandle } from '../src/index.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn } from './fixtures/intercept-txn.js';

/** Blocks the event loop until `performance.now()` passes `until`, as a paused process. */
function blockUntil(until: number): void {
  while (performance.now() <= until) {
    // No timer, no keepalive, no I/O runs meanwhile.
  }
}

/** From now on, the next transaction's answer is handled only after `session`'s deadline. */
function stallNextAnswer(client: Etcd3, session: SessionHandle): void {
  void interceptNextTxn(
    client,
    () => true,
    async (send) => {
      const res = await send();
      blockUntil(session.deadline);
      return res;
    },
  );
}

void describe('an answer that comes after the session deadline', () => {
  const suite = etcdSuite();

  for (const call of ['lock', 'tryLock'] as const) {
    test(`${call}(): a free lock whose join is answered late rejects with SessionLostError`, async () => {
      const ns = uniqueName('late');
      const conn = suite.connect(ns);
      const path = `/${ns}/locks/a`;
      const session = await conn.session({ ttl: 1 });
      const mutex = conn.newMutex(path, { session });
      stallNextAnswer(conn.client, session);
      const attempt = call === 'lock' ? mutex.lock() : mutex.tryLock();
      await assert.rejects(attempt, SessionLostError);
      assert.equal(session.state, 'lost');

      // Nothing of ours stands in the way: another process gets the lock once etcd lets the
      // lease go (TTL 1 s).
      const other = suite.connect(ns);
      const held = await withTimeout(other.newMutex(path).lock(), testTimeout(5000), 'next lock');
      assert.ok(held.isHeld);
      await held.unlock();
    });
  }

  test('an elector bound to the session never leads on a join answered late', async () => {
    const ns = uniqueName('late');
    const conn = suite.connect(ns);
    const session = await conn.session({ ttl: 1 });
    const elector = conn.newLeaderElector(`/${ns}/e`, 'a', 1, { session });
    stallNextAnswer(conn.client, session);
    const statuses: string[] = [];
    let error: Error | undefined;
    const read = async (): Promise<void> => {
      for await (const ev of elector.start()) {
        statuses.push(ev.status);
        error ??= ev.error;
      }
    };
    await assert.rejects(withTimeout(read(), testTimeout(5000), 'status stream'), SessionLostError);
    assert.ok(!statuses.includes(LEStatus.Leader), `statuses: ${statuses.join(', ')}`);
    assert.ok(error === undefined || error instanceof SessionLostError, String(error));
    await elector.stop();
  });

  test('a lease grant answered after its TTL: conn.session() rejects, the lease is revoked', async () => {
    const conn = suite.connect(uniqueName('late'));
    const leases = conn.client.leaseClient;
    const grant = leases.leaseGrant.bind(leases);
    let granted: string | undefined;
    leases.leaseGrant = async (...args: Parameters<typeof grant>) => {
      const res = await grant(...args);
      leases.leaseGrant = grant;
      granted = res.ID;
      // Blocked past the granted TTL, counted from after the answer (so surely from the send).
      blockUntil(performance.now() + Number(res.TTL) * 1000 + 50);
      return res;
    };
    await assert.rejects(conn.session({ ttl: 1 }), TimeoutError);
    assert.ok(granted !== undefined);
    await waitFor(
      async () => {
        const { leases: live } = await suite.client.leaseClient.leaseLeases();
        return live.every((l) => l.ID !== granted) || undefined;
      },
      { timeoutMs: testTimeout(5000), message: 'the late lease revoked' },
    );
    // The next grant, answered in time, gives a live session.
    const session = await conn.session({ ttl: 1 });
    assert.ok(session.isAlive());
    await session.close();
  });
});
