/**
 * The proof by watch (engines/wait-deletes.ts): a waiter whose sole predecessor is deleted holds
 * without a re-check read — and never when its own key went at or before that delete.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { EtcdConnector, LEStatus, type LeaderEvent, type Lock } from '../src/index.js';
import { queueStats } from '../src/engines/wait-deletes.js';
import {
  startEtcd,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';
import { waitQueueLength } from './fixtures/lock-harness.js';

async function nextEvent(it: AsyncIterator<LeaderEvent>): Promise<LeaderEvent> {
  const r = await it.next();
  assert.ok(r.done !== true, 'the stream ended');
  return r.value;
}

void describe('proof by watch', () => {
  let etcd: EtcdCluster;
  let client: Etcd3;
  const closers: (() => Promise<unknown>)[] = [];

  function connect(ns: string): EtcdConnector {
    const conn = new EtcdConnector(etcd.endpoints, ns, { callTimeoutMs: 2000 });
    closers.push(() => conn.close());
    return conn;
  }

  /** Resolves once `n` more proof watches than `base` are armed. */
  function armed(base: number, n = 1): Promise<unknown> {
    return waitFor(() => queueStats.proofsArmed >= base + n, {
      timeoutMs: testTimeout(5000),
      intervalMs: 5,
      message: 'proof watch armed',
    });
  }

  /**
   * A holds the mutex `/<ns>/m`; a second caller waits behind it with its proof watch armed.
   * Returns the holder, the waiting `lock()` and both keys.
   */
  async function queuedPair(): Promise<{
    path: string;
    a: Lock;
    waiting: Promise<Lock>;
    predKey: string;
    ourKey: string;
  }> {
    const ns = uniqueName('wp');
    const path = `/${ns}/m`;
    const a = await connect(ns).newMutex(path).lock();
    const armedBase = queueStats.proofsArmed;
    const waiting = connect(ns).newMutex(path).lock();
    const [predKey, ourKey] = await waitQueueLength(client, `${path}/`, 2);
    assert.ok(predKey !== undefined && ourKey !== undefined);
    await armed(armedBase);
    return { path, a, waiting, predKey, ourKey };
  }

  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoints });
  });

  after(async () => {
    await Promise.allSettled(closers.map((c) => c()));
    client.close();
    await etcd.stop();
  });

  test('a mutex waiter holds on its predecessor’s delete, with no read', async () => {
    const { path, a, waiting } = await queuedPair();
    const reads = queueStats.waitReads;
    const proofs = queueStats.watchProofs;
    await a.unlock();
    const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
    assert.equal(queueStats.watchProofs - proofs, 1, 'held by the proof');
    assert.equal(queueStats.waitReads - reads, 0, 'no re-check read');
    // The hold is real: etcd has our key as the oldest, with the token's revision.
    const first = await client.getAll().prefix(`${path}/`).sort('Create', 'Ascend').limit(1).exec();
    assert.equal(first.kvs.at(0)?.key.toString(), b.key);
    assert.equal(first.kvs.at(0)?.create_revision, b.token.revision);
    await b.unlock();
  });

  for (const order of ['ours first', 'predecessor first'] as const) {
    test(`our key deleted with the predecessor in one transaction (${order}): no proof`, async () => {
      const { a, waiting, predKey, ourKey } = await queuedPair();
      const proofs = queueStats.watchProofs;
      const keys = order === 'ours first' ? [ourKey, predKey] : [predKey, ourKey];
      const res = await client
        .if(ourKey, 'Create', '>', 0)
        .then(...keys.map((k) => client.delete().key(k)))
        .commit();
      assert.ok(res.succeeded);
      const deletedAt = BigInt(res.header.revision);
      const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
      assert.equal(queueStats.watchProofs, proofs, 'no proof from a batch with our own delete');
      // It joined again: a new key, created after the transaction.
      assert.ok(BigInt(b.token.revision) > deletedAt, `token ${b.token.revision} > ${deletedAt}`);
      assert.equal(b.signal.aborted, false);
      assert.ok(a.signal.aborted, 'the old holder lost its lock');
      await b.unlock();
    });
  }

  test('our key deleted before the predecessor: no proof', async () => {
    const { a, waiting, predKey, ourKey } = await queuedPair();
    const ourDeletedAt = BigInt((await client.delete().key(ourKey)).header.revision);
    await client.delete().key(predKey);
    const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
    // It holds under a key it made after its first one went (it may have joined again before the
    // predecessor's delete and then held by the proof, rightly), never under the deleted one.
    assert.ok(
      BigInt(b.token.revision) > ourDeletedAt,
      `token ${b.token.revision} > ${ourDeletedAt}`,
    );
    assert.ok(a.signal.aborted);
    await b.unlock();
  });

  test('with an older key than the predecessor, its delete alone proves nothing', async () => {
    const ns = uniqueName('wp');
    const path = `/${ns}/m`;
    const first = await connect(ns).newMutex(path).lock();
    const second = connect(ns).newMutex(path).lock();
    await waitQueueLength(client, `${path}/`, 2);
    const third = connect(ns).newMutex(path).lock();
    const [k0, k1] = await waitQueueLength(client, `${path}/`, 3);
    assert.ok(k0 !== undefined && k1 !== undefined);
    const proofs = queueStats.watchProofs;
    // The third's predecessor (the second's key) goes while the first still holds.
    await client.delete().key(k1);
    await assert.rejects(
      withTimeout(third, 300, 'third'),
      /third/,
      'the third must not hold while the first does',
    );
    assert.equal(queueStats.watchProofs, proofs);
    assert.equal(first.signal.aborted, false);
    await first.unlock();
    const t = await withTimeout(third, testTimeout(5000), 'third holder');
    await t.unlock();
    // The second lost its key and joined again behind the third: it holds last.
    await (await withTimeout(second, testTimeout(5000), 'second holder')).unlock();
  });

  test('an election follower leads on the leader’s resign, with no read', async () => {
    const ns = uniqueName('wp');
    const path = `/${ns}/e`;
    const leader = connect(ns).newLeaderElector(path, 'a', 10);
    const lead = leader.start()[Symbol.asyncIterator]();
    assert.equal((await nextEvent(lead)).status, LEStatus.Leader);
    const armedBase = queueStats.proofsArmed;
    const follower = connect(ns).newLeaderElector(path, 'b', 10);
    const stream = follower.start()[Symbol.asyncIterator]();
    assert.equal((await nextEvent(stream)).status, LEStatus.Follower);
    await armed(armedBase);
    const reads = queueStats.waitReads;
    const proofs = queueStats.watchProofs;
    await leader.stop();
    const next = await withTimeout(nextEvent(stream), testTimeout(5000), 'follower leads');
    assert.equal(next.status, LEStatus.Leader);
    assert.equal(queueStats.watchProofs - proofs, 1);
    assert.equal(queueStats.waitReads - reads, 0);
    await follower.stop();
  });
});
