// Queue and PriorityQueue against real etcd: Go's layouts byte for byte (etcdctl, and the real Go
// recipes in the Go peer as producer and as consumer), FIFO / priority order, exactly one
// consumer per item, no herd of waiting consumers, aborts and closes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortError, ClosedError, InvalidArgumentError, type Queue } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { ACTIVE, claimStats } from '../src/engines/claim-queue.js';
import { etcdctlDump, etcdctlPut } from './fixtures/etcdctl-dump.js';
import { startGoPeer, type GoPeer } from './fixtures/go-peer.js';
import { loseAnswer } from './fixtures/lose-answer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn, putValues } from './fixtures/intercept-txn.js';

void describe('Queue and PriorityQueue', () => {
  const suite = etcdSuite({ connector: { callTimeoutMs: 3000 } });

  async function peer(): Promise<GoPeer> {
    const p = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10 });
    suite.defer(() => p.close());
    return p;
  }

  void test('queue: Go layout path/<UnixNano> = value, no lease; FIFO; receipts beside it', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('jobs');
    const queue = conn.newQueue(path);
    const keys = [];
    for (const v of ['one', 'two', 'three']) keys.push(await queue.enqueue(v));
    const kvs = await etcdctlDump(suite.etcd.endpoints, `${path}/`);
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [keys[0], 'one', ''],
        [keys[1], 'two', ''],
        [keys[2], 'three', ''],
      ],
    );
    for (const kv of kvs) assert.match(kv.key, new RegExp(String.raw`^${path}/\d{19}$`));
    const session = await conn.session({ ttl: 10 });
    const receipts = await etcdctlDump(suite.etcd.endpoints, conn.constructPath('__jobs.queue/'));
    assert.ok(receipts.length >= 1);
    for (const kv of receipts) {
      assert.match(
        kv.key,
        new RegExp(String.raw`^${conn.root}/__jobs\.queue/receipts/${session.leaseId}\.\d+$`),
      );
      assert.equal(kv.lease, session.leaseId);
    }
    await session.close();
    assert.deepEqual(
      [await queue.dequeue(), await queue.dequeue(), await queue.dequeue()],
      ['one', 'two', 'three'],
    );
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/`)).length, 0);
  });

  void test('queue: filled with etcdctl put in Go key form, consumed in mod-revision order', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('handmade');
    // Keys deliberately out of lexical order: Go's (and our) order is the mod revision.
    const puts: [string, string][] = [
      [`${path}/1795991798400000003`, 'first'],
      [`${path}/1795991798400000001`, 'second'],
      [`${path}/1795991798400000002`, 'third'],
    ];
    for (const [k, v] of puts) await etcdctlPut(suite.etcd.endpoints, k, v);
    const queue = conn.newQueue(path);
    const got = [];
    for (const _ of puts) got.push(await queue.dequeueItem());
    assert.deepEqual(
      got.map((i) => [i.key, i.value]),
      puts,
    );
  });

  void test('queue: a Go producer and our consumer, our producer and a Go consumer', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('mixed');
    const go = await peer();
    const queue = conn.newQueue(path);
    // Ours waits first: the Go enqueue wakes it.
    const waiting = queue.dequeue();
    await go.ok({ cmd: 'queue.enqueue', path, value: 'from-go-0' });
    assert.equal(await withTimeout(waiting, testTimeout(5000), 'dequeue'), 'from-go-0');
    for (let i = 1; i <= 5; i++) await go.ok({ cmd: 'queue.enqueue', path, value: `from-go-${i}` });
    for (let i = 1; i <= 5; i++) assert.equal(await queue.dequeue(), `from-go-${i}`);

    for (let i = 0; i < 5; i++) await queue.enqueue(`from-ts-${i}`);
    for (let i = 0; i < 5; i++) {
      assert.equal((await go.ok({ cmd: 'queue.dequeue', path })).value, `from-ts-${i}`);
    }
    const goWaits = go.begin({ cmd: 'queue.dequeue', path });
    await queue.enqueue('late');
    assert.equal((await goWaits.response).value, 'late');
  });

  void test('queue: many consumers in several connectors, each item exactly once', async () => {
    const ns = uniqueName('q');
    const path = `/${ns}/many`;
    const consumers = [suite.connect(ns), suite.connect(ns), suite.connect(ns)].map((c) =>
      c.newQueue(path),
    );
    const producer = suite.connect(ns).newQueue(path);
    const n = 60;
    const got: string[] = [];
    const ac = new AbortController();
    const loops = consumers.flatMap((q) =>
      [0, 1, 2].map(async () => {
        for (;;) {
          try {
            got.push(await q.dequeue({ signal: ac.signal }));
          } catch (err) {
            if (err instanceof AbortError) return;
            throw err;
          }
        }
      }),
    );
    await Promise.all(
      [0, 1, 2, 3].map(async (p) => {
        for (let i = p; i < n; i += 4) await producer.enqueue(`item-${i}`);
      }),
    );
    await waitFor(() => got.length >= n, { timeoutMs: testTimeout(20000), message: 'all items' });
    ac.abort();
    await Promise.all(loops);
    assert.equal(got.length, n, 'none twice');
    assert.deepEqual(new Set(got).size, n);
    // Nobody waits: every line key is gone.
    await waitFor(
      async () =>
        (await etcdctlDump(suite.etcd.endpoints, `/${ns}/__many.queue/line/`)).length === 0,
      {
        timeoutMs: testTimeout(5000),
        message: 'line empty',
      },
    );
  });

  void test('queue: no herd — an enqueue wakes at most ACTIVE of 8 waiting connectors, one claim', async () => {
    const ns = uniqueName('q');
    const path = `/${ns}/herd`;
    const queues: Queue[] = Array.from({ length: 8 }, () => suite.connect(ns).newQueue(path));
    const producer = suite.connect(ns).newQueue(path);
    // Each of 8 connectors (8 sessions: 8 processes as etcd sees it) waits for one item.
    const got: string[] = [];
    const waits = queues.map(async (q) => {
      got.push(await q.dequeue());
    });
    await waitFor(
      async () =>
        (await etcdctlDump(suite.etcd.endpoints, `/${ns}/__herd.queue/line/`)).length === 8,
      { timeoutMs: testTimeout(10000), message: '8 processes in line' },
    );
    const before = { ...claimStats };
    for (let i = 0; i < 8; i++) {
      await producer.enqueue(`h-${i}`);
      await waitFor(() => got.length === i + 1, {
        timeoutMs: testTimeout(5000),
        intervalMs: 5,
        message: `item ${i} taken`,
      });
    }
    await Promise.all(waits);
    const wakeups = claimStats.itemWakeups - before.itemWakeups;
    const claims = claimStats.claims - before.claims;
    const standby = claimStats.standby - before.standby;
    // Go's recipe: every waiter wakes and claims on every enqueue (8 + 7 + ... + 1 = 36 claims).
    assert.ok(wakeups <= 8 * ACTIVE, `wakeups ${wakeups} for 8 items`);
    const lost = claimStats.lost - before.lost;
    // One claim per item; only a second in line stepping in for a slow first may lose a race.
    assert.equal(claims - lost, 8, `claims ${claims}, lost ${lost}, standby ${standby}`);
    assert.ok(lost <= standby, `lost ${lost} > standby ${standby}`);
    assert.ok(claims <= 8 * ACTIVE, `claims ${claims}`);
    assert.deepEqual(new Set(got).size, 8);
    // Served processes leave the line (after a short linger).
    await waitFor(
      async () =>
        (await etcdctlDump(suite.etcd.endpoints, `/${ns}/__herd.queue/line/`)).length === 0,
      { timeoutMs: testTimeout(5000), message: 'line empty' },
    );
  });

  void test('queue: a claim whose answer was lost is resolved: the item is delivered, once', async () => {
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close());
    const ns = uniqueName('q');
    const path = `/${ns}/lossy`;
    const producer = suite.connect(ns).newQueue(path);
    const consumerConn = suite.connect(ns, { endpoints: [proxy.endpoint], callTimeoutMs: 500 });
    const consumer = consumerConn.newQueue(path);
    await producer.enqueue('x1');
    await producer.enqueue('x2');
    // The first claim also reads x2 as the next candidate: the next dequeue sends its claim first.
    assert.equal(await consumer.dequeue(), 'x1');
    const before = { ...claimStats };
    proxy.delay(60_000);
    const taking = consumer.dequeueItem();
    await loseAnswer(proxy);
    const item = await withTimeout(taking, testTimeout(15000), 'dequeue');
    assert.equal(item.value, 'x2');
    assert.ok(claimStats.resolved > before.resolved, 'resolved through the receipt');
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/`)).length, 0);
    // Nothing else comes out of the queue.
    await producer.enqueue('x3');
    assert.equal(await consumer.dequeue(), 'x3');
  });

  void test('queue: dequeue waits, aborts (AbortError), closes (ClosedError); bad input', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('idle');
    const queue = conn.newQueue(path);
    const ac = new AbortController();
    const aborted = queue.dequeue({ signal: ac.signal });
    const closed = queue.dequeue();
    const closedCheck = assert.rejects(closed, ClosedError);
    ac.abort();
    await assert.rejects(aborted, AbortError);
    await queue.close();
    await closedCheck;
    await assert.rejects(queue.enqueue('x'), ClosedError);
    const other = conn.newQueue(path);
    await assert.rejects(other.enqueue(42 as unknown as string), InvalidArgumentError);
    assert.throws(() => conn.newQueue(conn.root), InvalidArgumentError);
    assert.throws(() => conn.newQueue(path, { ttl: 0 }), InvalidArgumentError);
    // Nothing was taken by the aborted or closed dequeues.
    await other.enqueue('kept');
    assert.equal(await other.dequeue(), 'kept');
  });

  void test('queue: a dequeue aborted while its claim waits for a receipt takes nothing', async () => {
    // Chaos run, seed 20261129: a consumer gave up while its claim waited for a new receipt (the
    // only one was held by an enqueue in flight); the claim went out all the same, for nobody,
    // and its item was lost.
    const ns = uniqueName('q');
    const conn = suite.connect(ns);
    const path = conn.constructPath('patient');
    await suite.connect(ns).newQueue(path).enqueue('job');
    // The connector's next receipt creation waits until the test lets it go.
    let letGo!: () => void;
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    const creating = interceptNextTxn(
      conn.client,
      (req) => putValues(req).includes('new'),
      async (send) => {
        await gate;
        return send();
      },
    );
    const queue = conn.newQueue(path);
    const ac = new AbortController();
    const gaveUp = queue.dequeue({ signal: ac.signal });
    await withTimeout(creating, testTimeout(5000), 'the receipt creation');
    ac.abort();
    await assert.rejects(gaveUp, AbortError);
    const next = queue.dequeue();
    letGo();
    assert.equal(await withTimeout(next, testTimeout(5000), 'the next dequeue'), 'job');
  });

  void test('priority queue: Go layout path/<%05d>/<%016d> + __path/<%05d> markers; order', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('pq');
    const pq = conn.newPriorityQueue(path);
    const items: [string, number][] = [
      ['low', 10],
      ['high', 1],
      ['mid', 5],
      ['high-2', 1],
    ];
    const keys = [];
    for (const [v, p] of items) keys.push(await pq.enqueue(v, p));
    assert.deepEqual(keys, [
      `${path}/00010/0000000000000000`,
      `${path}/00001/0000000000000000`,
      `${path}/00005/0000000000000000`,
      `${path}/00001/0000000000000001`,
    ]);
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, `${path}/`)).map((kv) => [
        kv.key,
        kv.value,
        kv.lease,
      ]),
      [
        [`${path}/00001/0000000000000000`, 'high', ''],
        [`${path}/00001/0000000000000001`, 'high-2', ''],
        [`${path}/00005/0000000000000000`, 'mid', ''],
        [`${path}/00010/0000000000000000`, 'low', ''],
      ],
    );
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, `__${path}/`)).map((kv) => [
        kv.key,
        kv.value,
        kv.lease,
      ]),
      [
        [`__${path}/00001`, '', ''],
        [`__${path}/00005`, '', ''],
        [`__${path}/00010`, '', ''],
      ],
    );
    const order = [];
    for (const _ of items) order.push(await pq.dequeue());
    assert.deepEqual(order, ['high', 'high-2', 'mid', 'low']);
    await assert.rejects(pq.enqueue('x', 65536), InvalidArgumentError);
    await assert.rejects(pq.enqueue('x', -1), InvalidArgumentError);
    await assert.rejects(pq.enqueue('x', 1.5), InvalidArgumentError);
  });

  void test('priority queue: Go and ours produce at once at one priority, consume across', async () => {
    const conn = suite.connect(uniqueName('q'));
    const path = conn.constructPath('pqmix');
    const go = await peer();
    const pq = conn.newPriorityQueue(path);
    // Both producers race for the next sequence number of priority 3: the marker guards it.
    await Promise.all([
      (async () => {
        for (let i = 0; i < 15; i++)
          await go.ok({ cmd: 'pqueue.enqueue', path, value: `go-${i}`, priority: 3 });
      })(),
      (async () => {
        for (let i = 0; i < 15; i++) await pq.enqueue(`ts-${i}`, 3);
      })(),
    ]);
    await pq.enqueue('urgent', 0);
    await go.ok({ cmd: 'pqueue.enqueue', path, value: 'go-urgent', priority: 0 });
    const kvs = await etcdctlDump(suite.etcd.endpoints, `${path}/`);
    assert.equal(kvs.length, 32, 'no item overwritten');
    assert.equal((await go.ok({ cmd: 'pqueue.dequeue', path })).value, 'urgent');
    assert.equal(await pq.dequeue(), 'go-urgent');
    const rest = new Set<string>();
    for (let i = 0; i < 15; i++)
      rest.add((await go.ok({ cmd: 'pqueue.dequeue', path })).value ?? '');
    for (let i = 0; i < 15; i++) rest.add(await pq.dequeue());
    assert.equal(rest.size, 30);
    // Ours waits, a Go enqueue wakes it.
    const waiting = pq.dequeue();
    await go.ok({ cmd: 'pqueue.enqueue', path, value: 'late', priority: 7 });
    assert.equal(await withTimeout(waiting, testTimeout(5000), 'dequeue'), 'late');
  });
});
