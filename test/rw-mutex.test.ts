import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SessionLostError } from '../src/index.js';
import { testTimeout, uniqueName, withTimeout } from '../src/testing/index.js';
import { startGoPeer, type GoPeer } from './fixtures/go-peer.js';
import { queueKeys, waitQueueLength } from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

const NANO = String.raw`\d{19}`;

/** Resolves 'pending' if `p` has not settled after `ms` (a bound, not a wait for a result). */
async function stillPending(p: Promise<unknown>, ms = 150): Promise<boolean> {
  const r = await Promise.race([
    p.then(
      () => 'settled',
      () => 'settled',
    ),
    new Promise((resolve) => setTimeout(resolve, ms, 'pending')),
  ]);
  return r === 'pending';
}

void describe('RWMutex', () => {
  const suite = etcdSuite();

  async function peer(): Promise<GoPeer> {
    const p = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10 });
    suite.defer(() => p.close());
    return p;
  }

  test("Go's layout; readers together, writers alone, a reader after a waiting writer waits", async () => {
    const ns = uniqueName('rw');
    const conn = suite.connect(ns);
    const path = conn.constructPath('rw', 'a');
    const rw = conn.newRWMutex(path);
    const s = await conn.session({ ttl: 10 });
    const r1 = await rw.rlock();
    const r2 = await suite.connect(ns).newRWMutex(path).rlock();
    assert.match(r1.key, new RegExp(`^${path}/read/${NANO}$`));
    const [kv] = (await suite.client.get(r1.key).exec()).kvs;
    assert.ok(kv !== undefined);
    assert.equal(kv.value.toString(), '');
    assert.equal(kv.lease, s.leaseIdDecimal);
    // A writer waits for both readers; a reader that comes after it waits for the writer.
    const w = rw.lock();
    await waitQueueLength(suite.client, `${path}/`, 3);
    const r3 = rw.rlock();
    await waitQueueLength(suite.client, `${path}/`, 4);
    assert.equal(await rw.tryLock(), undefined, 'tryLock while readers hold');
    assert.equal(await rw.tryRLock(), undefined, 'tryRLock behind a waiting writer');
    assert.equal((await queueKeys(suite.client, `${path}/`)).length, 4, 'no key left by the tries');
    assert.ok(await stillPending(w));
    await r1.unlock();
    assert.ok(await stillPending(w));
    await r2.unlock();
    const wl = await withTimeout(w, testTimeout(5000), 'writer');
    assert.match(wl.key, new RegExp(`^${path}/write/${NANO}$`));
    assert.ok(await stillPending(r3), 'reader after the writer waits');
    await wl.unlock();
    const r3l = await withTimeout(r3, testTimeout(5000), 'reader after writer');
    await r3l.unlock();
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
    await s.close();
  });

  test('never a writer beside anyone: concurrent readers and writers of 3 connectors', async () => {
    const ns = uniqueName('rw');
    const path = `/${ns}/rw/stress`;
    const mutexes = [suite.connect(ns), suite.connect(ns), suite.connect(ns)].map((c) =>
      c.newRWMutex(path),
    );
    let readers = 0;
    let writers = 0;
    let maxReaders = 0;
    let violations = 0;
    const check = (): void => {
      if (writers > 1 || (writers === 1 && readers > 0)) violations++;
    };
    const tasks = Array.from({ length: 6 }, (_, i) =>
      (async () => {
        const rw = mutexes[i % mutexes.length];
        assert.ok(rw !== undefined);
        for (let j = 0; j < 6; j++) {
          if ((i + j) % 3 === 0) {
            await rw.withLock(async (signal) => {
              writers++;
              check();
              await new Promise((resolve) => setTimeout(resolve, 3));
              assert.equal(signal.aborted, false);
              writers--;
            });
          } else {
            await rw.withRLock(async () => {
              readers++;
              maxReaders = Math.max(maxReaders, readers);
              check();
              await new Promise((resolve) => setTimeout(resolve, 3));
              readers--;
            });
          }
        }
      })(),
    );
    await withTimeout(Promise.all(tasks), testTimeout(30000), 'readers and writers');
    assert.equal(violations, 0);
    assert.ok(maxReaders >= 2, `readers held together (max ${maxReaders})`);
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });

  test("interop with Go's RWMutex: readers share, writers exclude, in one order", async () => {
    const ns = uniqueName('rw');
    const path = `/${ns}/rw/go`;
    const conn = suite.connect(ns);
    const rw = conn.newRWMutex(path);
    const [ga, gb] = [await peer(), await peer()];
    // Go reader and ours together.
    await ga.ok({ cmd: 'rwmutex.rlock', path });
    const ours = await rw.rlock();
    // Go writer waits for both; our reader after it waits too (Go's order).
    const goWrite = gb.begin({ cmd: 'rwmutex.lock', path });
    await waitQueueLength(suite.client, `${path}/`, 3);
    const ourRead = rw.rlock();
    await waitQueueLength(suite.client, `${path}/`, 4);
    await ga.ok({ cmd: 'rwmutex.runlock', path });
    assert.ok(await stillPending(goWrite.response));
    await ours.unlock();
    assert.equal((await goWrite.response).ok, true);
    assert.ok(await stillPending(ourRead), 'our reader waits for the Go writer');
    // Our writer queued behind our reader; Go's reader behind our writer.
    const ourWrite = rw.lock();
    await waitQueueLength(suite.client, `${path}/`, 3);
    const goRead = ga.begin({ cmd: 'rwmutex.rlock', path });
    await waitQueueLength(suite.client, `${path}/`, 4);
    await gb.ok({ cmd: 'rwmutex.unlock', path });
    const r = await withTimeout(ourRead, testTimeout(5000), 'our reader');
    assert.ok(await stillPending(ourWrite));
    assert.ok(await stillPending(goRead.response), 'Go reader waits behind our writer');
    await r.unlock();
    const w = await withTimeout(ourWrite, testTimeout(5000), 'our writer');
    assert.ok(await stillPending(goRead.response));
    await w.unlock();
    assert.equal((await goRead.response).ok, true);
    await ga.ok({ cmd: 'rwmutex.runlock', path });
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });

  test('the check Go lacks (etcd #16221): a waiter whose lease ends never acquires', async () => {
    const ns = uniqueName('rw');
    const path = `/${ns}/rw/expired`;
    const writer = await suite.connect(ns).newRWMutex(path).lock();
    const conn = suite.connect(ns);
    const s = await conn.session({ ttl: 10 });
    const waiting = conn.newRWMutex(path, { session: s }).rlock();
    const refused = assert.rejects(waiting, SessionLostError);
    await waitQueueLength(suite.client, `${path}/`, 2);
    // The lease ends behind the waiter's back (as an expiry would): its key goes with it.
    await suite.client.leaseClient.leaseRevoke({ ID: s.leaseIdDecimal });
    await writer.unlock();
    await withTimeout(refused, testTimeout(10000), 'waiter refused');
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });
});
