// conn.stm against real etcd: Go's isolation semantics (what conflicts, what does not), retries
// until commit with the read set prefetched, typed errors, interop with Go's own STM on the same
// accounts, and a commit whose answer was lost applied exactly once.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  AbortError,
  EtcdConnector,
  InvalidArgumentError,
  InvalidStateError,
  TransactionConflictError,
  type Isolation,
  type StmTx,
} from '../src/index.js';
import { startProxy, testTimeout, uniqueName, withTimeout } from '../src/testing/index.js';
import { receiptStats } from '../src/engines/receipts.js';
import { startGoPeer } from './fixtures/go-peer.js';
import { loseAnswer } from './fixtures/lose-answer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('STM (conn.stm)', () => {
  const suite = etcdSuite();

  /** A transfer of `amount` from `a` to `b` (balances as decimal strings, missing = 0). */
  const transfer =
    (a: string, b: string, amount: number) =>
    async (tx: StmTx): Promise<number> => {
      const from = Number((await tx.get(a)) ?? '0');
      const to = Number((await tx.get(b)) ?? '0');
      tx.put(a, String(from - amount));
      tx.put(b, String(to + amount));
      return from - amount;
    };

  void test('commits reads and writes; reads see own writes; delete; result and revision', async () => {
    const conn = suite.connect(uniqueName('stm'));
    const a = conn.constructPath('a');
    const b = conn.constructPath('b');
    await suite.client.put(a).value('100');
    const res = await conn.stm(transfer(a, b, 30));
    assert.deepEqual([res.result, res.attempts], [70, 1]);
    assert.equal(await suite.client.get(a).string(), '70');
    assert.equal(await suite.client.get(b).string(), '30');
    assert.equal((await suite.client.get(b).exec()).kvs[0]?.mod_revision, res.revision);
    const seen = await conn.stm(async (tx) => {
      tx.put(a, 'x');
      const own = await tx.get(a);
      tx.delete(b);
      return [own, await tx.get(b), await tx.rev(conn.constructPath('none'))];
    });
    assert.deepEqual(seen.result, ['x', undefined, '0']);
    assert.equal(await suite.client.get(b).string(), null);
  });

  /**
   * Runs one attempt of `fn` that pauses after its reads while `meddle` writes, and reports how
   * many attempts the transaction took.
   */
  async function withMeddling(
    conn: EtcdConnector,
    isolation: Isolation,
    reads: string[],
    writes: string[],
    meddle: () => Promise<unknown>,
  ): Promise<number> {
    let first = true;
    const res = await conn.stm(
      async (tx) => {
        for (const k of reads) await tx.get(k);
        if (first) {
          first = false;
          await meddle();
        }
        for (const k of writes) tx.put(k, 'w');
      },
      { isolation },
    );
    return res.attempts;
  }

  void test("isolation levels conflict exactly where Go's do", async () => {
    const conn = suite.connect(uniqueName('stm'));
    const r = conn.constructPath('r');
    const w = conn.constructPath('w');
    await suite.client.put(r).value('0');
    await suite.client.put(w).value('0');
    const touch = (k: string) => async () => {
      await suite.client.put(k).value(uniqueName('v'));
    };
    // A read key changed: every level but read-committed retries.
    for (const [iso, attempts] of [
      ['serializable-snapshot', 2],
      ['serializable', 2],
      ['repeatable-reads', 2],
      ['read-committed', 1],
    ] as const) {
      assert.equal(await withMeddling(conn, iso, [r], [w], touch(r)), attempts, `${iso}, read`);
    }
    // A written (not read) key changed after the first read: only serializable-snapshot retries.
    for (const [iso, attempts] of [
      ['serializable-snapshot', 2],
      ['serializable', 1],
      ['repeatable-reads', 1],
      ['read-committed', 1],
    ] as const) {
      assert.equal(await withMeddling(conn, iso, [r], [w], touch(w)), attempts, `${iso}, write`);
    }
  });

  void test('serializable reads all come from the first read revision; retries are prefetched', async () => {
    const conn = suite.connect(uniqueName('stm'));
    const x = conn.constructPath('x');
    const y = conn.constructPath('y');
    await suite.client.put(x).value('1');
    await suite.client.put(y).value('1');
    let first = true;
    const seen: (string | undefined)[][] = [];
    const res = await conn.stm(async (tx) => {
      const vx = await tx.get(x);
      if (first) {
        first = false;
        // Both change after our first read: the snapshot still shows y as it was.
        await suite.client.put(x).value('2');
        await suite.client.put(y).value('2');
      }
      const vy = await tx.get(y);
      seen.push([vx, vy]);
      tx.put(x, 'done');
    });
    assert.equal(res.attempts, 2);
    assert.deepEqual(seen, [
      ['1', '1'],
      ['2', '2'],
    ]);
  });

  void test('retried until it commits: 8 concurrent transfers on one pair keep the total', async () => {
    const conn = suite.connect(uniqueName('stm'));
    const a = conn.constructPath('a');
    const b = conn.constructPath('b');
    await suite.client.put(a).value('1000');
    await suite.client.put(b).value('0');
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        Promise.all(Array.from({ length: 10 }, () => conn.stm(transfer(a, b, 1)))),
      ),
    );
    assert.equal(results.flat().length, 80);
    assert.equal(await suite.client.get(a).string(), '920');
    assert.equal(await suite.client.get(b).string(), '80');
  });

  void test('typed errors: abort after conflicts, maxAttempts, fn throws, stale tx, bad input', async () => {
    const conn = suite.connect(uniqueName('stm'));
    const k = conn.constructPath('k');
    const ac = new AbortController();
    // Always conflicting: a write to the read key during every attempt.
    const always = conn.stm(
      async (tx) => {
        await tx.get(k);
        await suite.client.put(k).value(uniqueName('v'));
        tx.put(k, 'mine');
      },
      { signal: ac.signal },
    );
    setTimeout(() => {
      ac.abort();
    }, 300);
    const err = await withTimeout(
      always.catch((e: unknown) => e),
      testTimeout(5000),
      'stm',
    );
    assert.ok(err instanceof TransactionConflictError, String(err));
    assert.ok(err.attempts >= 1);
    await assert.rejects(
      conn.stm(
        async (tx) => {
          await tx.get(k);
          await suite.client.put(k).value(uniqueName('v'));
          tx.put(k, 'mine');
        },
        { maxAttempts: 3 },
      ),
      (e: unknown) => e instanceof TransactionConflictError && e.attempts === 3,
    );
    const aborted = new AbortController();
    aborted.abort();
    await assert.rejects(
      conn.stm(() => 1, { signal: aborted.signal }),
      AbortError,
    );
    await assert.rejects(
      conn.stm(() => {
        throw new RangeError('mine');
      }),
      RangeError,
    );
    let stale: StmTx | undefined;
    await conn.stm((tx) => {
      stale = tx;
    });
    assert.throws(() => stale?.put(k, 'late'), InvalidStateError);
    await assert.rejects(
      conn.stm((tx) => tx.get('/elsewhere/k')),
      InvalidArgumentError,
    );
    for (const isolation of ['snapshot', 'toString']) {
      await assert.rejects(
        conn.stm(() => 1, { isolation: isolation as Isolation }),
        InvalidArgumentError,
      );
    }
    // Go's constant names work too.
    for (const isolation of ['SerializableSnapshot', 'ReadCommitted'] as const) {
      assert.equal((await conn.stm(() => 'ok', { isolation })).result, 'ok');
    }
  });

  void test("interop: Go's STM and ours transfer on the same accounts; totals match", async () => {
    const conn = suite.connect(uniqueName('stm'));
    const go = await startGoPeer({ endpoints: suite.etcd.endpoints, ttl: 10 });
    suite.defer(() => go.close());
    const a = conn.constructPath('acct', 'alice');
    const b = conn.constructPath('acct', 'bob');
    await suite.client.put(a).value('500');
    await suite.client.put(b).value('500');
    let moved = 0;
    await Promise.all([
      (async () => {
        for (let i = 0; i < 20; i++) {
          const res = await go.ok({ cmd: 'stm.transfer', from: a, to: b, amount: 3 });
          assert.equal(res.ok, true);
          moved += 3;
        }
      })(),
      (async () => {
        for (let i = 0; i < 20; i++) {
          await conn.stm(transfer(b, a, 2));
          moved -= 2;
        }
      })(),
    ]);
    assert.equal(Number(await suite.client.get(a).string()), 500 - moved);
    assert.equal(Number(await suite.client.get(b).string()), 500 + moved);
  });

  void test('a commit whose answer was lost is applied exactly once', async () => {
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close());
    const conn = suite.connect(uniqueName('stm'), {
      endpoints: [proxy.endpoint],
      callTimeoutMs: 500,
    });
    const a = conn.constructPath('a');
    const b = conn.constructPath('b');
    await suite.client.put(a).value('100');
    await conn.stm(transfer(a, b, 1)); // session and receipt in place
    const before = { ...receiptStats };
    let runs = 0;
    const pending = conn.stm(async (tx) => {
      runs += 1;
      const from = Number((await tx.get(a)) ?? '0');
      const to = Number((await tx.get(b)) ?? '0');
      if (runs === 1) proxy.delay(60_000); // hold the commit...
      tx.put(a, String(from - 10));
      tx.put(b, String(to + 10));
    });
    await loseAnswer(proxy); // ...deliver it alone, and lose its answer
    const res = await withTimeout(pending, testTimeout(15000), 'stm');
    assert.ok(receiptStats.applied > before.applied, 'found applied through the receipt');
    assert.equal(res.attempts, 1);
    assert.equal(await suite.client.get(a).string(), '89');
    assert.equal(await suite.client.get(b).string(), '11');
  });
});
