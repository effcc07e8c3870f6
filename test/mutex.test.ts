import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, test } from 'node:test';
import {
  AbortError,
  ClosedError,
  InvalidArgumentError,
  NotLockedError,
  type DiagnosticMessages,
  type Lock,
} from '../src/index.js';
import {
  findEtcdBinary,
  testTimeout,
  uniqueName,
  waitFor,
  withTimeout,
} from '../src/testing/index.js';
import { queueStats } from '../src/engines/wait-deletes.js';
import {
  EtcdctlLock,
  queueKeys,
  settledWaitReads,
  waitQueueLength,
} from './fixtures/lock-harness.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { startGoPeer, type GoPeer } from './fixtures/go-peer.js';
import { watchStats } from './fixtures/watch-stats.js';

void describe('Mutex', () => {
  const suite = etcdSuite();

  test('bad input is refused before any I/O', async () => {
    const ns = uniqueName('mx');
    const conn = suite.connect(ns, { endpoints: ['http://127.0.0.1:9'] });
    const path = conn.constructPath('locks', 'a');
    for (const p of ['', 'rel/x', '/elsewhere/x', `/${ns}/a/../b`, `/${ns}/a/`]) {
      assert.throws(() => conn.newMutex(p), InvalidArgumentError, p);
      assert.throws(() => conn.newRWMutex(p), InvalidArgumentError, p);
      assert.throws(() => conn.newSemaphore(p, 2), InvalidArgumentError, p);
      assert.throws(() => conn.newMultiLock([path, p]), InvalidArgumentError, p);
    }
    for (const ttl of [0, -1, 1.5, NaN]) {
      assert.throws(() => conn.newMutex(path, { ttl }), InvalidArgumentError);
    }
    assert.throws(() => conn.newMutex(path, { session: {} as never }), InvalidArgumentError);
    for (const permits of [0, -1, 1.5, NaN, 1001]) {
      assert.throws(() => conn.newSemaphore(path, permits), InvalidArgumentError);
    }
    assert.throws(() => conn.newMultiLock([]), InvalidArgumentError);
    const m = conn.newMutex(path);
    await assert.rejects(m.lock({ signal: 'x' as unknown as AbortSignal }), InvalidArgumentError);
    const aborted = AbortSignal.abort();
    await assert.rejects(m.lock({ signal: aborted }), AbortError);
    await conn.close();
    assert.throws(() => conn.newMutex(path), ClosedError);
    await assert.rejects(m.lock(), ClosedError);
  });

  test("Go's layout: path/<lease hex>, value '', under the session's lease; unlock deletes", async () => {
    const ns = uniqueName('mx');
    const conn = suite.connect(ns);
    const path = conn.constructPath('locks', 'layout');
    const session = await conn.session({ ttl: 10 });
    const m = conn.newMutex(path, { ttl: 10 });
    const lock = await m.lock();
    assert.equal(lock.key, `${path}/${session.leaseId}`);
    assert.equal(lock.state, 'held');
    assert.equal(lock.isHeld, true);
    assert.equal(lock.suspended, false);
    const kv = await suite.client.get(lock.key).exec();
    const [stored] = kv.kvs;
    assert.ok(stored !== undefined);
    assert.equal(stored.value.toString(), '');
    assert.equal(stored.lease, session.leaseIdDecimal);
    assert.equal(stored.create_revision, lock.token.revision);
    assert.equal(lock.token.key, lock.key);

    const log = `/${ns}/log`;
    await lock.fencedTxn([conn.client.put(log).value('1')]);
    assert.equal(await suite.client.get(log).string(), '1');

    await lock.unlock();
    await lock.unlock(); // idempotent
    assert.equal(lock.signal.aborted, true);
    assert.ok(lock.signal.reason instanceof NotLockedError);
    assert.equal(lock.state, 'released');
    assert.equal(await suite.client.get(lock.key).string(), null);
    await assert.rejects(lock.fencedTxn([conn.client.put(log).value('2')]), NotLockedError);
    assert.equal(await suite.client.get(log).string(), '1', 'nothing written after unlock');

    // The next lock of the same session gets a new, larger token.
    const again = await m.lock();
    assert.ok(BigInt(again.token.revision) > BigInt(lock.token.revision));
    await again[Symbol.asyncDispose]();
    await session.close();
  });

  test('FIFO across connectors; a waiter watches only its predecessor; tryLock', async () => {
    const ns = uniqueName('mx');
    const conns = [suite.connect(ns), suite.connect(ns), suite.connect(ns)];
    const path = `/${ns}/locks/fifo`;
    const [ma, mb, mc] = conns.map((c) => c.newMutex(path, { ttl: 10 }));
    assert.ok(ma !== undefined && mb !== undefined && mc !== undefined);
    const a = await ma.lock();
    const order: string[] = [];
    const pb = mb.lock().then((l) => (order.push('b'), l));
    await waitQueueLength(suite.client, `${path}/`, 2);
    const pc = mc.lock().then((l) => (order.push('c'), l));
    await waitQueueLength(suite.client, `${path}/`, 3);

    // Held elsewhere: undefined, and no key of ours left behind.
    const d = suite.connect(ns).newMutex(path);
    assert.equal(await d.tryLock(), undefined);
    assert.equal((await queueKeys(suite.client, `${path}/`)).length, 3);

    await a.unlock();
    const b = await withTimeout(pb, testTimeout(5000), 'b');
    assert.deepEqual(order, ['b']);
    await b.unlock();
    const c = await withTimeout(pc, testTimeout(5000), 'c');
    assert.deepEqual(order, ['b', 'c']);
    assert.ok(BigInt(c.token.revision) > BigInt(b.token.revision));
    assert.ok(BigInt(b.token.revision) > BigInt(a.token.revision));
    await c.unlock();
    const free = await d.tryLock();
    assert.ok(free !== undefined, 'tryLock on a free lock holds it');
    await free.unlock();
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });

  test("lock.revision: the read that found the lock ours, after the last holder's last write", async (t) => {
    const ns = uniqueName('mx');
    const [ca, cb] = [suite.connect(ns), suite.connect(ns)];
    const path = `/${ns}/locks/rev`;
    const acquired: DiagnosticMessages['etcd-connector:lock.acquire'][] = [];
    const onAcquire = (m: unknown): void => {
      acquired.push(m as DiagnosticMessages['etcd-connector:lock.acquire']);
    };
    subscribe('etcd-connector:lock.acquire', onAcquire);
    t.after(() => unsubscribe('etcd-connector:lock.acquire', onAcquire));
    const a = await ca.newMutex(path).lock();
    assert.ok(a.revision >= Number(a.token.revision), `${a.revision} >= ${a.token.revision}`);
    const pb = cb.newMutex(path).lock();
    await waitQueueLength(suite.client, `${path}/`, 2);
    // Written after b joined and before a let go: b was found first only after it.
    const last = await a.fencedTxn([ca.client.put(`/${ns}/x`).value('a')]);
    const releasedAt = performance.timeOrigin + performance.now();
    await a.unlock();
    const b = await withTimeout(pb, testTimeout(5000), 'b');
    const resolvedAt = performance.timeOrigin + performance.now();
    const written = Number(last.header.revision);
    assert.ok(b.revision > written, `${b.revision} > ${written}`);
    // The lock.acquire diagnostic says the same, and when it was granted: after the release, by
    // the time lock() resolved.
    const granted = acquired.find((m) => m.key === b.key);
    assert.equal(granted?.revision, b.revision);
    assert.ok(
      granted.grantedAt >= releasedAt && granted.grantedAt <= resolvedAt,
      `granted at ${granted.grantedAt}, released ${releasedAt}, resolved ${resolvedAt}`,
    );
    // Under which lease, and held surely until when.
    assert.equal(granted.lease, b.key.slice(path.length + 1));
    assert.ok(granted.deadlineAt > granted.grantedAt);
    await b.unlock();
    const tried = await cb.newMutex(path).tryLock();
    assert.ok(tried !== undefined);
    assert.ok(tried.revision >= Number(tried.token.revision));
    await tried.unlock();
  });

  test("a waiter wakes on its predecessor's delete, not on writes to it", async () => {
    const ns = uniqueName('mx');
    const path = `/${ns}/locks/wake`;
    const holder = await suite.connect(ns).newMutex(path).lock();
    const waiting = suite.connect(ns).newMutex(path).lock();
    await waitQueueLength(suite.client, `${path}/`, 2);
    const before = await settledWaitReads();
    // Only a deletion can move a waiter up a queue ordered by create revision.
    for (let i = 0; i < 10; i++)
      await suite.client.put(holder.key).value(`v${i}`).ignoreLease().exec();
    assert.equal(await settledWaitReads(), before, 'no re-read for writes to the predecessor');
    await holder.unlock();
    const next = await withTimeout(waiting, testTimeout(5000), 'the waiter holds');
    assert.equal(queueStats.waitReads - before, 1, 'one re-read for the delete');
    await next.unlock();
  });

  test('handovers back and forth reuse the watches: no watch created per wait', async () => {
    const ns = uniqueName('mx');
    const path = `/${ns}/locks/reuse`;
    const [ca, cb] = [suite.connect(ns), suite.connect(ns)];
    // As in a service, each connector keeps its session for the TTL: a lock's key stays the same.
    const sessions = await Promise.all([ca.session({ ttl: 10 }), cb.session({ ttl: 10 })]);
    const [a, b] = [ca.newMutex(path, { ttl: 10 }), cb.newMutex(path, { ttl: 10 })];
    let held = await a.lock();
    let waiting = b.lock();
    await waitQueueLength(suite.client, `${path}/`, 2);
    // Counted in the connectors (etcd's own count also has other clients' progress requests).
    const creates = (): number => watchStats(ca).createsSent + watchStats(cb).createsSent;
    const before = creates();
    const rounds = 20;
    for (let i = 1; i <= rounds; i++) {
      const next = i % 2 === 1 ? a : b;
      await held.unlock();
      held = await withTimeout(waiting, testTimeout(5000), `handover ${i}`);
      waiting = next.lock();
      await waitQueueLength(suite.client, `${path}/`, 2);
    }
    // Each wait watches the other's key: the watch of the wait before (kept a moment) serves it.
    const sent = creates() - before;
    assert.ok(sent < rounds / 2, `watch creates for ${rounds} handovers: ${sent}`);
    await held.unlock();
    await (await waiting).unlock();
    await Promise.all(sessions.map((x) => x.close()));
  });

  test('in-process holders of one session never overlap (lock, tryLock, withLock, MultiLock)', async () => {
    const ns = uniqueName('mx');
    const conn = suite.connect(ns);
    const path = conn.constructPath('locks', 'local');
    const other = conn.constructPath('locks', 'local-2');
    const m1 = conn.newMutex(path, { ttl: 10 });
    const m2 = conn.newMutex(path, { ttl: 10 });
    const multi = conn.newMultiLock([other, path], { ttl: 10 });
    let inside = 0;
    let maxInside = 0;
    let rounds = 0;
    const tokens: bigint[] = [];
    const work = async (lock: { signal: AbortSignal }, token: string): Promise<void> => {
      inside += 1;
      maxInside = Math.max(maxInside, inside);
      tokens.push(BigInt(token));
      assert.equal(lock.signal.aborted, false);
      await new Promise((resolve) => setImmediate(resolve));
      inside -= 1;
      rounds += 1;
    };
    const tasks: Promise<void>[] = [];
    for (let i = 0; i < 4; i++) {
      tasks.push(
        (async () => {
          for (let j = 0; j < 5; j++) {
            const m = (i + j) % 2 === 0 ? m1 : m2;
            await m.withLock((signal, lock) => work({ signal }, lock.token.revision));
          }
        })(),
      );
    }
    tasks.push(
      (async () => {
        for (let j = 0; j < 5; j++) {
          const h = await multi.lock();
          const mine = h.locks.find((l) => l.key.startsWith(`${path}/`));
          assert.ok(mine !== undefined);
          await work(h, mine.token.revision);
          await h.unlock();
        }
      })(),
    );
    tasks.push(
      (async () => {
        for (let j = 0; j < 20; j++) {
          const l = await m1.tryLock();
          if (l !== undefined) {
            await work(l, l.token.revision);
            await l.unlock();
          }
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      })(),
    );
    await withTimeout(Promise.all(tasks), testTimeout(30000), 'in-process contenders');
    assert.equal(maxInside, 1, 'never two holders at once');
    assert.ok(rounds >= 25, `rounds ${rounds}`);
    for (let i = 1; i < tokens.length; i++) {
      assert.ok((tokens[i] ?? 0n) > (tokens[i - 1] ?? 0n), 'tokens strictly increase');
    }
    assert.deepEqual(await queueKeys(suite.client, `${path}/`), []);
  });

  test('aborting a waiting lock() deletes its key at once; a bound session', async () => {
    const ns = uniqueName('mx');
    const a = suite.connect(ns);
    const b = suite.connect(ns);
    const path = `/${ns}/locks/abort`;
    const held = await a.newMutex(path).lock();
    const controller = new AbortController();
    const waiting = b.newMutex(path).lock({ signal: controller.signal });
    await waitQueueLength(suite.client, `${path}/`, 2);
    controller.abort(new Error('changed my mind'));
    await assert.rejects(waiting, AbortError);
    assert.deepEqual(
      await queueKeys(suite.client, `${path}/`),
      [held.key],
      'waiter key gone at once',
    );
    await held.unlock();

    // A mutex bound to a session uses its lease.
    const s = await b.session({ ttl: 7 });
    const bound = await b.newMutex(path, { session: s }).lock();
    assert.equal(bound.key, `${path}/${s.leaseId}`);
    await bound.unlock();
    await s.close();
  });

  test('the key deleted by hand: signal aborts, the next waiter holds', async () => {
    const ns = uniqueName('mx');
    const a = suite.connect(ns);
    const b = suite.connect(ns);
    const path = `/${ns}/locks/deleted`;
    const lock = await a.newMutex(path).lock();
    const next = b.newMutex(path).lock();
    await waitQueueLength(suite.client, `${path}/`, 2);
    await suite.client.delete().key(lock.key).exec();
    await waitFor(() => lock.signal.aborted, {
      timeoutMs: testTimeout(5000),
      intervalMs: 5,
      message: 'signal aborted after the key was deleted',
    });
    assert.ok(lock.signal.reason instanceof NotLockedError);
    assert.equal(lock.state, 'lost');
    const n = await withTimeout(next, testTimeout(5000), 'next holder');
    await assert.rejects(lock.fencedTxn([]), NotLockedError);
    await lock.unlock(); // after a loss: only cleans up
    await n.unlock();
  });

  test('writes to our held key are not sent to us; its delete still is', async () => {
    const ns = uniqueName('mx');
    const conn = suite.connect(ns);
    const lock = await conn.newMutex(conn.constructPath('locks', 'quiet')).lock();
    // Our own-key watch asks etcd for deletions only: 20 writes to the key send us nothing.
    // Counted in the connector (etcd's own count also has other clients' progress notifications).
    const before = watchStats(conn).eventsReceived;
    for (let i = 0; i < 20; i++)
      await suite.client.put(lock.key).value(`v${i}`).ignoreLease().exec();
    assert.equal(lock.state, 'held');
    await suite.client.delete().key(lock.key).exec();
    await waitFor(() => lock.signal.aborted, {
      timeoutMs: testTimeout(5000),
      intervalMs: 5,
      message: 'signal aborted after the key was deleted',
    });
    // One stream, in revision order: any put sent to us came before the delete.
    const events = watchStats(conn).eventsReceived - before;
    assert.ok(events <= 2, `watch events for 20 puts and a delete: ${events}`);
    await lock.unlock();
  });

  test('a fenced transaction refused by etcd loses the lock and writes nothing', async () => {
    const ns = uniqueName('mx');
    const conn = suite.connect(ns);
    const path = conn.constructPath('locks', 'fence');
    const lock = await conn.newMutex(path).lock();
    // Re-created behind our back (same name, new revision): our token no longer matches.
    await suite.client.delete().key(lock.key).exec();
    await suite.client.put(lock.key).value('').exec();
    const log = `/${ns}/fenced`;
    try {
      await lock.fencedTxn([conn.client.put(log).value('x')]);
    } catch (err) {
      assert.ok(err instanceof NotLockedError, String(err));
    }
    assert.equal(await suite.client.get(log).string(), null);
    assert.equal(lock.signal.aborted, true);
    await suite.client.delete().key(lock.key).exec();
  });

  test('conn.close(): held locks are lost (ClosedError), waiting ones reject', async () => {
    const ns = uniqueName('mx');
    const a = suite.connect(ns);
    const b = suite.connect(ns);
    const path = `/${ns}/locks/close`;
    const held = await a.newMutex(path).lock();
    const waiting = b.newMutex(path).lock();
    await waitQueueLength(suite.client, `${path}/`, 2);
    const rejected = assert.rejects(waiting, ClosedError);
    await b.close();
    await rejected;
    await a.close();
    assert.ok(held.signal.reason instanceof ClosedError);
    assert.equal(held.state, 'lost');
    await held.unlock();
    await waitQueueLength(suite.client, `${path}/`, 0);
  });

  test('interop: etcdctl lock and ours alternate in one queue, in arrival order', async () => {
    const ns = uniqueName('mx');
    const path = `/${ns}/locks/ctl`;
    const prefix = `${path}/`;
    const marker = `/${ns}/marker`;
    const etcdctl = findEtcdBinary('etcdctl');
    type Holder =
      | { kind: 'ours'; name: string; lock: Promise<Lock> }
      | { kind: 'etcdctl'; name: string; proc: EtcdctlLock };
    const holders: Holder[] = [];
    const arrivals: string[] = [];
    for (let i = 0; i < 6; i++) {
      const name = `${i % 2 === 0 ? 'ours' : 'ctl'}-${i}`;
      if (i % 2 === 0) {
        const conn = suite.connect(ns);
        holders.push({ kind: 'ours', name, lock: conn.newMutex(path).lock() });
      } else {
        const proc = new EtcdctlLock(etcdctl, suite.etcd.endpoints, path);
        suite.defer(() => proc.kill());
        holders.push({ kind: 'etcdctl', name, proc });
      }
      // Arrival order = create order: wait until this one's key is in the queue.
      arrivals.push((await waitQueueLength(suite.client, prefix, i + 1))[i] ?? '');
    }
    const granted: string[] = [];
    for (const h of holders) {
      let key: string;
      if (h.kind === 'ours') key = (await withTimeout(h.lock, testTimeout(10000), h.name)).key;
      else key = await h.proc.waitHeld(h.name);
      granted.push(key);
      // Each holder finds the marker released, sets it, and releases it before unlocking.
      assert.equal(
        await suite.client.get(marker).string(),
        null,
        `${h.name} found the marker taken`,
      );
      await suite.client.put(marker).value(h.name).exec();
      // Nobody else holds: every other key in the queue is younger.
      const keys = await queueKeys(suite.client, prefix);
      assert.equal(keys[0], key, `${h.name} holds the oldest key`);
      await suite.client.delete().key(marker).exec();
      if (h.kind === 'ours') await (await h.lock).unlock();
      else await h.proc.release();
    }
    assert.deepEqual(granted, arrivals, 'granted in arrival order');
    await waitQueueLength(suite.client, prefix, 0);
  });

  test("interop: Go's Mutex and ours queue together and exclude each other", async () => {
    const ns = uniqueName('mx');
    const path = `/${ns}/locks/go`;
    const prefix = `${path}/`;
    const peers: GoPeer[] = [];
    try {
      const go = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10 });
      peers.push(go);
      const conn = suite.connect(ns);
      const ours = await conn.newMutex(path).lock();
      const goLock = go.begin({ cmd: 'mutex.lock', path });
      await waitQueueLength(suite.client, prefix, 2);
      const keys = await queueKeys(suite.client, prefix);
      assert.equal(keys[1], `${prefix}${go.lease}`, "Go's key is ours with its lease");
      // Our tryLock while Go waits and we hold under another connector: undefined.
      assert.equal(await suite.connect(ns).newMutex(path).tryLock(), undefined);
      const ourNext = suite.connect(ns).newMutex(path).lock();
      await waitQueueLength(suite.client, prefix, 3);
      await ours.unlock();
      const g = await goLock.response;
      assert.equal(g.ok, true, JSON.stringify(g));
      assert.equal(g.key, `${prefix}${go.lease}`);
      // Go holds: ours still waits.
      const raced = await Promise.race([
        ourNext.then(() => 'ours'),
        new Promise((resolve) => setTimeout(resolve, 200, 'waiting')),
      ]);
      assert.equal(raced, 'waiting');
      // Go's TryLock (3.5 semantics) fails while we queue behind it? It holds: it re-uses its key.
      await go.ok({ cmd: 'mutex.unlock', path });
      const next = await withTimeout(ourNext, testTimeout(5000), 'ours after Go');
      const tryGo = await go.send({ cmd: 'mutex.trylock', path });
      assert.equal(tryGo.ok, false, 'Go cannot TryLock while we hold');
      assert.deepEqual(await queueKeys(suite.client, prefix), [next.key], 'no Go key left behind');
      await next.unlock();
    } finally {
      await Promise.all(peers.map((p) => p.close()));
    }
  });

  /**
   * A waiter's own key around its predecessor's delete (engines/wait-deletes.ts): after every
   * wake-up the waiter reads, so it never holds under a key that was deleted — not when the key
   * went in the same transaction as the predecessor's (either order), nor just before it — and a
   * predecessor's delete makes no holder while an older key is still queued.
   */
  void describe('our own key around the predecessor’s delete', () => {
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
      const a = await suite.connect(ns).newMutex(path).lock();
      const waiting = suite.connect(ns).newMutex(path).lock();
      const [predKey, ourKey] = await waitQueueLength(suite.client, `${path}/`, 2);
      assert.ok(predKey !== undefined && ourKey !== undefined);
      return { a, waiting, predKey, ourKey };
    }

    for (const order of ['ours first', 'predecessor first'] as const) {
      test(`our key deleted with the predecessor in one transaction (${order})`, async () => {
        const { a, waiting, predKey, ourKey } = await queuedPair();
        const keys = order === 'ours first' ? [ourKey, predKey] : [predKey, ourKey];
        const res = await suite.client
          .if(ourKey, 'Create', '>', 0)
          .then(...keys.map((k) => suite.client.delete().key(k)))
          .commit();
        assert.ok(res.succeeded);
        const deletedAt = BigInt(res.header.revision);
        const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
        // It joined again: a new key, created after the transaction.
        assert.ok(BigInt(b.token.revision) > deletedAt, `token ${b.token.revision} > ${deletedAt}`);
        assert.equal(b.signal.aborted, false);
        // Told by its own connector's watch, which may come after b's.
        await waitFor(() => a.signal.aborted, {
          timeoutMs: testTimeout(5000),
          message: 'the old holder told it lost its lock',
        });
        await b.unlock();
      });
    }

    test('our key deleted just before the predecessor', async () => {
      const { a, waiting, predKey, ourKey } = await queuedPair();
      const ourDeletedAt = BigInt((await suite.client.delete().key(ourKey)).header.revision);
      await suite.client.delete().key(predKey);
      const b = await withTimeout(waiting, testTimeout(5000), 'second holder');
      // It holds under a key it made after its first one went (it may have joined again before the
      // predecessor's delete), never under the deleted one.
      assert.ok(
        BigInt(b.token.revision) > ourDeletedAt,
        `token ${b.token.revision} > ${ourDeletedAt}`,
      );
      await waitFor(() => a.signal.aborted, {
        timeoutMs: testTimeout(5000),
        message: 'the old holder told it lost its lock',
      });
      await b.unlock();
    });

    test('with an older key still queued, the predecessor’s delete does not make a holder', async () => {
      const ns = uniqueName('qk');
      const path = `/${ns}/m`;
      const first = await suite.connect(ns).newMutex(path).lock();
      const second = suite.connect(ns).newMutex(path).lock();
      await waitQueueLength(suite.client, `${path}/`, 2);
      const third = suite.connect(ns).newMutex(path).lock();
      const [k0, k1] = await waitQueueLength(suite.client, `${path}/`, 3);
      assert.ok(k0 !== undefined && k1 !== undefined);
      // The third's predecessor (the second's key) goes while the first still holds.
      await suite.client.delete().key(k1);
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
});
