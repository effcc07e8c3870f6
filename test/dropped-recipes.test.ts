// A service that makes a barrier, counter, queue or double barrier per request and never closes
// it must not grow: the connector holds idle recipes only weakly, and a collected one lets go of
// its session reference (the shared lease is revoked once nothing uses it). Ones still alive are
// closed by conn.close() as before.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ClosedError, EtcdConnector } from '../src/index.js';
import { testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { etcdSuite, leaseCount } from './fixtures/etcd-suite.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const PER_KIND = 20;

void describe('recipes dropped without close()', () => {
  const suite = etcdSuite();

  test('are collected after their calls, and release their session', async () => {
    const ns = uniqueName('drop');
    const conn = new EtcdConnector(suite.etcd.endpoints, ns, { callTimeoutMs: 2000 });
    try {
      /** Uses one of each kind per round and keeps nothing but weak references. */
      const useAndDrop = async (): Promise<WeakRef<object>[]> => {
        const refs: WeakRef<object>[] = [];
        for (let i = 0; i < PER_KIND; i++) {
          const barrier = conn.newBarrier(conn.constructPath('b', String(i)));
          await barrier.hold();
          await barrier.wait({ signal: AbortSignal.timeout(testTimeout(5000)) }).catch(() => 0);
          await barrier.release();
          const counter = conn.newCounter(conn.constructPath('c'));
          await counter.add(1);
          const queue = conn.newQueue(conn.constructPath('q'));
          await queue.enqueue(`item ${i}`);
          assert.equal(await queue.dequeue(), `item ${i}`);
          const double = conn.newDoubleBarrier(conn.constructPath('d', String(i)), 1);
          await double.enter();
          await double.leave();
          refs.push(
            new WeakRef(barrier),
            new WeakRef(counter),
            new WeakRef(queue),
            new WeakRef(double),
          );
        }
        return refs;
      };
      const refs = await useAndDrop();
      assert.ok((await leaseCount(suite.client)) > 0, 'the counter and queue held a session');
      await waitFor(
        async () => {
          await tick();
          gc();
          return refs.every((r) => r.deref() === undefined);
        },
        {
          timeoutMs: testTimeout(10000),
          intervalMs: 50,
          message: `collected: ${refs.filter((r) => r.deref() === undefined).length}/${refs.length}`,
        },
      );
      // Their session references went with them: the shared lease is revoked.
      await waitFor(async () => (await leaseCount(suite.client)) === 0, {
        timeoutMs: testTimeout(10000),
        intervalMs: 50,
        message: 'the shared session revoked once no dropped recipe held it',
      });
      assert.equal(await conn.newCounter(conn.constructPath('c')).get(), PER_KIND);
      // One still referenced, with a call waiting, is closed by conn.close().
      const kept = conn.newBarrier(conn.constructPath('kept'));
      await kept.hold();
      const waiting = kept.wait();
      await tick();
      gc();
      await conn.close();
      await assert.rejects(waiting, ClosedError);
    } finally {
      await conn.close();
    }
  });
});
