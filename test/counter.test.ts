// Counter against real etcd: its layout (one key, the integer in decimal), exactness under
// contention (8 processes x 500 add(1) = 4,000, every value returned once), and an add whose
// answer was lost (a delaying proxy) applied exactly once.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ClosedError, InvalidArgumentError, ValueFormatError } from '../src/index.js';
import { startProxy, testTimeout, uniqueName, withTimeout } from '../src/testing/index.js';
import { receiptStats } from '../src/engines/receipts.js';
import { Child } from './fixtures/elector-harness.js';
import { etcdctlDump } from './fixtures/etcdctl-dump.js';
import { loseAnswer } from './fixtures/lose-answer.js';
import { etcdSuite } from './fixtures/etcd-suite.js';

void describe('Counter', () => {
  const suite = etcdSuite();
  const dir = mkdtempSync(join(tmpdir(), 'etcdc-counter-'));
  suite.defer(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  void test('layout: one key = the integer in decimal, no lease; get/add/compareAndSet', async () => {
    const conn = suite.connect(uniqueName('cnt'));
    const path = conn.constructPath('stats', 'hits');
    const c = conn.newCounter(path);
    assert.equal(await c.get(), 0, 'missing reads as 0');
    assert.equal(await c.add(5), 5);
    assert.equal(await c.add(-7), -2);
    assert.deepEqual(
      (await etcdctlDump(suite.etcd.endpoints, path)).map((kv) => [kv.key, kv.value, kv.lease]),
      [[path, '-2', '']],
    );
    assert.equal(await c.compareAndSet(3, 10), false);
    assert.equal(await c.compareAndSet(-2, 10), true);
    assert.equal(await c.get(), 10);
    // Someone else writes: our cached view is stale, the swap still lands right.
    await suite.client.put(path).value('100');
    assert.equal(await c.add(1), 101);
    assert.equal(await c.compareAndSet(100, 0), false, 'decided on a fresh read');
    // A counter that does not exist yet is 0 for compareAndSet too.
    const fresh = conn.newCounter(conn.constructPath('stats', 'fresh'));
    assert.equal(await fresh.compareAndSet(0, 7), true);
    assert.equal(await fresh.get(), 7);
  });

  void test('bad values and input are typed errors', async () => {
    const conn = suite.connect(uniqueName('cnt'));
    const path = conn.constructPath('bad');
    const c = conn.newCounter(path);
    await suite.client.put(path).value('twelve');
    await assert.rejects(c.get(), ValueFormatError);
    await assert.rejects(c.add(1), ValueFormatError);
    await suite.client.put(path).value(String(Number.MAX_SAFE_INTEGER));
    await assert.rejects(c.add(1), ValueFormatError);
    await assert.rejects(c.add(1.5), InvalidArgumentError);
    await assert.rejects(c.add(Number.NaN), InvalidArgumentError);
    await assert.rejects(c.compareAndSet(1, '2' as unknown as number), InvalidArgumentError);
    assert.throws(() => conn.newCounter(conn.root), InvalidArgumentError);
    await c.close();
    await assert.rejects(c.get(), ClosedError);
  });

  void test('8 processes x 500 add(1) end at 4,000, every value returned once', async () => {
    const conn = suite.connect(uniqueName('cnt'));
    const path = conn.constructPath('contended');
    const workers = Array.from(
      { length: 8 },
      (_, i) =>
        new Child(`adder-${i}`, 'toolbox-worker', [
          'count',
          suite.etcd.endpoints.join(','),
          conn.namespace,
          path,
          '500',
        ]),
    );
    for (const w of workers) suite.defer(() => w.kill());
    const done = await Promise.all(
      workers.map((w) =>
        w.waitLine(
          (l) => l.event === 'done' || l.event === 'error',
          'done',
          0,
          testTimeout(120000),
        ),
      ),
    );
    const values: number[] = [];
    for (const { line } of done) {
      assert.equal(line.event, 'done', JSON.stringify(line));
      values.push(...(line as unknown as { values: number[] }).values);
    }
    assert.equal(await conn.newCounter(path).get(), 4000);
    assert.equal(values.length, 4000);
    assert.equal(new Set(values).size, 4000, 'no value returned twice');
    assert.equal(Math.min(...values), 1);
    assert.equal(Math.max(...values), 4000);
    await Promise.all(workers.map((w) => withTimeout(w.exited, testTimeout(10000), 'exit')));
  });

  void test('an add whose answer was lost lands exactly once (resolved by its receipt)', async () => {
    const proxy = await startProxy(suite.endpoint);
    suite.defer(() => proxy.close());
    const conn = suite.connect(uniqueName('cnt'), {
      endpoints: [proxy.endpoint],
      callTimeoutMs: 500,
    });
    const path = conn.constructPath('lossy');
    const c = conn.newCounter(path);
    assert.equal(await c.add(1), 1);
    const before = { ...receiptStats };
    // Hold everything, let the request through alone, then lose its answer.
    proxy.delay(60_000);
    const adding = c.add(1);
    await loseAnswer(proxy);
    assert.equal(await withTimeout(adding, testTimeout(15000), 'add'), 2);
    assert.ok(receiptStats.applied > before.applied, 'found applied through the receipt');
    assert.equal(Number(await suite.client.get(path).string()), 2, 'applied once, not twice');
  });
});
