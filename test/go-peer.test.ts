/**
 * Smoke tests of the Go peer (test/go-peer): one per recipe family, each driving etcd 3.4's own
 * Go code against a real etcd and pinning the exact key/value layout it writes (read back with
 * `etcdctl get --prefix -w json`). docs/go-layouts.md records these layouts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { testTimeout, uniqueName, waitFor } from '../src/testing/index.js';
import { etcdctlDump, type DumpedKv } from './fixtures/etcdctl-dump.js';
import { startGoPeer, type GoPeer, type GoPeerOptions } from './fixtures/go-peer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

type Kv = DumpedKv;

void describe('Go peer (etcd 3.4 Go recipes)', () => {
  const suite = etcdSuite();

  async function peer(options: Partial<GoPeerOptions> = {}): Promise<GoPeer> {
    const p = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10, ...options });
    suite.defer(() => p.close());
    return p;
  }

  const dump = (prefix: string): Promise<Kv[]> => etcdctlDump(suite.etcd.endpoints, prefix);

  /** Waits until the keys under `prefix` satisfy `check`; returns them. */
  function dumpUntil(prefix: string, check: (kvs: Kv[]) => boolean, what: string): Promise<Kv[]> {
    return waitFor(
      async () => {
        const kvs = await dump(prefix);
        return check(kvs) ? kvs : undefined;
      },
      { timeoutMs: testTimeout(10000), message: what },
    );
  }

  /** etcd's current number of watchers (a gauge): tells when a Go waiter is really waiting. */
  async function watchers(): Promise<number> {
    const endpoint = suite.endpoint;
    const res = await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(2000) });
    const m = /^etcd_debugging_mvcc_watcher_total (\d+)$/m.exec(await res.text());
    if (m?.[1] === undefined) throw new Error('etcd_debugging_mvcc_watcher_total not in /metrics');
    return Number(m[1]);
  }

  void test('mutex: key path/<leaseHex> = "", FIFO between Go peers, trylock, cancel', async () => {
    const path = uniqueName('gomutex');
    const [a, b, c] = [await peer(), await peer(), await peer()];

    const lockA = await a.ok({ cmd: 'mutex.lock', path });
    assert.equal(lockA.key, `${path}/${a.lease}`);
    let kvs = await dump(`${path}/`);
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease, kv.createRevision]),
      [[`${path}/${a.lease}`, '', a.lease, lockA.createRevision]],
    );

    // B queues first, then C: they get the lock in create-revision order.
    const lockB = b.begin({ cmd: 'mutex.lock', path });
    await dumpUntil(`${path}/`, (k) => k.length === 2, 'B waiting');
    const lockC = c.begin({ cmd: 'mutex.lock', path });
    kvs = await dumpUntil(`${path}/`, (k) => k.length === 3, 'C waiting');
    assert.deepEqual(
      kvs.map((kv) => kv.key).sort(),
      [`${path}/${a.lease}`, `${path}/${b.lease}`, `${path}/${c.lease}`].sort(),
    );
    const revB = kvs.find((kv) => kv.key === `${path}/${b.lease}`)?.createRevision ?? 0;
    const revC = kvs.find((kv) => kv.key === `${path}/${c.lease}`)?.createRevision ?? 0;
    assert.ok(revB < revC);

    // TryLock (3.5 semantics, by hand) fails while held and leaves no key behind.
    const d = await peer();
    const tried = await d.send({ cmd: 'mutex.trylock', path });
    assert.equal(tried.ok, false);
    assert.equal(tried.error, 'mutex: Locked by another session');
    assert.equal(tried.holderKey, `${path}/${a.lease}`);
    // A Lock that times out removes its own waiter key (Mutex.Lock's own clean-up).
    const timedOut = await d.send({ cmd: 'mutex.lock', path, timeoutMs: 300 });
    assert.equal(timedOut.cancelled, 'timeout');
    assert.equal((await dump(`${path}/${d.lease}`)).length, 0);
    // The driver's own deadline names the command and cancels it in the peer (key deleted).
    await assert.rejects(d.send({ cmd: 'mutex.lock', path }, { deadlineMs: 300 }), (err: Error) =>
      err.message.includes(`no response to mutex.lock ${path}`),
    );
    await dumpUntil(`${path}/${d.lease}`, (k) => k.length === 0, 'cancelled waiter key deleted');

    await a.ok({ cmd: 'mutex.unlock', path });
    const gotB = await lockB.response;
    assert.equal(gotB.ok, true);
    assert.equal(gotB.key, `${path}/${b.lease}`);
    assert.equal(gotB.createRevision, revB);
    await b.ok({ cmd: 'mutex.unlock', path });
    const gotC = await lockC.response;
    assert.equal(gotC.key, `${path}/${c.lease}`);

    // session.close revokes the lease: the held key goes with it; a new session follows.
    const closed = await c.ok({ cmd: 'session.close' });
    assert.equal(closed.lease, c.lease);
    assert.equal((await dump(`${path}/`)).length, 0);
    const info = await c.ok({ cmd: 'session.info' });
    assert.notEqual(info.lease, c.lease);
    const trylock = await c.ok({ cmd: 'mutex.trylock', path });
    assert.equal(trylock.key, `${path}/${String(info.lease)}`);

    // stdin EOF: the peer revokes its lease before it exits, so the key goes at once.
    await c.close();
    assert.equal((await dump(`${path}/`)).length, 0);
  });

  void test('election: key path/<leaseHex> = value; leader, proclaim, resign', async () => {
    const path = uniqueName('goelect');
    const [a, b] = [await peer(), await peer()];

    const won = await a.ok({ cmd: 'election.campaign', path, value: 'alpha' });
    assert.equal(won.key, `${path}/${a.lease}`);
    const campaignB = b.begin({ cmd: 'election.campaign', path, value: 'beta' });
    const kvs = await dumpUntil(`${path}/`, (k) => k.length === 2, 'B campaigning');
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease]).sort(),
      [
        [`${path}/${a.lease}`, 'alpha', a.lease],
        [`${path}/${b.lease}`, 'beta', b.lease],
      ].sort(),
    );

    // A cancelled Campaign resigns: its key goes.
    const c = await peer();
    const campaignC = c.begin({ cmd: 'election.campaign', path, value: 'gamma' });
    await dumpUntil(`${path}/`, (k) => k.length === 3, 'C campaigning');
    assert.equal((await c.cancel(campaignC.id)).found, true);
    const cancelled = await campaignC.response;
    assert.deepEqual([cancelled.ok, cancelled.cancelled], [false, 'cancel']);
    await dumpUntil(`${path}/`, (k) => k.length === 2, 'C resigned');

    const leader = await b.ok({ cmd: 'election.leader', path });
    assert.equal(leader.key, `${path}/${a.lease}`);
    assert.equal(leader.value, 'alpha');
    assert.equal(leader.lease, a.lease);

    await a.ok({ cmd: 'election.proclaim', path, value: 'alpha-2' });
    const [proclaimed] = await dump(`${path}/${a.lease}`);
    assert.equal(proclaimed?.value, 'alpha-2');
    assert.equal(proclaimed.createRevision, won.createRevision);

    await a.ok({ cmd: 'election.resign', path });
    const wonB = await campaignB.response;
    assert.equal(wonB.ok, true);
    const now = await a.ok({ cmd: 'election.leader', path });
    assert.equal(now.key, `${path}/${b.lease}`);
    assert.equal(now.value, 'beta');
    await b.ok({ cmd: 'election.resign', path });
    const none = await a.send({ cmd: 'election.leader', path });
    assert.equal(none.ok, false);
    assert.equal(none.noLeader, true);
  });

  void test('rwmutex: keys path/read/<unixNano> and path/write/<unixNano>', async () => {
    const path = uniqueName('gorw');
    const [a, b, c, d] = [await peer(), await peer(), await peer(), await peer()];
    const nano = String.raw`\d{19}`;

    const ra = await a.ok({ cmd: 'rwmutex.rlock', path });
    const rb = await b.ok({ cmd: 'rwmutex.rlock', path }); // readers share
    assert.match(ra.key ?? '', new RegExp(`^${path}/read/${nano}$`));
    assert.match(rb.key ?? '', new RegExp(`^${path}/read/${nano}$`));

    const wc = c.begin({ cmd: 'rwmutex.lock', path });
    const kvs = await dumpUntil(`${path}/`, (k) => k.length === 3, 'writer waiting');
    const w = kvs.find((kv) => kv.key.startsWith(`${path}/write/`));
    assert.match(w?.key ?? '', new RegExp(`^${path}/write/${nano}$`));
    assert.deepEqual(
      kvs.map((kv) => [kv.value, kv.lease]).sort(),
      [
        ['', a.lease],
        ['', b.lease],
        ['', c.lease],
      ].sort(),
    );

    await a.ok({ cmd: 'rwmutex.runlock', path });
    await b.ok({ cmd: 'rwmutex.runlock', path });
    const gotC = await wc.response;
    assert.equal(gotC.ok, true);
    assert.equal(gotC.key, w?.key);

    // A reader that gives up behind the writer leaves no key.
    const rd = await d.send({ cmd: 'rwmutex.rlock', path, timeoutMs: 300 });
    assert.equal(rd.cancelled, 'timeout');
    assert.deepEqual(
      (await dump(`${path}/`)).map((kv) => kv.key),
      [w?.key],
    );
    await c.ok({ cmd: 'rwmutex.unlock', path });
    assert.equal((await dump(`${path}/`)).length, 0);
  });

  void test('barrier: key path = "" without lease; Wait misses a release after other writes', async () => {
    const path = uniqueName('gobarrier');
    const [a, b] = [await peer(), await peer()];

    const held = await a.ok({ cmd: 'barrier.hold', path });
    assert.deepEqual(held.keys, [path]);
    const [kv] = await dump(path);
    assert.deepEqual([kv?.key, kv?.value, kv?.lease], [path, '', '']);
    assert.equal((await a.send({ cmd: 'barrier.hold', path })).error, 'key already exists');

    // No write between Hold and Wait's Get: Wait sees the PUT and then the DELETE.
    let before = await watchers();
    const waiting = b.begin({ cmd: 'barrier.wait', path });
    await waitFor(async () => (await watchers()) > before, {
      timeoutMs: testTimeout(10000),
      message: 'Go waiter watching',
    });
    await a.ok({ cmd: 'barrier.release', path });
    assert.equal((await waiting.response).ok, true);
    assert.equal((await dump(path)).length, 0);

    // Go's Wait watches from Get's header revision for a PUT then a DELETE of the key: when any
    // other write happened after Hold, it never sees the PUT and misses the release.
    await a.ok({ cmd: 'barrier.hold', path });
    await suite.client.put(uniqueName('unrelated')).value('x');
    before = await watchers();
    const missed = b.begin({ cmd: 'barrier.wait', path, timeoutMs: 1500 });
    await waitFor(async () => (await watchers()) > before, {
      timeoutMs: testTimeout(10000),
      message: 'Go waiter watching',
    });
    await a.ok({ cmd: 'barrier.release', path });
    const res = await missed.response;
    assert.equal(res.ok, false);
    assert.equal(res.cancelled, 'timeout');
  });

  void test('double barrier: path/waiters/<unixNano> (leased) and path/ready = ""', async () => {
    const path = uniqueName('godouble');
    const [a, b] = [await peer(), await peer()];

    const enterA = a.begin({ cmd: 'doublebarrier.enter', path, count: 2 });
    let kvs = await dumpUntil(`${path}/`, (k) => k.length === 1, 'A waiting');
    assert.match(kvs[0]?.key ?? '', new RegExp(String.raw`^${path}/waiters/\d{19}$`));
    assert.deepEqual([kvs[0]?.value, kvs[0]?.lease], ['', a.lease]);

    const enteredB = await b.ok({ cmd: 'doublebarrier.enter', path, count: 2 });
    const enteredA = await enterA.response;
    assert.equal(enteredA.ok, true);
    kvs = await dump(`${path}/`);
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease]).sort(),
      [
        [`${path}/ready`, '', ''],
        [enteredA.key, '', a.lease],
        [enteredB.key, '', b.lease],
      ].sort(),
    );

    const leaveA = a.begin({ cmd: 'doublebarrier.leave', path });
    const leaveB = b.begin({ cmd: 'doublebarrier.leave', path });
    assert.equal((await leaveA.response).ok, true);
    assert.equal((await leaveB.response).ok, true);
    assert.equal((await dump(`${path}/`)).length, 0);
  });

  void test('queue: path/<unixNano> = value, FIFO, no lease; a cancelled dequeue takes nothing', async () => {
    const path = uniqueName('goqueue');
    const [a, b] = [await peer(), await peer()];

    const keys: string[] = [];
    for (const value of ['one', 'two', 'three']) {
      const res = await a.ok({ cmd: 'queue.enqueue', path, value });
      assert.match(res.key ?? '', new RegExp(String.raw`^${path}/\d{19}$`));
      keys.push(res.key ?? '');
    }
    const kvs = await dump(`${path}/`);
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [keys[0], 'one', ''],
        [keys[1], 'two', ''],
        [keys[2], 'three', ''],
      ],
    );
    for (const value of ['one', 'two', 'three']) {
      assert.equal((await b.ok({ cmd: 'queue.dequeue', path })).value, value);
    }

    const timedOut = await b.send({ cmd: 'queue.dequeue', path, timeoutMs: 300 });
    assert.equal(timedOut.cancelled, 'timeout');
    const blocked = b.begin({ cmd: 'queue.dequeue', path });
    const put = await a.ok({ cmd: 'queue.enqueue', path, value: 'late' });
    const got = await blocked.response;
    assert.deepEqual([got.ok, got.value, got.key], [true, 'late', put.key]);
    assert.equal((await dump(`${path}/`)).length, 0);
  });

  void test('priority queue: path/<%05d prio>/<%016d seq> and __path/<%05d prio> marker keys', async () => {
    const path = uniqueName('gopq');
    const [a, b] = [await peer(), await peer()];

    const items: [string, number][] = [
      ['low', 10],
      ['high', 1],
      ['mid', 5],
      ['high-2', 1],
    ];
    const puts = [];
    for (const [value, priority] of items) {
      puts.push(await a.ok({ cmd: 'pqueue.enqueue', path, value, priority }));
    }
    assert.deepEqual(
      puts.map((p) => p.keys),
      [
        [`__${path}/00010`, `${path}/00010/0000000000000000`],
        [`__${path}/00001`, `${path}/00001/0000000000000000`],
        [`__${path}/00005`, `${path}/00005/0000000000000000`],
        [`__${path}/00001`, `${path}/00001/0000000000000001`],
      ],
    );
    assert.deepEqual(
      (await dump(`${path}/`)).map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [`${path}/00001/0000000000000000`, 'high', ''],
        [`${path}/00001/0000000000000001`, 'high-2', ''],
        [`${path}/00005/0000000000000000`, 'mid', ''],
        [`${path}/00010/0000000000000000`, 'low', ''],
      ],
    );
    assert.deepEqual(
      (await dump(`__${path}/`)).map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [`__${path}/00001`, '', ''],
        [`__${path}/00005`, '', ''],
        [`__${path}/00010`, '', ''],
      ],
    );

    const order = [];
    for (const _item of items) order.push((await b.ok({ cmd: 'pqueue.dequeue', path })).value);
    assert.deepEqual(order, ['high', 'high-2', 'mid', 'low']);
    assert.equal((await dump(`${path}/`)).length, 0);
    // The __ marker keys are never deleted.
    assert.equal((await dump(`__${path}/`)).length, 3);
  });

  void test('endpoints: path/<addr> = {"Op":0,"Addr":...,"Metadata":...} (grpc naming.Update)', async () => {
    const target = uniqueName('gosvc');
    const a = await peer();

    await a.ok({
      cmd: 'endpoints.add',
      path: target,
      addr: '127.0.0.1:5000',
      metadata: { zone: 'a<b>&c', weight: 2 },
    });
    await a.ok({ cmd: 'endpoints.add', path: target, addr: '127.0.0.1:5001' });
    await a.ok({ cmd: 'endpoints.add', path: target, addr: '127.0.0.1:5002', withLease: true });
    assert.deepEqual(
      (await dump(`${target}/`)).map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [
          `${target}/127.0.0.1:5000`,
          String.raw`{"Op":0,"Addr":"127.0.0.1:5000","Metadata":{"weight":2,"zone":"a\u003cb\u003e\u0026c"}}`,
          '',
        ],
        [`${target}/127.0.0.1:5001`, '{"Op":0,"Addr":"127.0.0.1:5001","Metadata":null}', ''],
        [`${target}/127.0.0.1:5002`, '{"Op":0,"Addr":"127.0.0.1:5002","Metadata":null}', a.lease],
      ],
    );

    // Go reads what another writer stored in the same format, and skips what is not JSON.
    await suite.client.put(`${target}/10.0.0.1:80`).value('{"Op":0,"Addr":"10.0.0.1:80"}');
    await suite.client.put(`${target}/garbage`).value('not json');
    const listed = await a.ok({ cmd: 'endpoints.list', path: target });
    assert.deepEqual(listed.endpoints, {
      [`${target}/127.0.0.1:5000`]: {
        addr: '127.0.0.1:5000',
        metadata: { weight: 2, zone: 'a<b>&c' },
      },
      [`${target}/127.0.0.1:5001`]: { addr: '127.0.0.1:5001', metadata: null },
      [`${target}/127.0.0.1:5002`]: { addr: '127.0.0.1:5002', metadata: null },
      [`${target}/10.0.0.1:80`]: { addr: '10.0.0.1:80', metadata: null },
    });

    await a.ok({ cmd: 'endpoints.delete', path: target, addr: '127.0.0.1:5000' });
    assert.deepEqual(
      (await dump(`${target}/`)).map((kv) => kv.key),
      [
        `${target}/10.0.0.1:80`,
        `${target}/127.0.0.1:5001`,
        `${target}/127.0.0.1:5002`,
        `${target}/garbage`,
      ],
    );
  });

  void test('stm: transfer writes plain decimal strings under each isolation level', async () => {
    const ns = uniqueName('gostm');
    const a = await peer();
    const from = `${ns}/a`;
    const to = `${ns}/b`;
    await suite.client.put(from).value('100');

    let expectFrom = 100;
    for (const isolation of [
      'serializable-snapshot',
      'serializable',
      'repeatable-reads',
      'read-committed',
    ]) {
      const res = await a.ok({ cmd: 'stm.transfer', from, to, amount: 10, isolation });
      expectFrom -= 10;
      assert.deepEqual([res.from, res.to, res.attempts], [expectFrom, 100 - expectFrom, 1]);
    }
    assert.deepEqual(
      (await dump(`${ns}/`)).map((kv) => [kv.key, kv.value, kv.lease]),
      [
        [from, '60', ''],
        [to, '40', ''],
      ],
    );
    const broke = await a.send({ cmd: 'stm.transfer', from, to, amount: 1000 });
    assert.equal(broke.ok, false);
    assert.equal(broke.insufficient, true);
  });

  void test("the bench's timed cycles: mutex.cycles and kv.cycles write, then leave nothing", async () => {
    const ns = uniqueName('gocycles');
    const a = await peer();
    const before = Number((await suite.client.get(`${ns}/`).exec()).header.revision);
    for (const [cmd, path] of [
      ['mutex.cycles', `${ns}/lock`],
      ['kv.cycles', `${ns}/key`],
    ] as const) {
      const res = await a.ok({ cmd, path, count: 3 });
      const samples = res.samplesMs as number[];
      assert.equal(samples.length, 3, cmd);
      assert.ok(
        samples.every((ms) => ms > 0),
        `${cmd}: ${samples.join(', ')}`,
      );
      assert.deepEqual(await dump(`${ns}/`), [], `${cmd} left keys`);
    }
    // Each cycle is two writes: the lock's key or the put, then its delete.
    const events: string[] = [];
    const w = await suite.client
      .watch()
      .prefix(`${ns}/`)
      .startRevision(String(before + 1))
      .create();
    try {
      w.on('put', (kv) => events.push(`put ${kv.key.toString().slice(ns.length)}`));
      w.on('delete', (kv) => events.push(`delete ${kv.key.toString().slice(ns.length)}`));
      await waitFor(() => events.length >= 12 || undefined, {
        timeoutMs: testTimeout(5000),
        message: `12 writes, saw ${events.length}`,
      });
    } finally {
      await w.cancel();
    }
    const lockKey = `/lock/${a.lease}`;
    assert.deepEqual(events, [
      ...Array.from({ length: 3 }, () => [`put ${lockKey}`, `delete ${lockKey}`]).flat(),
      ...Array.from({ length: 3 }, () => ['put /key', 'delete /key']).flat(),
    ]);
  });
});
