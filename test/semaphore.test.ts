import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError, type Permit } from '../src/index.js';
import { queueStats } from '../src/engines/wait-deletes.js';
import { testTimeout, uniqueName, withTimeout } from '../src/testing/index.js';
import { queueKeys, settledWaitReads, waitQueueLength } from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('Semaphore', () => {
  const suite = etcdSuite();

  test('layout path/<lease hex>-<n>; permits in one process; FIFO; tryAcquire; abort', async () => {
    const ns = uniqueName('sem');
    const conn = suite.connect(ns);
    const path = conn.constructPath('sem', 'a');
    const s = await conn.session({ ttl: 10 });
    const sem = conn.newSemaphore(path, 3);
    // One session holds several permits: keys of their own.
    const held = [await sem.acquire(), await sem.acquire(), await sem.acquire()];
    for (const p of held) assert.match(p.key, new RegExp(`^${path}/${s.leaseId}-\\d+$`));
    assert.equal(new Set(held.map((p) => p.key)).size, 3);
    assert.equal(await sem.tryAcquire(), undefined, 'all permits taken');
    assert.equal(
      (await queueKeys(suite.client, `${path}/`)).length,
      3,
      'no key left by tryAcquire',
    );
    const fourth = sem.acquire();
    await waitQueueLength(suite.client, `${path}/`, 4);
    const controller = new AbortController();
    const fifth = suite.connect(ns).newSemaphore(path, 3).acquire({ signal: controller.signal });
    await waitQueueLength(suite.client, `${path}/`, 5);
    controller.abort();
    await assert.rejects(fifth, AbortError);
    assert.equal(
      (await queueKeys(suite.client, `${path}/`)).length,
      4,
      'aborted waiter left no key',
    );
    await held[1]?.unlock();
    const f = await withTimeout(fourth, testTimeout(5000), 'fourth');
    for (const p of [held[0], held[2], f]) await p?.unlock();
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
    await s.close();
  });

  test('never more than `permits` holders (4 connectors, 8 callers)', async () => {
    const ns = uniqueName('sem');
    const path = `/${ns}/sem/stress`;
    const sems = [suite.connect(ns), suite.connect(ns), suite.connect(ns), suite.connect(ns)].map(
      (c) => c.newSemaphore(path, 3),
    );
    let holders = 0;
    let maxHolders = 0;
    const tasks = Array.from({ length: 8 }, (_, i) =>
      (async () => {
        const sem = sems[i % sems.length];
        assert.ok(sem !== undefined);
        for (let j = 0; j < 6; j++) {
          await sem.withPermit(async (signal) => {
            holders++;
            maxHolders = Math.max(maxHolders, holders);
            await new Promise((resolve) => setTimeout(resolve, 2 + ((i * j) % 5)));
            assert.equal(signal.aborted, false);
            holders--;
          });
        }
      })(),
    );
    await withTimeout(Promise.all(tasks), testTimeout(30000), 'semaphore callers');
    assert.equal(maxHolders, 3);
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });

  test('a release wakes only the waiters whose window held the released key', async () => {
    const ns = uniqueName('sem');
    const path = `/${ns}/sem/wakes`;
    const permits = 2;
    const conn = suite.connect(ns);
    const sem = conn.newSemaphore(path, permits);
    const holders: Permit[] = [await sem.acquire(), await sem.acquire()];
    const waiting: Promise<Permit>[] = [];
    for (let i = 0; i < 8; i++) {
      waiting.push(suite.connect(ns).newSemaphore(path, permits).acquire());
      await waitQueueLength(suite.client, `${path}/`, 3 + i);
    }
    // Settled: every waiter read once and watches its window.
    await settledWaitReads();
    // The oldest holder leaves: only the first waiter had it in its window.
    let before = queueStats.waitReads;
    await holders[0]?.unlock();
    const [w0, w1] = waiting;
    assert.ok(w0 !== undefined && w1 !== undefined);
    const first = await withTimeout(w0, testTimeout(5000), 'w0');
    await settledWaitReads();
    assert.equal(queueStats.waitReads - before, 1, 'one waiter re-read');
    // The newest holder leaves: the two waiters after it re-read; one holds.
    before = queueStats.waitReads;
    await first.unlock();
    const second = await withTimeout(w1, testTimeout(5000), 'w1');
    await settledWaitReads();
    const reads = queueStats.waitReads - before;
    assert.ok(reads >= 1 && reads <= permits, `at most ${permits} re-reads, got ${reads}`);
    await second.unlock();
    await holders[1]?.unlock();
    for (const w of waiting.slice(2)) await (await w).unlock();
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });
});
