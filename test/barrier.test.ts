// Barrier and DoubleBarrier against real etcd: Go's layouts byte for byte (etcdctl and the real Go
// recipes in the Go peer), no missed release, dead participants, aborts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AbortError,
  ClosedError,
  InvalidArgumentError,
  InvalidStateError,
  SessionLostError,
  TooManyParticipantsError,
} from '../src/index.js';
import { testTimeout, uniqueName, waitFor, withTimeout } from '../src/testing/index.js';
import { etcdctlDump } from './fixtures/etcdctl-dump.js';
import { startGoPeer, type GoPeer } from './fixtures/go-peer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';
import { interceptNextTxn, keysOf } from './fixtures/intercept-txn.js';

/** Settles to 'pending' unless `p` settled within `ms`. */
async function pendingAfter(p: Promise<unknown>, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    p.then(
      () => 'resolved',
      () => 'rejected',
    ),
    new Promise<string>((resolve) => {
      timer = setTimeout(() => {
        resolve('pending');
      }, ms);
    }),
  ]);
  clearTimeout(timer);
  return r;
}

void describe('Barrier and DoubleBarrier', () => {
  const suite = etcdSuite();

  async function peer(ttl = 10): Promise<GoPeer> {
    const p = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl });
    suite.defer(() => p.close());
    return p;
  }

  /** etcd's watcher gauge: tells when a Go waiter really waits. */
  async function watchers(): Promise<number> {
    const res = await fetch(`${suite.endpoint}/metrics`, {
      signal: AbortSignal.timeout(2000),
    });
    const m = /^etcd_debugging_mvcc_watcher_total (\d+)$/m.exec(await res.text());
    return Number(m?.[1] ?? NaN);
  }

  void test('barrier: key exactly path = "" without lease; hold/release/isHeld', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('gate');
    const barrier = conn.newBarrier(path);
    assert.equal(await barrier.isHeld(), false);
    assert.equal(await barrier.hold(), true);
    assert.equal(await barrier.hold(), false, 'held already');
    assert.equal(await barrier.isHeld(), true);
    const kvs = await etcdctlDump(suite.etcd.endpoints, path);
    assert.deepEqual(
      kvs.map((kv) => [kv.key, kv.value, kv.lease]),
      [[path, '', '']],
    );
    assert.equal(await barrier.release(), true);
    assert.equal(await barrier.release(), false, 'released already');
    assert.equal((await etcdctlDump(suite.etcd.endpoints, path)).length, 0);
  });

  void test('barrier: wait returns at once when free, and on the release otherwise', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const barrier = conn.newBarrier(conn.constructPath('gate2'));
    await withTimeout(barrier.wait(), testTimeout(3000), 'wait on a free barrier');
    await barrier.hold();
    const waits = [barrier.wait(), conn.newBarrier(barrier.path).wait()];
    assert.equal(await pendingAfter(Promise.race(waits), 300), 'pending');
    await barrier.release();
    await withTimeout(Promise.all(waits), testTimeout(3000), 'waiters released');
  });

  void test('barrier: no missed release after unrelated writes (Go bug), nor a quick re-hold', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const barrier = conn.newBarrier(conn.constructPath('gate3'));
    await barrier.hold();
    // The scenario where Go's Wait misses the release: other writes after Hold.
    for (let i = 0; i < 5; i++) await suite.client.put(conn.constructPath(`noise${i}`)).value('x');
    const waiting = barrier.wait();
    assert.equal(await pendingAfter(waiting, 200), 'pending');
    for (let i = 0; i < 5; i++) await suite.client.put(conn.constructPath(`noise${i}`)).value('y');
    // Released and held again at once: the release still counts.
    await barrier.release();
    await barrier.hold();
    await withTimeout(waiting, testTimeout(3000), 'wait after release + re-hold');
    await barrier.release();
  });

  void test('barrier: wait aborts (AbortError), close ends it (ClosedError); bad input', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('gate4');
    const barrier = conn.newBarrier(path);
    await barrier.hold();
    const ac = new AbortController();
    const aborted = barrier.wait({ signal: ac.signal });
    ac.abort();
    await assert.rejects(aborted, AbortError);
    const closing = barrier.wait();
    await barrier.close();
    await assert.rejects(closing, ClosedError);
    await assert.rejects(barrier.hold(), ClosedError);
    assert.throws(() => conn.newBarrier('relative'), InvalidArgumentError);
    assert.throws(() => conn.newBarrier('/elsewhere/x'), InvalidArgumentError);
    await conn.newBarrier(path).release();
  });

  void test('barrier: interop with Go (Go holds, ours waits; ours holds, Go waits)', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('gogate');
    const go = await peer();
    await go.ok({ cmd: 'barrier.hold', path });
    const barrier = conn.newBarrier(path);
    assert.equal(await barrier.hold(), false, 'Go holds it');
    const waiting = barrier.wait();
    assert.equal(await pendingAfter(waiting, 200), 'pending');
    await go.ok({ cmd: 'barrier.release', path });
    await withTimeout(waiting, testTimeout(3000), 'ours released by Go');

    assert.equal(await barrier.hold(), true);
    assert.equal((await go.send({ cmd: 'barrier.hold', path })).error, 'key already exists');
    const before = await watchers();
    const goWait = go.begin({ cmd: 'barrier.wait', path });
    await waitFor(async () => (await watchers()) > before, {
      timeoutMs: testTimeout(10000),
      message: 'Go waiter watching',
    });
    await barrier.release();
    assert.equal((await goWait.response).ok, true);
  });

  void test('double barrier: layout, count reached, everybody leaves; Go and ours mixed', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar');
    const go = await peer();
    const a = conn.newDoubleBarrier(path, 3);
    const b = suite.connect(conn.namespace).newDoubleBarrier(path, 3);
    const enterA = a.enter();
    const goEnter = go.begin({ cmd: 'doublebarrier.enter', path, count: 3 });
    assert.equal(await pendingAfter(enterA, 300), 'pending');
    await withTimeout(b.enter(), testTimeout(5000), 'the third enters');
    await withTimeout(enterA, testTimeout(5000), 'the first passes');
    const goEntered = await goEnter.response;
    assert.equal(goEntered.ok, true);

    const kvs = await etcdctlDump(suite.etcd.endpoints, `${path}/`);
    const waiters = kvs.filter((kv) => kv.key !== `${path}/ready`);
    assert.equal(waiters.length, 3);
    for (const kv of waiters) {
      assert.match(kv.key, new RegExp(String.raw`^${path}/waiters/\d{19}$`));
      assert.equal(kv.value, '');
      assert.notEqual(kv.lease, '');
    }
    assert.ok(waiters.some((kv) => kv.key === a.key));
    assert.ok(waiters.some((kv) => kv.key === goEntered.key && kv.lease === go.lease));
    const ready = kvs.find((kv) => kv.key === `${path}/ready`);
    assert.deepEqual([ready?.value, ready?.lease], ['', '']);

    const leaves = [a.leave(), go.send({ cmd: 'doublebarrier.leave', path })];
    assert.equal(await pendingAfter(Promise.all(leaves), 300), 'pending', 'b is still inside');
    await withTimeout(b.leave(), testTimeout(5000), 'b leaves');
    await withTimeout(Promise.all(leaves), testTimeout(5000), 'everyone out');
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/`)).length, 0);
  });

  void test('double barrier: one too many fails and leaves no key; a dead participant blocks leave only until its lease ends', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar2');
    const go = await peer(2);
    const goEnter = go.begin({ cmd: 'doublebarrier.enter', path, count: 2 });
    await waitFor(
      async () => (await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`)).length === 1,
      {
        timeoutMs: testTimeout(10000),
        message: 'Go waiting',
      },
    );
    const a = conn.newDoubleBarrier(path, 2);
    await withTimeout(a.enter(), testTimeout(5000), 'count reached');
    assert.equal((await goEnter.response).ok, true);

    const late = suite.connect(conn.namespace).newDoubleBarrier(path, 2);
    await assert.rejects(late.enter(), TooManyParticipantsError);
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`)).length, 2);

    // The Go participant dies inside; ours leaves once its key went with its lease (TTL 2 s).
    await go.kill();
    const started = performance.now();
    await withTimeout(a.leave(), testTimeout(10000), 'leave after the dead one expired');
    const took = performance.now() - started;
    assert.ok(took > 500, `leave waited for the dead participant (${took.toFixed(0)} ms)`);
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/`)).length, 0, 'ready deleted');
  });

  void test('double barrier: a late copy of an earlier ready put lets nobody in alone', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar-late');
    const a = conn.newDoubleBarrier(path, 2);
    const entering = a.enter();
    await waitFor(
      async () => (await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`)).length === 1,
      { timeoutMs: testTimeout(5000), message: 'a waiting' },
    );
    // As seed 9012: an earlier round's `ready` put, its answer lost, applied after a arrived.
    await suite.client.put(`${path}/ready`).value('');
    assert.equal(await pendingAfter(entering, 500), 'pending', 'not in alone');
    // The second participant opens it for both.
    const b = suite.connect(conn.namespace).newDoubleBarrier(path, 2);
    await withTimeout(Promise.all([entering, b.enter()]), testTimeout(5000), 'both in');
    await withTimeout(Promise.all([a.leave(), b.leave()]), testTimeout(5000), 'both out');
    assert.deepEqual(await etcdctlDump(suite.etcd.endpoints, `${path}/`), []);
  });

  void test('double barrier: our ready put, applied again after its putter left, opens nothing', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar-copy');
    const ready = `${path}/ready`;
    const a = conn.newDoubleBarrier(path, 2);
    const aIn = a.enter();
    await waitFor(
      async () => (await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`)).length === 1,
      { timeoutMs: testTimeout(5000), message: 'a waiting' },
    );
    // The first put of ready, kept to be applied again later (as a member that stalled with it
    // would). Either may put it: b after its arrival, or a woken by it, if a reads first.
    const other = suite.connect(conn.namespace);
    const putReady = Promise.race(
      [conn, other].map((c) =>
        interceptNextTxn(
          c.client,
          (req) => keysOf(req, 'put').includes(ready),
          (send) => send(),
        ),
      ),
    );
    const b = other.newDoubleBarrier(path, 2);
    await withTimeout(Promise.all([aIn, b.enter()]), testTimeout(5000), 'both in');
    await withTimeout(Promise.all([a.leave(), b.leave()]), testTimeout(5000), 'both out');
    const copy = await withTimeout(putReady, testTimeout(1000), 'a put of ready');
    const late = await suite.client.kv.txn(copy);
    assert.equal(late.succeeded, false, 'refused: its putter is out');
    assert.deepEqual(await etcdctlDump(suite.etcd.endpoints, `${path}/`), []);
  });

  void test('double barrier: a leaver waits for the participants in when it left, not for a next round', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar-next');
    const [a, b] = [conn.newDoubleBarrier(path, 2), conn.newDoubleBarrier(path, 2)];
    await withTimeout(Promise.all([a.enter(), b.enter()]), testTimeout(5000), 'both in');
    // Go's leave orders by mod revision.
    const mod = async (k: string | undefined): Promise<number> =>
      Number((await suite.client.get(k ?? '').exec()).kvs[0]?.mod_revision);
    const [lowest, other] = (await mod(a.key)) < (await mod(b.key)) ? [a, b] : [b, a];
    const lowestKey = lowest.key ?? '';
    const otherKey = other.key ?? '';
    // The other leaves first: out at once, then it waits for the lowest.
    const leaving = other.leave();
    await waitFor(async () => (await suite.client.get(otherKey).exec()).kvs.length === 0, {
      timeoutMs: testTimeout(5000),
      message: 'the other out',
    });
    assert.equal(await pendingAfter(leaving, 200), 'pending', 'waits for the lowest');
    // A next round's participant arrives (a key of its own lease), then the lowest goes (its
    // key deleted, as its lease would): the leaver is done, the newcomer still in.
    const lease = suite.client.lease(10);
    suite.defer(() => lease.revoke());
    const newcomer = `${path}/waiters/${String(process.hrtime.bigint() + 10n ** 12n)}`;
    await lease.put(newcomer).value('');
    await suite.client.delete().key(lowestKey);
    await withTimeout(leaving, testTimeout(5000), 'left without waiting for the newcomer');
    assert.equal((await suite.client.get(newcomer).exec()).kvs.length, 1);
    await lowest.close();
  });

  for (const oneLeft of [false, true]) {
    void test(`double barrier: one too many is refused when ready was put just after it arrived${oneLeft ? ', and one of the two has left before it looks' : ''}`, async () => {
      // Chaos runs: three arrived within a few ms, the first two put ready, and the third took
      // that ready (newer than its key) for its own — at once, or once one of the two had left
      // and its own rank had come down to 1: three in a barrier of two.
      const conn = suite.connect(uniqueName('bar'));
      const path = conn.constructPath(`dbar3${oneLeft ? 'b' : 'a'}`);
      const ready = `${path}/ready`;
      // Two participants are in (as Go's would be: plain keys under their lease).
      const lease = suite.client.lease(10);
      suite.defer(() => lease.revoke());
      await lease.put(`${path}/waiters/1`).value('');
      await lease.put(`${path}/waiters/2`).value('');
      // Ours arrives third; the two put ready after our key was created, before we look.
      void interceptNextTxn(
        conn.client,
        (req) => (req.success ?? []).some((op) => op.request_range?.key?.toString() === ready),
        async (send) => {
          await suite.client.put(ready).value('');
          if (oneLeft) await suite.client.delete().key(`${path}/waiters/2`);
          return send();
        },
      );
      const late = conn.newDoubleBarrier(path, 2);
      await assert.rejects(
        withTimeout(late.enter(), testTimeout(5000), 'enter'),
        TooManyParticipantsError,
      );
      const left = await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`);
      assert.equal(left.length, oneLeft ? 1 : 2);
    });
  }

  void test('double barrier: aborted enter removes its key; lost key -> SessionLostError; misuse', async () => {
    const conn = suite.connect(uniqueName('bar'));
    const path = conn.constructPath('dbar3');
    const a = conn.newDoubleBarrier(path, 2);
    await assert.rejects(a.leave(), InvalidStateError);
    const ac = new AbortController();
    const entering = a.enter({ signal: ac.signal });
    await waitFor(
      async () => (await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`)).length === 1,
      {
        timeoutMs: testTimeout(5000),
        message: 'waiting',
      },
    );
    ac.abort();
    await assert.rejects(entering, AbortError);
    assert.equal((await etcdctlDump(suite.etcd.endpoints, `${path}/`)).length, 0);

    // A key deleted under a waiter: it says so instead of waiting on a key that no longer counts.
    const waiting = a.enter();
    const [kv] = await waitFor(
      async () => {
        const kvs = await etcdctlDump(suite.etcd.endpoints, `${path}/waiters/`);
        return kvs.length === 1 ? kvs : undefined;
      },
      { timeoutMs: testTimeout(5000), message: 'waiting again' },
    );
    await suite.client.delete().key(kv?.key ?? '');
    await assert.rejects(withTimeout(waiting, testTimeout(5000), 'enter'), SessionLostError);
    assert.throws(() => conn.newDoubleBarrier(path, 0), InvalidArgumentError);
    assert.throws(() => conn.newDoubleBarrier(path, 1.5), InvalidArgumentError);
  });
});
