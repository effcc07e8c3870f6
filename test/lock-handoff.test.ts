/**
 * A mutex release that queues the next caller of its process in the same transaction, under the
 * connector's spare session (engines/lock-handoff.ts): one write where there were two, the same
 * queue order, and nothing left behind when the caller gave up or the answer was lost.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GRPCDeadlineExceededError, type Etcd3 } from 'etcd3';
import { AbortError, type EtcdConnector, type Lock } from '../src/index.js';
import { handoffStats } from '../src/engines/lock-handoff.js';
import { strayStats } from '../src/engines/stray-keys.js';
import { poolStats } from '../src/session/session-pool.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdSuite, leaseCount } from './fixtures/etcd-suite.js';
import { interceptNextTxn, keysOf } from './fixtures/intercept-txn.js';
import { queueKeys, waitQueueLength } from './fixtures/lock-harness.js';

/** Whether `key` existed at `revision`. */
async function existedAt(client: Etcd3, key: string, revision: number): Promise<boolean> {
  const res = await client.kv.range({ key: Buffer.from(key), revision: String(revision) });
  return res.kvs.length > 0;
}

/** Settles to 'pending' unless `p` settled already. */
async function settledYet(p: Promise<unknown>): Promise<'settled' | 'pending'> {
  return Promise.race([
    p.then(
      () => 'settled' as const,
      () => 'settled' as const,
    ),
    new Promise<'pending'>((resolve) => {
      setImmediate(() => {
        resolve('pending');
      });
    }),
  ]);
}

void describe('Mutex: the hand-over to the next caller of the process', () => {
  const suite = etcdSuite();

  /**
   * Two connectors on one mutex; `a` holds it, and a second caller of `a` waits behind it (with
   * `signal`) once the spare session it may get the lock under exists.
   */
  async function contended(signal?: AbortSignal): Promise<{
    a: EtcdConnector;
    b: EtcdConnector;
    path: string;
    first: Lock;
    second: Promise<Lock>;
  }> {
    const ns = uniqueName('handoff');
    const [a, b] = [suite.connect(ns), suite.connect(ns)];
    const path = a.constructPath('m');
    const before = await leaseCount(suite.client);
    const spares = poolStats.sparesReady;
    const first = await a.newMutex(path).lock();
    const second = a.newMutex(path).lock(signal === undefined ? {} : { signal });
    second.catch(() => undefined);
    // Waiting behind `first` makes the connector grant its spare session. Counted in the pool,
    // not at etcd: etcd lists the lease before the grant's answer reaches the connector.
    await waitFor(() => poolStats.sparesReady === spares + 1, {
      timeoutMs: testTimeout(5000),
      message: 'the spare session ready',
    });
    assert.equal(await leaseCount(suite.client), before + 2, 'one lease more: the spare');
    return { a, b, path, first, second };
  }

  test('one transaction releases and queues the next local caller, behind the waiters already queued', async () => {
    const base = await leaseCount(suite.client);
    const { a, b, path, first, second } = await contended();
    const other = b.newMutex(path).lock();
    await waitQueueLength(suite.client, path + '/', 2);
    const handed = handoffStats.handedOver;

    await first.unlock();
    assert.equal(handoffStats.handedOver, handed + 1, 'handed over');
    // FIFO across processes: the other connector queued before our second caller did.
    const otherLock = await withTimeout(other, testTimeout(5000), 'the other process holds');
    assert.equal(await settledYet(second), 'pending', 'our second caller waits its turn');
    const keys = await queueKeys(suite.client, path + '/');
    assert.equal(keys.length, 2);
    assert.equal(keys[0], otherLock.key);
    const handedKey = keys[1] ?? '';
    assert.notEqual(handedKey, first.key, 'under the other lease');
    // Our release and its join: one revision.
    const created = (await suite.client.kv.range({ key: Buffer.from(handedKey) })).kvs[0];
    const rev = Number(created?.create_revision);
    assert.ok(await existedAt(suite.client, first.key, rev - 1), 'ours existed just before');
    assert.equal(await existedAt(suite.client, first.key, rev), false, 'and went at that revision');
    assert.equal(created?.lease, BigInt(`0x${handedKey.slice(path.length + 1)}`).toString());

    await otherLock.unlock();
    const secondLock = await withTimeout(second, testTimeout(5000), 'our second caller holds');
    assert.equal(secondLock.key, handedKey);
    assert.equal(secondLock.token.revision, String(rev));
    assert.ok(secondLock.isHeld);
    // Fenced writes go through under the handed-over key.
    const res = await secondLock.fencedTxn([a.client.put(a.constructPath('data')).value('x')]);
    assert.equal(res.succeeded, true);
    await secondLock.unlock();
    assert.deepEqual(await queueKeys(suite.client, path + '/'), []);

    // Back and forth between the two leases, three callers of ours and one of the other process.
    const start = handoffStats.handedOver;
    const order: string[] = [];
    const take = async (conn: EtcdConnector, who: string): Promise<void> => {
      for (let i = 0; i < 5; i++) {
        const l = await conn.newMutex(path).lock();
        order.push(who);
        await l.unlock();
      }
    };
    await withTimeout(
      Promise.all([take(a, 'a1'), take(a, 'a2'), take(a, 'a3'), take(b, 'b')]),
      testTimeout(15000),
      'twenty locks',
    );
    assert.equal(order.length, 20);
    assert.ok(handoffStats.handedOver > start, 'handed over between our callers');
    assert.deepEqual(await queueKeys(suite.client, path + '/'), []);

    // Closing revokes the spare with the rest.
    await Promise.all([a.close(), b.close()]);
    await waitFor(async () => (await leaseCount(suite.client)) === base, {
      timeoutMs: testTimeout(5000),
      message: 'every lease revoked',
    });
  });

  test('a caller that gave up while the hand-over was on its way: the key made for it goes', async () => {
    const ac = new AbortController();
    const { a, path, first, second } = await contended(ac.signal);
    const handed = handoffStats.handedOver;
    const swept = strayStats.deleted;
    // The release's transaction is on its way when the caller gives up.
    const unlocked = first.unlock();
    ac.abort();
    await assert.rejects(second, AbortError);
    await unlocked;
    assert.equal(handoffStats.handedOver, handed, 'nobody to hand over to');
    // Counted once the sweep's delete is answered, which may come after etcd shows the key gone.
    await waitFor(() => strayStats.deleted === swept + 1, {
      timeoutMs: testTimeout(5000),
      message: 'the key made for it, swept',
    });
    await waitQueueLength(suite.client, path + '/', 0);
    const again = await withTimeout(a.newMutex(path).lock(), testTimeout(5000), 'locked again');
    await again.unlock();
  });

  test('a caller that chose its session holds under it: no hand-over', async () => {
    const ns = uniqueName('handoff');
    const a = suite.connect(ns);
    const path = a.constructPath('m');
    const session = await a.session({ ttl: 7 });
    suite.defer(() => session.close());
    const first = await a.newMutex(path, { session }).lock();
    const second = a.newMutex(path, { session }).lock();
    const handed = handoffStats.handedOver;
    await first.unlock();
    const lock = await withTimeout(second, testTimeout(5000), 'the second caller holds');
    assert.equal(lock.key, `${path}/${session.leaseId}`);
    assert.equal(handoffStats.handedOver, handed);
    await lock.unlock();
  });

  test('an answer lost on the way: released by its delete, the caller joins by itself, the late copy changes nothing', async () => {
    const { a, path, first, second } = await contended();
    const lost = interceptNextTxn(
      a.client,
      (req) => keysOf(req, 'delete').includes(first.key) && keysOf(req, 'put').length > 0,
      () => Promise.reject(new GRPCDeadlineExceededError('deadline exceeded (the test)')),
    );
    const handed = handoffStats.handedOver;
    await first.unlock();
    const late = await lost;
    assert.equal(handoffStats.handedOver, handed, 'not handed over');
    // Let in by the gate once our key was deleted, it joined under its own session.
    const lock = await withTimeout(second, testTimeout(5000), 'the caller joined and holds');
    assert.equal(lock.key, first.key);
    assert.ok(BigInt(lock.token.revision) > BigInt(first.token.revision));
    // The copy lands now, as a member that stalled with it would send it: our key is gone.
    const res = await suite.client.kv.txn(late);
    assert.equal(res.succeeded, false, 'the late copy applies nothing');
    await lock.unlock();
    await waitQueueLength(suite.client, path + '/', 0);
  });
});
