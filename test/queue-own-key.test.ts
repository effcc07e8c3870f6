/**
 * A waiter's own key around its predecessor's delete (engines/wait-deletes.ts): after every
 * wake-up the waiter reads, so it never holds under a key that was deleted — not when the key
 * went in the same transaction as the predecessor's (either order), nor just before it — and a
 * predecessor's delete proves nothing while an older key is still queued.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { EtcdConnector, type Lock } from '../src/index.js';
import {
  startEtcd,
  testTimeout,
  uniqueName,
  withTimeout,
  type EtcdCluster,
} from '../src/testing/index.js';
import { waitQueueLength } from './fixtures/lock-harness.js';

void describe('queue: our own key', () => {
  let etcd: EtcdCluster;
  let client: Etcd3;
  const closers: (() => Promise<unknown>)[] = [];

  function connect(ns: string): EtcdConnector {
    const conn = new EtcdConnector(etcd.endpoints, ns, { callTimeoutMs: 2000 });
    closers.push(() => conn.close());
    return conn;
  }

  /**
   * A holds the mutex `/<ns>/m`; a second caller waits behind it. Returns the holder, the waiting
   * `lock()` and both keys.
   */
  async function queuedPair(): Promise<{
    a: Lock;
    waiting: Promise<Lock>;
    predKey: string;
    ourKey: string;
  }> {
    const ns = uniqueName('qk');
    const path = `/${ns}/m`;
    const a = await connect(ns).newMutex(path).lock();
    const waiting = connect(ns).newMutex(path).lock();
    const [predKey, ourKey] = await waitQueueLength(client, `${path}/`, 2);
    assert.ok(predKey !== undefined && ourKey !== undefined);
    return { a, waiting, predKey, ourKey };
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

  for (const order of ['ours first', 'predecessor first'] as const) {
    test(`our key deleted with the predecessor in one transaction (${order})`, async () => {
      const { a, waiting, predKey, ourKey } = await queuedPair();
      const keys = order === 'ours first' ? [ourKey, predKey] : [predKey, ourKey];
      const res = await client
        .if(ourKey, 'Create', '>', 0)
        .then(...keys.map((k) => client.delete().key(k)))
        .commit();
      assert.ok(res.succeeded);
      const deletedAt = BigInt(res.header.revision);
      const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
      // It joined again: a new key, created after the transaction.
      assert.ok(BigInt(b.token.revision) > deletedAt, `token ${b.token.revision} > ${deletedAt}`);
      assert.equal(b.signal.aborted, false);
      assert.ok(a.signal.aborted, 'the old holder lost its lock');
      await b.unlock();
    });
  }

  test('our key deleted just before the predecessor', async () => {
    const { a, waiting, predKey, ourKey } = await queuedPair();
    const ourDeletedAt = BigInt((await client.delete().key(ourKey)).header.revision);
    await client.delete().key(predKey);
    const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
    // It holds under a key it made after its first one went (it may have joined again before the
    // predecessor's delete), never under the deleted one.
    assert.ok(
      BigInt(b.token.revision) > ourDeletedAt,
      `token ${b.token.revision} > ${ourDeletedAt}`,
    );
    assert.ok(a.signal.aborted);
    await b.unlock();
  });

  test('with an older key still queued, the predecessor’s delete does not make a holder', async () => {
    const ns = uniqueName('qk');
    const path = `/${ns}/m`;
    const first = await connect(ns).newMutex(path).lock();
    const second = connect(ns).newMutex(path).lock();
    await waitQueueLength(client, `${path}/`, 2);
    const third = connect(ns).newMutex(path).lock();
    const [k0, k1] = await waitQueueLength(client, `${path}/`, 3);
    assert.ok(k0 !== undefined && k1 !== undefined);
    // The third's predecessor (the second's key) goes while the first still holds.
    await client.delete().key(k1);
    await assert.rejects(
      withTimeout(third, 300, 'third'),
      /third/,
      'the third must not hold while the first does',
    );
    assert.equal(first.signal.aborted, false);
    await first.unlock();
    const t = await withTimeout(third, testTimeout(5000), 'third holder');
    await t.unlock();
    // The second lost its key and joined again behind the third: it holds last.
    await (await withTimeout(second, testTimeout(5000), 'second holder')).unlock();
  });
});
