import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError, NotLockedError } from '../src/index.js';
import { testTimeout, uniqueName, withTimeout } from '../src/testing/index.js';
import { queueKeys, waitQueueLength } from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('MultiLock', () => {
  const suite = etcdSuite();

  test('opposite orders never deadlock and never overlap; released in reverse order', async () => {
    const ns = uniqueName('ml');
    const [a, b, c] = ['a', 'b', 'c'].map((x) => `/${ns}/locks/${x}`) as [string, string, string];
    const locks = [
      suite.connect(ns).newMultiLock([a, b, c]),
      suite.connect(ns).newMultiLock([c, b, a]),
      suite.connect(ns).newMultiLock([b, a]),
      suite.connect(ns).newMultiLock([c, a, c]),
    ];
    assert.deepEqual(locks[1]?.paths, [a, b, c], 'one global order');
    assert.deepEqual(locks[3]?.paths, [a, c], 'duplicates dropped');
    const inside = new Map<string, number>();
    let violations = 0;
    const tasks = locks.map((ml) =>
      (async () => {
        for (let j = 0; j < 5; j++) {
          await ml.withLock(async (signal, h) => {
            for (const p of ml.paths) {
              inside.set(p, (inside.get(p) ?? 0) + 1);
              if ((inside.get(p) ?? 0) > 1) violations++;
            }
            assert.equal(h.keys.length, ml.paths.length);
            await new Promise((resolve) => setTimeout(resolve, 2));
            assert.equal(signal.aborted, false);
            for (const p of ml.paths) inside.set(p, (inside.get(p) ?? 0) - 1);
          });
        }
      })(),
    );
    await withTimeout(Promise.all(tasks), testTimeout(30000), 'no deadlock');
    assert.equal(violations, 0);

    // Release order: the last path's key is deleted first.
    const conn = suite.connect(ns);
    const h = await conn.newMultiLock([a, b, c]).lock();
    const deletes: string[] = [];
    const watcher = await suite.client.watch().prefix(`/${ns}/locks/`).create();
    watcher.on('delete', (kv) => deletes.push(kv.key.toString()));
    await h.unlock();
    await h.unlock();
    await withTimeout(
      (async () => {
        while (deletes.length < 3) await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      testTimeout(5000),
      'three deletes',
    );
    await watcher.cancel();
    assert.deepEqual(deletes, [...h.keys].reverse());
  });

  test('all or nothing: tryLock, an aborted lock(), and fencing over every key', async () => {
    const ns = uniqueName('ml');
    const [a, b] = [`/${ns}/locks/a`, `/${ns}/locks/b`];
    const other = await suite.connect(ns).newMutex(b).lock();
    const ml = suite.connect(ns).newMultiLock([a, b]);
    assert.equal(await ml.tryLock(), undefined);
    assert.deepEqual(await queueKeys(suite.client, `${a}/`), [], 'a released when b was taken');
    const controller = new AbortController();
    const waiting = ml.lock({ signal: controller.signal });
    await waitQueueLength(suite.client, `${b}/`, 2);
    assert.equal((await queueKeys(suite.client, `${a}/`)).length, 1, 'a taken first');
    controller.abort();
    await assert.rejects(waiting, AbortError);
    assert.deepEqual(await queueKeys(suite.client, `${a}/`), [], 'a released on abort');
    assert.equal((await queueKeys(suite.client, `${b}/`)).length, 1, "b's waiter key gone");
    await other.unlock();

    const conn = suite.connect(ns);
    const h = await conn.newMultiLock([a, b]).lock();
    const log = `/${ns}/log`;
    await h.fencedTxn([conn.client.put(log).value('1')]);
    assert.equal(h.tokens.length, 2);
    // One key gone: the fenced write over both is refused, and the handle is lost.
    await suite.client
      .delete()
      .key(h.keys[0] ?? '')
      .exec();
    await assert.rejects(h.fencedTxn([conn.client.put(log).value('2')]), NotLockedError);
    assert.equal(await suite.client.get(log).string(), '1');
    assert.equal(h.signal.aborted, true);
    await h.unlock();
    assert.deepEqual(await queueKeys(suite.client, `/${ns}/locks/`), []);
  });
});
